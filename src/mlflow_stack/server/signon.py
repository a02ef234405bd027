"""``/auth/login``, ``/auth/callback`` and ``/auth/logout``: the browser's sign-in with the
provider (OpenID Connect authorization code flow with PKCE), as an ASGI layer in front of
MLflow, which never sees these paths.

- ``GET /auth/login?next=/path``: a new state, nonce and PKCE verifier (S256), kept in the
  signed sign-in cookie, and a redirect to the provider's authorization endpoint (Authlib
  builds it).
- ``GET /auth/callback``: the state checked against the cookie's, the code exchanged at the
  token endpoint with the client secret and the verifier (Authlib), the ID token checked
  (:mod:`.tokens`, with the nonce), the person's groups made their MLflow roles, the session
  cookie set, and a redirect to the page they asked for.
- ``GET`` or ``POST /auth/logout``: the session cookie cleared, then the provider's
  end-session endpoint (RP-initiated logout), which sends the browser back to the server.

When the provider cannot be reached, or refuses, or the person may not use the server, the
browser gets a page saying so (:mod:`.pages`), never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any
from urllib.parse import parse_qs, urlencode

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, header, respond
from mlflow_stack.sso import pages, tokens
from mlflow_stack.sso.config import CALLBACK_PATH, LOGIN_PATH, LOGOUT_PATH
from mlflow_stack.sso.identity import Identity, NotAllowedError, identity_of
from mlflow_stack.sso.provider import TIMEOUT, ProviderUnavailableError
from mlflow_stack.sso.runtime import SignOn
from mlflow_stack.sso.session import SignIn

log = logging.getLogger(__name__)

PATHS = (LOGIN_PATH, CALLBACK_PATH, LOGOUT_PATH)
HTML = b"text/html; charset=utf-8"
NO_STORE = (b"cache-control", b"no-store")


def safe_next(value: str | None) -> str:
    """A page of this server to return to: a path, never another site (``//host``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class SignInFailedError(Exception):
    def __init__(self, status: int, title: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.detail = status, title, message, detail


class SignOnEndpoints:
    def __init__(self, app: ASGIApp, signon: SignOn) -> None:
        self.app = app
        self.signon = signon
        self.config = signon.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookies = (header(scope, b"cookie") or b"").decode("latin-1")
        try:
            if scope["path"] == LOGIN_PATH:
                await self._login(send, query)
            elif scope["path"] == CALLBACK_PATH:
                await self._callback(send, query, cookies)
            else:
                await self._logout(send)
        except SignInFailedError as failure:
            await respond(
                send,
                failure.status,
                pages.page(failure.title, failure.message, failure.detail),
                HTML,
                headers=[NO_STORE, (b"set-cookie", self.signon.cookies.end_signin().encode())],
            )

    def _client(self) -> OAuth2Session:
        session = OAuth2Session(
            self.config.client_id,
            self.config.client_secret,
            scope=" ".join(self.config.scopes),
            redirect_uri=self.config.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method's name
        )
        session.default_timeout = TIMEOUT
        return session

    async def _login(self, send: Send, query: dict[str, list[str]]) -> None:
        metadata = await asyncio.to_thread(self._metadata, True)
        flow = SignIn(
            state=generate_token(32),
            nonce=generate_token(32),
            verifier=generate_token(64),
            next=safe_next((query.get("next") or [""])[0]),
        )
        url, _ = self._client().create_authorization_url(
            metadata.authorization_endpoint,
            state=flow.state,
            code_verifier=flow.verifier,
            nonce=flow.nonce,
        )
        await _redirect(send, url, self.signon.cookies.signin(flow))

    async def _callback(self, send: Send, query: dict[str, list[str]], cookies: str) -> None:
        flow = self.signon.cookies.flow(cookies)
        if flow is None:
            raise SignInFailedError(
                400,
                "This sign-in has expired",
                "The sign-in took longer than ten minutes, or was started in another browser "
                "or tab. Start it again.",
            )
        state = (query.get("state") or [""])[0]
        if not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise SignInFailedError(
                400,
                "This sign-in does not match",
                "The answer from the sign-in service is not for the sign-in this browser "
                "started. Start it again.",
            )
        if "error" in query:
            raise SignInFailedError(
                403,
                "The sign-in service refused the sign-in",
                "Sign-in did not complete at the identity provider.",
                f"{query['error'][0]}: {(query.get('error_description') or [''])[0]}",
            )
        code = (query.get("code") or [""])[0]
        if not code:
            raise SignInFailedError(400, "No sign-in code", "The answer carried no code.")
        identity = await asyncio.to_thread(self._complete, code, flow)
        log.info("%s signed in (groups: %s)", identity.username, ", ".join(sorted(identity.groups)))
        await _redirect(
            send,
            flow.next,
            self.signon.cookies.session(identity),
            self.signon.cookies.end_signin(),
        )

    def _complete(self, code: str, flow: SignIn) -> Identity:
        metadata = self._metadata()
        try:
            answer = self._client().fetch_token(
                metadata.token_endpoint, code=code, code_verifier=flow.verifier
            )
        except requests.RequestException as error:
            raise _unreachable(self.config.issuer, f"{type(error).__name__}") from None
        except AuthlibBaseError as error:
            raise SignInFailedError(
                502,
                "The sign-in service refused the code",
                "The identity provider did not accept this server's request for the sign-in's "
                "tokens. Check the client id and secret (MLFLOW_STACK_OIDC_CLIENT_ID, "
                "MLFLOW_STACK_OIDC_CLIENT_SECRET).",
                f"{error.error}: {error.description or ''}",
            ) from None
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailedError(
                502, "No ID token", "The identity provider answered without an ID token."
            )
        try:
            claims = tokens.verify(
                id_token, self.signon.provider, audience=self.config.client_id, nonce=flow.nonce
            )
            identity = identity_of(claims, self.config)
        except tokens.TokenRefusedError as error:
            raise SignInFailedError(502, "The ID token is not valid", str(error)) from None
        except ProviderUnavailableError as error:
            raise _unreachable(self.config.issuer, str(error)) from None
        except NotAllowedError as error:
            raise SignInFailedError(
                403,
                "You may not use this MLflow server",
                str(error)[:1].upper() + str(error)[1:] + ".",
                "Ask the server's administrators to add you to one of its groups.",
            ) from None
        try:
            self.signon.members.ensure(identity)
        except Exception as error:  # noqa: BLE001 - the database, as a page
            log.warning("could not record the sign-in of %s: %s", identity.username, error)
            raise SignInFailedError(
                503,
                "MLflow cannot record the sign-in now",
                "The server's database did not answer. Try again in a moment.",
            ) from None
        return identity

    def _metadata(self, fresh: bool = False) -> Any:
        provider = self.signon.provider
        try:
            return provider.fresh_metadata() if fresh else provider.metadata()
        except ProviderUnavailableError as error:
            raise _unreachable(self.config.issuer, str(error)) from None

    async def _logout(self, send: Send) -> None:
        ended = self.signon.cookies.end_session()
        try:
            metadata = await asyncio.to_thread(self.signon.provider.metadata)
        except ProviderUnavailableError:
            metadata = None
        if metadata is None or not metadata.end_session_endpoint:
            body = pages.page(
                "Signed out",
                "You are signed out of MLflow. Your session at the identity provider may still "
                "be open: sign out there too on a shared computer.",
                again_text="Sign in",
            )
            await respond(
                send, 200, body, HTML, headers=[NO_STORE, (b"set-cookie", ended.encode())]
            )
            return
        query = urlencode(
            {
                "client_id": self.config.client_id,
                "post_logout_redirect_uri": self.config.public_url + "/",
            }
        )
        separator = "&" if "?" in metadata.end_session_endpoint else "?"
        await _redirect(send, f"{metadata.end_session_endpoint}{separator}{query}", ended)


def _unreachable(issuer: str, detail: str) -> SignInFailedError:
    return SignInFailedError(
        502,
        "The sign-in service cannot be reached",
        f"MLflow could not reach the identity provider at {issuer}, so you cannot sign in "
        "right now. Try again in a few minutes; if it persists, tell the server's "
        "administrators. Scripts with an access token keep working until their tokens expire.",
        detail,
    )


async def _redirect(send: Send, location: str, *cookies: str) -> None:
    headers = [(b"location", location.encode()), NO_STORE]
    headers += [(b"set-cookie", cookie.encode()) for cookie in cookies]
    await respond(send, 302, b"", HTML, headers=headers)
