"""Run the app under gunicorn's arbiter: MLflow imported once, in the master, and the workers
forked from it.

``mlflow server`` starts ``uvicorn --workers N``, whose workers are *spawned*: each imports
MLflow again from scratch (about 3 s of CPU each here) and holds its own copy of every module
(about 215 MB each). Here the process that ran ``serve``'s preparation becomes the master,
imports the app's modules once (:func:`preload`) and forks the workers, which share those pages
and only build the app (:func:`mlflow_stack.server.app.create_app`). A worker that dies is forked
again by the arbiter in well under a second.

The workers are uvicorn's own gunicorn worker (``uvicorn-worker``), told to use what the stack
relies on: uvloop (it sets ``TCP_NODELAY`` on every connection; asyncio does not on a listener
it did not bind, uvicorn #3149), httptools, MLflow's log format, and proxy headers only from
the configured proxies.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from mlflow_stack.server.asgi import ASGIApp
from mlflow_stack.settings.contract import Settings

log = logging.getLogger(__name__)

# Seconds an idle kept-alive connection stays open: longer than the AWS load balancer's idle
# timeout (300 s, terraform/modules/server), so that the balancer, not the server, closes an
# idle connection; otherwise a request sent as the server closes it is lost (a 502 from the
# balancer; a "connection broken" retry warning in MLflow's client after a pause of about
# uvicorn's default 5 s). An idle connection costs a socket and a few kB.
KEEP_ALIVE = 310
GRACEFUL_TIMEOUT = 25  # seconds in-flight requests get on SIGTERM, inside compose's and the
#                        native runtime's 30 s before they kill

# What create_app and the first requests import: loaded here, before the fork, they are
# shared by every worker instead of imported again by each.
PRELOADED = (
    "mlflow.server",
    "mlflow.server.auth",
    "mlflow.server.fastapi_app",
    "mlflow.server.handlers",
    "mlflow.store.artifact.s3_artifact_repo",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow_stack.server.app",
    "mlflow_stack.stores.builder",
    "mlflow_stack.stores.tracking",
)


def bind_address(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.port}"


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The arbiter's settings (gunicorn's names); nothing is read from GUNICORN_CMD_ARGS."""
    return {
        "bind": [bind_address(settings)],
        "workers": settings.workers,
        "worker_class": StackWorker,
        "preload_app": True,
        "keepalive": KEEP_ALIVE,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        # uvicorn's ProxyHeadersMiddleware reads this list; empty turns proxy headers off
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
        "proc_name": "mlflow-stack",
        "errorlog": "-",
        "accesslog": None,  # uvicorn's access log, in MLflow's format (StackWorker)
        "loglevel": "info",
        # gunicorn 26 would otherwise open a control socket in $HOME/.gunicorn, one per host
        "control_socket_disable": True,
    }


def preload() -> None:
    """Import what the workers run, then close what the imports left open and freeze the
    heap: a forked worker must not share a database connection with its siblings, and a
    frozen object is never touched by the collector, so its page stays shared."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    release_connections()
    gc.collect()
    gc.freeze()


def release_connections() -> None:
    """The auth store's engine, opened in this process by the admin's bootstrap: disposed,
    so that no worker inherits its pooled connections (each worker opens its own)."""
    from mlflow.server.auth import store

    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()


class StackWorker(UvicornWorker):
    """uvicorn's gunicorn worker, building the app after the fork."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # MLflow's log config gives uvicorn's loggers their own handlers; the master's root
        # handler (``serve``'s) would print each line a second time.
        logging.getLogger("uvicorn").propagate = False

    @property
    def CONFIG_KWARGS(self) -> dict[str, Any]:  # noqa: N802 - the name UvicornWorker reads
        from mlflow.server import _UVICORN_LOG_CONFIG

        return {
            "loop": "uvloop",
            "http": "httptools",
            "proxy_headers": bool(self.cfg.forwarded_allow_ips),
            "log_config": str(_UVICORN_LOG_CONFIG),
        }

    def load_wsgi(self) -> None:
        from mlflow_stack.server.app import create_app

        self.wsgi = create_app()


class StackServer(BaseApplication):
    """gunicorn's arbiter with the stack's settings, in the process that calls :meth:`run`."""

    def __init__(self, settings: Settings, load: Callable[[], None] = preload) -> None:
        self.settings = settings
        self.preload = load
        super().__init__(prog="mlflow-stack serve")

    def load_config(self) -> None:
        for name, value in gunicorn_options(self.settings).items():
            self.cfg.set(name, value)

    def load(self) -> ASGIApp:
        self.preload()
        return _built_in_each_worker

    def init(self, parser: object, opts: object, args: object) -> None:  # pragma: no cover
        raise NotImplementedError  # only gunicorn's command line calls it


async def _built_in_each_worker(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise RuntimeError("StackWorker builds the app in each worker; this one never runs")
