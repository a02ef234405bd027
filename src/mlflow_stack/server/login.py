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
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Any

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
