"""``/health`` answers 200 only while the backend store does; ``/health/live`` only says that
this worker answers.

MLflow's own ``/health`` is a constant "OK": it stayed green while PostgreSQL was down, so
load balancers, compose and ``mlflow-stack status`` kept sending users to a server that could
only fail. Use ``/health`` for readiness (is it worth sending requests here?) and
``/health/live`` for liveness (should this process be restarted?): a database outage is not
cured by restarting the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, respond
from mlflow_stack.settings.contract import Settings

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"
LIVE_PATH = "/health/live"
#: A healthy verdict is reused this long, so that a burst of health checks costs one probe. An
#: unhealthy one is not: every worker sees a recovery at its next check, none lags behind.
REUSE_SECONDS = 1.0
PROBE_TIMEOUT = 3.0


def backend_store_probe(settings: Settings) -> Callable[[], None]:
    """Open a connection to the tracking database and run ``SELECT 1``; raise on failure.

    A fresh connection each time (while healthy, at most one per REUSE_SECONDS per worker):
    it proves the server, the credentials and the database, and cannot hang on a stale socket.
    """

    def probe() -> None:
        from mlflow_stack.stores.database import connect

        conn = connect(settings, settings.postgres_db, timeout=int(PROBE_TIMEOUT))
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            conn.close()

    return probe


class HealthCheck:
    """ASGI middleware answering HEALTH_PATH and LIVE_PATH itself.

    The probe runs in a thread of its own, never queued behind the uploads that share asyncio's
    default executor, and at most one at a time: while a probe hangs (a stopped database), the
    next checks wait on it instead of starting more. Its verdict is the thread's own: a probe
    that answered in time is healthy even if a busy event loop noticed it late.
    """

    def __init__(
        self,
        app: ASGIApp,
        probe: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.probe, self.clock = app, probe, clock
        self._lock = asyncio.Lock()
        self._checked_at = -REUSE_SECONDS
        self._problem: str | None = None
        self._running: Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == LIVE_PATH:
            await respond(send, 200, b"OK")
        elif path == HEALTH_PATH:
            problem = await self.problem()
            if problem is None:
                await respond(send, 200, b"OK")
            else:
                await respond(send, 503, f"unhealthy: {problem}".encode())
        else:
            await self.app(scope, receive, send)

    async def problem(self) -> str | None:
        """None when the backend store answers, else why not."""
        async with self._lock:  # one probe at a time; the others reuse its verdict
            if self._problem is None and self.clock() - self._checked_at < REUSE_SECONDS:
                return None
            problem = await self._probe()
            if problem != self._problem:
                log.warning("health: %s", problem or "the backend store answers again")
            self._problem, self._checked_at = problem, self.clock()
            return problem

    async def _probe(self) -> str | None:
        if self._running is None or self._running.done():
            self._running = self._start()
        running = self._running
        finished = asyncio.Event()
        loop = asyncio.get_running_loop()
        running.add_done_callback(lambda _: _call_soon(loop, finished.set))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), PROBE_TIMEOUT)
        if not running.done():
            return f"the backend store did not answer within {PROBE_TIMEOUT:g} s"
        error = running.exception()
        if error is None:
            return None
        if isinstance(error, TimeoutError):
            return f"the backend store did not answer within {PROBE_TIMEOUT:g} s"
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else type(error).__name__
        return f"the backend store is unreachable: {detail}"

    def _start(self) -> Future[None]:
        """Run the probe in a daemon thread (a hung one must not hold up the worker's exit)."""
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            began = time.monotonic()
            try:
                self.probe()
            except BaseException as error:  # noqa: BLE001 - any failure is the verdict
                future.set_exception(error)
            else:
                future.set_result(None)
            took = time.monotonic() - began
            if took > PROBE_TIMEOUT:  # for whoever reads the log after a 503
                log.warning("health: the backend store answered after %.1f s", took)

        threading.Thread(target=run, name="health-probe", daemon=True).start()
        return future


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the probe ran (exiting)
        loop.call_soon_threadsafe(callback)
