"""``POST /api/2.0/mlflow-stack/gc``: garbage collection, for admins, in the server.

The server already holds the database and bucket credentials, so the caller needs only an admin
login. It sits inside :class:`~mlflow_stack.server.credentials.CredentialGuard` (which limits failed
logins) and checks the password with MLflow's basic-auth store itself, as MLflow's own
admin-only routes do: no credentials or a wrong password get 401, a user who is not an admin
403, bad input 400, a gc already running 409, all in MLflow's error JSON.

Request: ``{"older_than_days": N, "dry_run": false, "page_token": "...", "max_items": 500}``
(all but the first optional). The answer is one
batch's summary (:class:`~mlflow_stack.gc.collector.Summary`); while it has a
``next_page_token``, ask again with it to go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from mlflow_stack.gc import ENDPOINT
from mlflow_stack.gc.collector import BATCH_ITEMS, Collector, GCBusyError
from mlflow_stack.server.asgi import (
    ASGIApp,
    BodyTooLargeError,
    ClientGoneError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    respond,
    respond_error,
)
from mlflow_stack.server.credentials import CHALLENGE, UNAUTHENTICATED, parse_basic
from mlflow_stack.settings.contract import Settings

#: Under MLflow's logger, whose INFO handler each server worker sets up (the workers are fresh
#: processes that the CLI's logging configuration does not reach).
log = logging.getLogger("mlflow.mlflow_stack.gc")

MAX_BODY = 64 * 1024
MAX_DAYS = 36_500

#: (username, password) -> the user (with ``is_admin``), or None when the login is wrong.
Authenticate = Callable[[str, str], Any]


class Request:
    """The validated JSON body."""

    def __init__(
        self,
        older_than_days: float,
        dry_run: bool = False,
        page_token: str | None = None,
        max_items: int = BATCH_ITEMS,
    ) -> None:
        self.older_than_days, self.dry_run = older_than_days, dry_run
        self.page_token, self.max_items = page_token, max_items

    @classmethod
    def parse(cls, body: bytes) -> Request:
        """Raises ValueError naming the problem."""
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            raise ValueError("the request body is not JSON") from None
        if not isinstance(document, dict):
            raise ValueError("the request body must be a JSON object")
        unknown = sorted(set(document) - {"older_than_days", "dry_run", "page_token", "max_items"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        days = document.get("older_than_days")
        if isinstance(days, bool) or not isinstance(days, int | float):
            raise ValueError("older_than_days is required: a number of days (0 or more)")
        if not 0 <= days <= MAX_DAYS:
            raise ValueError(f"older_than_days must be between 0 and {MAX_DAYS}")
        dry_run = document.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ValueError("dry_run must be true or false")
        token = document.get("page_token")
        if token is not None and not isinstance(token, str):
            raise ValueError("page_token must be a string")
        items = document.get("max_items", BATCH_ITEMS)
        if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= BATCH_ITEMS:
            raise ValueError(f"max_items must be a whole number between 1 and {BATCH_ITEMS}")
        return cls(float(days), dry_run, token or None, items)


def mlflow_authenticate(username: str, password: str) -> Any:
    """MLflow basic-auth's own check, with its credential cache (and its refusal of the legacy
    default admin password)."""
    from mlflow.server.auth import _authenticate_cached

    return _authenticate_cached(username, password)


def server_collector(settings: Settings) -> Collector:
    """A collector over the server's own tracking store and artifact bucket."""
    from mlflow.server.handlers import _get_tracking_store

    from mlflow_stack.gc.locations import Destination
    from mlflow_stack.stores.storage import s3_client

    return Collector(
        _get_tracking_store(),
        s3_client(settings, timeout=30),
        Destination.parse(settings.artifacts_destination),
    )


class GarbageCollectionEndpoint:
    """ASGI middleware answering :data:`~mlflow_stack.gc.ENDPOINT`; the rest passes through."""

    def __init__(
        self,
        app: ASGIApp,
        collector: Callable[[], Collector],
        authenticate: Authenticate = mlflow_authenticate,
    ) -> None:
        self.app = app
        self._make_collector = collector
        self._collector: Collector | None = None
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ENDPOINT:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await respond_error(
                send, 405, "BAD_REQUEST", f"{ENDPOINT} takes POST", [(b"allow", b"POST")]
            )
            return
        username = await self._admin(scope, send)
        if username is None:
            return
        try:
            request = Request.parse(await read_body(receive, MAX_BODY))
        except BodyTooLargeError:
            await respond_error(
                send, 413, "INVALID_PARAMETER_VALUE", "the request body is too large"
            )
            return
        except ClientGoneError:
            return
        except ValueError as error:
            await respond_error(send, 400, "INVALID_PARAMETER_VALUE", str(error))
            return
        await self._run(request, username, send)

    async def _admin(self, scope: Scope, send: Send) -> str | None:
        """The admin's name; else None, with the refusal sent."""
        credentials = parse_basic(header(scope, b"authorization") or b"")
        user = (
            None
            if credentials is None
            else await asyncio.to_thread(self.authenticate, *credentials)
        )
        if credentials is None or user is None:
            await respond(send, 401, UNAUTHENTICATED, headers=[CHALLENGE])
            return None
        if not user.is_admin:
            message = f"only an admin may run gc ({credentials[0]!r} is not)"
            await respond_error(send, 403, "PERMISSION_DENIED", message)
            return None
        return credentials[0]

    async def _run(self, request: Request, username: str, send: Send) -> None:
        try:
            summary = await asyncio.to_thread(self._collect, request)
        except ValueError as error:  # a page token that is not ours
            await respond_error(send, 400, "INVALID_PARAMETER_VALUE", str(error))
            return
        except GCBusyError as error:
            await respond_error(send, 409, "RESOURCE_CONFLICT", str(error))
            return
        log.info(
            "%s (by %s)%s",
            summary.describe(),
            username,
            "; more in the next batch" if summary.next_page_token else "",
        )
        body = json.dumps(summary.as_dict()).encode()
        await respond(send, 200, body, b"application/json")

    def _collect(self, request: Request) -> Any:
        if self._collector is None:
            self._collector = self._make_collector()
        return self._collector.collect(
            request.older_than_days,
            dry_run=request.dry_run,
            page_token=request.page_token,
            max_items=request.max_items,
        )
