"""The command line's side of ``mlflow-stack gc``: ask the server to collect, batch after batch.

It needs the tracking URI and an admin login, as any MLflow client (MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), and no storage keys: the server deletes.
On the server's own host it falls back to the server there and the admin account in .env.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_stack.errors import StackError
from mlflow_stack.gc import ENDPOINT
from mlflow_stack.gc.collector import Summary

log = logging.getLogger(__name__)

_INTERVAL = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> int:
    """Seconds in an interval such as 90s, 30m, 24h or 7d; ValueError otherwise."""
    match = _INTERVAL.match(text.strip())
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not an interval such as 30m, 24h or 7d")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


@dataclass(frozen=True)
class Server:
    """Where to send the request, and as whom."""

    uri: str
    username: str | None
    password: str | None
    verify: bool | str = True
    timeout: float = 120.0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], uri: str | None = None) -> Server:
        """MLflow's client variables; else the local server and the admin of the settings."""
        from mlflow_stack.settings.contract import SETTINGS

        uri = uri or environ.get("MLFLOW_TRACKING_URI") or ""
        if not uri:
            values = {}
            for setting in SETTINGS:
                if setting.name in ("MLFLOW_STACK_HOST", "MLFLOW_STACK_PORT"):
                    raw = environ.get(setting.name) or setting.default or ""
                    try:
                        values[setting.name] = setting.parse(raw)
                    except ValueError as error:
                        raise StackError(f"{setting.name}={raw!r} {error}") from None
            host = values["MLFLOW_STACK_HOST"]
            host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
            host = f"[{host}]" if ":" in host else host
            uri = f"http://{host}:{values['MLFLOW_STACK_PORT']}"
        if not uri.startswith(("http://", "https://")):
            raise StackError(f"tracking URI {uri!r} is not an http:// or https:// server URL")
        username = environ.get("MLFLOW_TRACKING_USERNAME") or environ.get(
            "MLFLOW_AUTH_ADMIN_USERNAME"
        )
        password = environ.get("MLFLOW_TRACKING_PASSWORD") or environ.get(
            "MLFLOW_AUTH_ADMIN_PASSWORD"
        )
        verify: bool | str = True
        if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            verify = False
        elif environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        return cls(uri.rstrip("/"), username or None, password or None, verify)


def collect(
    server: Server,
    older_than_days: float,
    *,
    dry_run: bool = False,
    on_batch: Callable[[Summary], None] | None = None,
) -> Summary:
    """Every batch until the server has no more; the summaries summed."""
    total: Summary | None = None  # its own object: each batch stays as on_batch saw it
    token: str | None = None
    while True:
        document: dict[str, Any] = {"older_than_days": older_than_days, "dry_run": dry_run}
        if token:
            document["page_token"] = token
        batch = Summary(**_post(server, document))
        if on_batch:
            on_batch(batch)
        if total is None:
            total = Summary(batch.dry_run, batch.older_than_days, batch.cutoff_ms)
        _add(total, batch)
        token = batch.next_page_token
        if not token:
            return total


def _add(total: Summary, batch: Summary) -> None:
    total.runs += batch.runs
    total.experiments += batch.experiments
    total.objects += batch.objects
    total.bytes += batch.bytes
    total.failed += batch.failed
    total.skipped += batch.skipped


def _post(server: Server, document: dict[str, Any]) -> dict[str, Any]:
    import requests

    url = server.uri + ENDPOINT
    auth = (server.username, server.password) if server.username and server.password else None
    try:
        answer = requests.post(
            url, json=document, auth=auth, timeout=server.timeout, verify=server.verify
        )
    except requests.exceptions.SSLError as error:
        raise StackError(f"TLS to {server.uri} failed: {error}") from None
    except requests.exceptions.Timeout:
        raise StackError(f"{server.uri} did not answer within {server.timeout:g} s") from None
    except requests.exceptions.ConnectionError as error:
        raise StackError(
            f"cannot reach the MLflow server at {server.uri}: {_reason(error)}"
        ) from None
    if answer.status_code == 200:
        try:
            return dict(answer.json())
        except ValueError:
            raise StackError(f"{url} answered 200 with something that is not JSON") from None
    raise StackError(_refusal(server, answer.status_code, _message(answer)))


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _reason(error: Exception) -> str:
    """The socket's reason (``Connection refused``), not urllib3's paragraph around it."""
    found = _ERRNO.search(str(error))
    return found[1].strip() if found else type(error).__name__


def _message(answer: Any) -> str:
    try:
        return str(answer.json().get("message", ""))
    except (ValueError, AttributeError):
        return answer.text.strip().splitlines()[0][:200] if answer.text.strip() else ""


def _refusal(server: Server, status: int, message: str) -> str:
    if status == 401:
        if not server.username or not server.password:
            return (
                f"{server.uri} requires a login: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (an admin's)"
            )
        return (
            f"{server.uri} refused the login of {server.username!r}: wrong password? "
            "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
        )
    if status == 403:
        return f"{server.uri} refused gc: {message or 'permission denied'}"
    if status == 404:
        return f"{server.uri} has no gc endpoint: is it an mlflow-stack server?"
    return f"{server.uri} answered HTTP {status}: {message or 'no message'}"


def run_forever(
    once: Callable[[], None],
    every_seconds: int,
    health_file: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call ``once`` now and then every ``every_seconds``; a failure is logged and the loop goes
    on. ``health_file`` exists exactly while the last call succeeded."""
    while True:
        try:
            once()
        except StackError as error:
            log.error("error: %s (next try in %d s)", error, every_seconds)
            if health_file:
                health_file.unlink(missing_ok=True)
        else:
            if health_file:
                health_file.touch()
        sleep(every_seconds)
