"""The MLflow server of the native runtime: ``mlflow-stack serve``, as in the image."""

from __future__ import annotations

import base64
import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from mlflow_stack.native.service import CHECK_TIMEOUT, Layout, Service
from mlflow_stack.settings.contract import Settings
from mlflow_stack.waiting import NotReady


def http_answer(
    url: str, *, auth: tuple[str, str] | None = None, timeout: float = 3
) -> tuple[int, str]:
    """The status and the first line of the body (at most 200 characters)."""
    request = urllib.request.Request(url)  # noqa: S310 - http URLs we build ourselves
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, body = response.status, response.read(4096)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(4096)
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return status, lines[0][:200] if lines else ""


def http_status(url: str, *, auth: tuple[str, str] | None = None, timeout: float = 3) -> int:
    return http_answer(url, auth=auth, timeout=timeout)[0]


QUIET_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"


class MlflowService(Service):
    name = "mlflow"
    start_timeout = 180.0  # the first start creates both schemas
    stop_timeout = 30.0

    def __init__(self, settings: Settings, layout: Layout, environ: Mapping[str, str]) -> None:
        super().__init__(settings, layout)
        self.environ = dict(environ)

    def ports(self) -> dict[int, str]:
        return {self.settings.port: "MLFLOW_STACK_PORT"}

    def describe(self) -> str:
        return "MLflow server (mlflow-stack serve)"

    def endpoint(self) -> str:
        return self.settings.tracking_uri

    def environment(self) -> dict[str, str]:
        env = dict(self.environ)
        # Starlette deprecates the WSGI bridge that MLflow's FastAPI app imports; the warning
        # (a UserWarning subclass, so always shown) is MLflow's to act on, not the operator's,
        # and each worker printed it into the log again.
        inherited = env.get("PYTHONWARNINGS")
        env["PYTHONWARNINGS"] = ",".join(filter(None, [inherited, QUIET_WARNINGS]))
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow_stack", "serve"]

    def check(self, timeout: float = CHECK_TIMEOUT) -> None:
        base = self.settings.tracking_uri
        try:
            health, said = http_answer(f"{base}/health", timeout=timeout)
            if health != 200:  # with the server's reason, e.g. "unhealthy: the backend ..."
                raise NotReady(f"/health answered HTTP {health}" + (f": {said}" if said else ""))
            # /health skips the Host check and auth: prove a logged-in API call works too.
            api = http_status(
                f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
                auth=(self.settings.admin_username, self.settings.admin_password),
                timeout=timeout,
            )
        except (OSError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ConnectionRefusedError):
                # The normal state for the first ~10 s: serve migrates, then MLflow imports.
                raise NotReady(f"still starting, port {self.settings.port} not open yet") from None
            raise NotReady(str(reason)) from None
        except http.client.HTTPException as error:  # BadStatusLine: not an HTTP server
            said = str(error).strip().splitlines()[:1]  # BadStatusLine holds what came back
            what = f"it said {said[0][:60]!r}" if said else type(error).__name__
            raise NotReady(f"port {self.settings.port} does not answer HTTP ({what})") from None
        if api != 200:
            raise NotReady(f"an authenticated API call answered HTTP {api}")
