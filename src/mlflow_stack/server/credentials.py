"""Login hygiene in front of MLflow's basic-auth, which stays the only judge of a password.

MLflow verifies a password with scrypt (~0.1 s of CPU). Its cache remembers good passwords
only, so every request with a wrong password pays that price again: a few bad logins a second
(a job with a stale password, or someone guessing) slowed everyone else's requests from 36 ms to
a second here. And a non-basic ``Authorization`` header (``Bearer ...``) crashed its cache key
into an HTML 500.

This middleware, per worker:

* answers any ``Authorization`` header that is not well-formed HTTP basic with 401 (with single
  sign-on, ``Bearer`` tokens go on to the login check, which verifies them: a signature check,
  no scrypt);
* remembers credentials MLflow rejected (for FAILED_LOGIN_TTL seconds) and answers them again
  with 401 at once, without a second scrypt;
* counts each client's failed logins in a leaky bucket; past BURST failures it answers
  credentials it has not seen succeed with 429 and ``Retry-After`` (the client retries 429)
  until the bucket drains (LEAK_PER_SECOND), so guessing costs the server about one scrypt
  every two seconds per worker;
* never delays credentials that recently succeeded (within the auth cache TTL), so a team
  member behind the same address as a flood keeps working;
* lets one request at a time through with credentials it has not seen answered yet, the
  others with the same credentials waiting (up to SINGLE_FLIGHT_WAIT seconds) for its answer:
  MLflow's cache remembers a password only once its first check is done, so 64 clients
  starting together (or returning when the cache expires) made it run scrypt 64 times per
  worker, a third of the server's CPU for the first seconds of a busy minute (py-spy).

It learns only from MLflow's own answers on protected routes: 401 means rejected, 2xx means
accepted; nothing else (a 403 can come from a CORS check before authentication) counts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Hashable

from mlflow_stack.server.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header,
    respond,
    respond_error,
)

log = logging.getLogger(__name__)

FAILED_LOGIN_TTL = 10.0
SINGLE_FLIGHT_WAIT = 2.0  # past it, a request goes on: the first one is past its login by then
BURST = 10
LEAK_PER_SECOND = 0.5
MAX_ENTRIES = 100_000

UNAUTHENTICATED = (
    b"You are not authenticated. Please see "
    b"https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
    b"on how to authenticate."
)
NOT_BASIC = (
    b"The Authorization header is not HTTP basic authentication, the only kind this server "
    b"accepts: send 'Authorization: Basic <base64 of username:password>' (MLflow clients do "
    b"when MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are set)."
)
CHALLENGE = (b"www-authenticate", b'Basic realm="mlflow"')


def parse_basic(value: bytes) -> tuple[str, str] | None:
    """(username, password) of a well-formed basic ``Authorization`` header, else None."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return None
    return username, password


class ExpiringSet:
    """Keys remembered for a while; the oldest are forgotten first when it is full."""

    def __init__(self, ttl: float, clock: Callable[[], float], limit: int = MAX_ENTRIES) -> None:
        self.ttl, self.clock, self.limit = ttl, clock, limit
        self._expiry: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        if self.ttl <= 0:
            return
        self._expiry.pop(key, None)
        if len(self._expiry) >= self.limit:
            del self._expiry[next(iter(self._expiry))]
        self._expiry[key] = self.clock() + self.ttl

    def discard(self, key: Hashable) -> None:
        self._expiry.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self.clock():
            del self._expiry[key]
            return False
        return True


class LeakyBuckets:
    """Failures per client, draining at ``rate`` per second; full at ``capacity``."""

    def __init__(
        self, capacity: float, rate: float, clock: Callable[[], float], limit: int = MAX_ENTRIES
    ) -> None:
        self.capacity, self.rate, self.clock, self.limit = capacity, rate, clock, limit
        self._levels: dict[Hashable, tuple[float, float]] = {}

    def _level(self, key: Hashable) -> float:
        level, when = self._levels.get(key, (0.0, 0.0))
        return max(0.0, level - (self.clock() - when) * self.rate)

    def add(self, key: Hashable) -> None:
        level = self._level(key) + 1
        self._levels.pop(key, None)
        if len(self._levels) >= self.limit:
            del self._levels[next(iter(self._levels))]
        self._levels[key] = (level, self.clock())

    def retry_after(self, key: Hashable) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        over = self._level(key) - (self.capacity - 1)
        return over / self.rate if over > 0 else 0.0


