"""The login check MLflow's basic-auth app runs for each request (its ``authorization_function``
setting): MLflow's own check, taken in turns by the requests that carry the same credentials.

MLflow remembers a good password for ``auth_cache_ttl_seconds`` after checking it with scrypt
(~0.1 s of CPU), and forgets it all at once when that time is up. Every request that arrives
before the first check has filled its cache checks the password again: 64 clients starting
together, or a busy team's requests in the moment the entry expires, each cost a scrypt, in
each worker. Here those requests wait for the first one's check (a lock per credential, shared
by the worker's threads) and then find the password in MLflow's cache. MLflow stays the only
judge: its store, its cache and its TTL, and its cache cleared when a password changes.

The locks are striped by a keyed hash of the credentials: a fixed number, never a growing map,
and no password kept; two credentials that share a stripe take turns for a cache look-up, or
for one scrypt when neither is cached.

Within one request the answer is asked for several times; it is checked once.

When MLflow's check answers 401 because the auth database failed while it read the user
(:func:`mlflow_stack.server.authstore.unavailable`), the request gets MLflow's 503
TEMPORARILY_UNAVAILABLE instead, which clients retry; a 401 would also make the stack's
credential guard refuse the good credentials for seconds after the database is back. For the
same reason the user who passed is read once more here (kept by the auth store): MLflow's
FastAPI routes read it after the check and answer 401 to a failed read.

With single sign-on (MLFLOW_STACK_AUTH_MODE=oidc, :mod:`mlflow_stack.sso`) the request's user
may also come from a bearer token (an access token of the provider: MLflow's client sends
MLFLOW_TRACKING_TOKEN so) or from the session cookie of a signed-in browser; either way the
answer is MLflow's ``Authorization`` naming that user, and MLflow authorizes as for any user.
A browser that is not signed in is sent to the provider; any other request gets MLflow's 401
with a Bearer challenge (a Basic one would make browsers ask for a password). Basic
credentials still go through MLflow's check: the admin account's password is the way in when
the provider is down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Any

from mlflow_stack import sso
from mlflow_stack.server import authstore

STRIPES = 64
_STRIPES = tuple(threading.Lock() for _ in range(STRIPES))
_SECRET = secrets.token_bytes(32)
_ANSWER = "mlflow_stack_login"


def stripe(username: str, password: str) -> int:
    digest = hmac.digest(_SECRET, f"{username}\0{password}".encode(), hashlib.sha256)
    return digest[0] % STRIPES


def authenticate_request() -> Any:
    """``mlflow.server.auth:authenticate_request_basic_auth``, one caller per credential at a
    time; what it returns (the request's authorization, or MLflow's 401) is returned as is.

    MLflow asks two to four times in one request (its check, whether the sender is an admin,
    each validator); the first answer is kept in the request's ``g`` for the others."""
    from flask import g

    answer = g.get(_ANSWER)
    if answer is None:
        answer = _check()
        setattr(g, _ANSWER, answer)
    return answer


def _check() -> Any:
    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth

    credentials = request.authorization
    signon = sso.current()
    if signon is not None and (credentials is None or credentials.type != "basic"):
        return _signed_on(signon, credentials)
    if credentials is None or credentials.type != "basic" or credentials.username is None:
        return authenticate_request_basic_auth()  # MLflow answers 401 without a check
    from werkzeug.datastructures import Authorization

    with _STRIPES[stripe(credentials.username, credentials.password or "")]:
        answer = authenticate_request_basic_auth()
    failure = authstore.unavailable()
    if failure is not None and not isinstance(answer, Authorization):
        raise failure  # answered as MLflow answers it, by the app's error handler
    if isinstance(answer, Authorization):
        _read_user(credentials.username)
    return answer


def _read_user(username: str) -> None:
    """Read the user who passed the check, through the auth store, which keeps it for the
    request's other questions. MLflow's bridge for its FastAPI routes (artifact uploads, among
    others) reads the user again after this check and takes any failure of that read for an
    unknown user: a 401 to good credentials during an outage of the auth database (with a
    password in MLflow's cache, nothing else reads the database before), which the credential
    guard would then hold against those credentials for seconds after the database is back.
    Read here, the outage is MLflow's 503, and the bridge's read finds the user kept."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import store

    try:
        store.get_user(username)
    except MlflowException as error:
        if error.error_code == "TEMPORARILY_UNAVAILABLE":
            raise  # answered as MLflow answers it (Flask's error handler, FastAPI's bridge)
        # anything else (a user deleted meanwhile) is left to MLflow's own reads, as before


UNAUTHENTICATED = (
    "You are not authenticated{reason}. Please see "
    "https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow "
    "on how to authenticate."
)


def _signed_on(signon: sso.SignOn, credentials: Any) -> Any:
    """The user of a bearer token or of the session cookie, as MLflow's ``Authorization``; a
    redirect to sign-in for a browser's page, MLflow's 401 or 403 otherwise."""
    from flask import request
    from werkzeug.datastructures import Authorization

    from mlflow_stack.sso.identity import NotAllowedError
    from mlflow_stack.sso.provider import ProviderUnavailableError
    from mlflow_stack.sso.tokens import TokenRefusedError

    try:
        if credentials is not None:
            if credentials.type != "bearer" or not credentials.token:
                return _unauthenticated("the Authorization header is neither Bearer nor Basic")
            identity = signon.from_access_token(credentials.token)
        else:
            identity = signon.from_cookie(request.headers.get("Cookie"))
            if identity is None:
                return _sign_in_first()
    except TokenRefusedError as refused:
        return _unauthenticated(str(refused))
    except NotAllowedError as refused:
        return _forbidden(str(refused))
    except ProviderUnavailableError as error:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

        raise MlflowException(
            f"The identity provider's keys cannot be fetched to check the token: {error}",
            TEMPORARILY_UNAVAILABLE,
        ) from None
    return Authorization("bearer", {"username": identity.username})


def _is_page_request() -> bool:
    """A browser asking for a page (not the UI's API calls, not a script)."""
    from flask import request

    if request.method != "GET" or request.path.startswith(("/api/", "/ajax-api/", "/gateway/")):
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    return mode == "navigate" if mode else "text/html" in request.headers.get("Accept", "")


def _sign_in_first() -> Any:
    from urllib.parse import urlencode

    from flask import Response, request

    from mlflow_stack.sso.config import LOGIN_PATH

    if _is_page_request():
        target = request.full_path if request.query_string else request.path
        response = Response(status=302)
        response.headers["Location"] = f"{LOGIN_PATH}?{urlencode({'next': target})}"
        response.headers["Cache-Control"] = "no-store"
        return response
    return _unauthenticated("")


def _unauthenticated(reason: str) -> Any:
    from flask import Response

    challenge = 'Bearer realm="mlflow"'
    if reason:
        challenge += f', error="invalid_token", error_description="{reason}"'
    return Response(
        UNAUTHENTICATED.format(reason=f": {reason}" if reason else ""),
        401,
        {"WWW-Authenticate": challenge},
    )


def _forbidden(reason: str) -> Any:
    from flask import Response

    return Response(f"Permission denied: {reason}", 403)