class CredentialGuard:
    """ASGI middleware around MLflow's basic-auth app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        protected: Callable[[str], bool],
        remember_success: float,
        bearer_tokens: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.protected = protected
        self.bearer_tokens = bearer_tokens
        self.succeeded = ExpiringSet(remember_success, clock)
        self.failed = ExpiringSet(FAILED_LOGIN_TTL, clock)
        self.failures = LeakyBuckets(BURST, LEAK_PER_SECOND, clock)
        self._checking: dict[Hashable, asyncio.Event] = {}  # first requests with a key
        self._secret = secrets.token_bytes(32)  # keys hold no password, not even a plain hash

    def _key(self, username: str, password: str) -> tuple[str, bytes]:
        return username, hmac.digest(self._secret, password.encode(), hashlib.sha256)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        raw = None
        if scope["path"].startswith("/gateway/"):  # as MLflow: the provider key may ride here
            raw = header(scope, b"x-mlflow-authorization") or None
        raw = raw or header(scope, b"authorization")
        if raw is None:
            await self.app(scope, receive, send)  # MLflow asks for credentials
            return
        if self.bearer_tokens and raw[:7].lower() == b"bearer ":
            await self.app(scope, receive, send)  # the login check verifies the token
            return
        credentials = parse_basic(raw)
        if credentials is None:
            await respond(send, 401, NOT_BASIC, headers=[CHALLENGE])
            return
        key = self._key(*credentials)
        client = (scope.get("client") or ("unknown", 0))[0]
        first = key not in self.succeeded and key not in self.failed
        if first and key in self._checking:  # another request's login is being checked
            await self._wait_for(self._checking[key])
            first = key not in self.succeeded and key not in self.failed
        if key not in self.succeeded:
            if key in self.failed:
                await respond(send, 401, UNAUTHENTICATED, headers=[CHALLENGE])
                return
            wait = self.failures.retry_after(client)
            if wait > 0:
                seconds = math.ceil(wait)
                await respond_error(
                    send,
                    429,
                    "REQUEST_LIMIT_EXCEEDED",
                    f"too many failed logins from {client}: try again in {seconds} s",
                    headers=[(b"retry-after", str(seconds).encode())],
                )
                return
        checking = None
        if first and key not in self._checking:  # this one's answer is awaited by the others
            checking = self._checking[key] = asyncio.Event()
        try:
            await self._forward(scope, receive, send, lambda status: self._learn(
                status, key, client, credentials[0], checking
            ))  # fmt: skip
        finally:
            if checking is not None and self._checking.get(key) is checking:
                del self._checking[key]
                checking.set()  # also when the request failed before answering

    def _learn(
        self,
        status: int,
        key: Hashable,
        client: str,
        username: str,
        answered: asyncio.Event | None,
    ) -> None:
        """What MLflow's answer says about the credentials, learnt as the answer starts (so
        the requests waiting for it go on before a long body is sent)."""
        if status == 401:
            self.succeeded.discard(key)
            self.failed.add(key)
            self.failures.add(client)
            if self.failures.retry_after(client) > 0:  # logged once per crossing, not per try
                log.warning(
                    "%s failed to log in %d times (last as %r): answering 429 to credentials "
                    "not seen to succeed until its failures drain",
                    client,
                    BURST,
                    username,
                )
        elif 200 <= status < 300:
            self.succeeded.add(key)
        if answered is not None and self._checking.get(key) is answered:
            del self._checking[key]
            answered.set()

    @staticmethod
    async def _wait_for(answered: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):  # a long request: its login was checked by now
            await asyncio.wait_for(answered.wait(), SINGLE_FLIGHT_WAIT)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, learn: Callable[[int], None]
    ) -> None:
        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                learn(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
