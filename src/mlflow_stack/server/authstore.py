"""MLflow's auth store, with the two reads it makes on every request kept for a few seconds.

MLflow's basic-auth app asks its store, per request, for the user (``get_user``: whether the
sender is an admin, and the user's id; two to four times in one request) and for the user's
grants (``list_grants``: what an authorization decision folds). Each ask is a session on a
pooled connection with a pre-ping and a query. Here both answers are kept:

- **in this worker**, until any write through this store (a grant or revocation, a user
  created, changed or deleted, a role changed): the first statement that is not a ``SELECT``
  drops every kept answer, and so does the commit or rollback of its transaction, so the next
  request reads the new state;
- **in the other workers and processes**, for at most :data:`KEPT_FOR` seconds, the bound on
  how long they may act on a permission that was revoked elsewhere.

Everything else is MLflow's: the class is MLflow's store with these two reads cached, and
MLflow's auth app keeps using it as its module-level ``store`` (:func:`install` puts an
instance there before the app initialises it). Passwords stay MLflow's to check, in MLflow's
own credential cache (``MLFLOW_STACK_AUTH_CACHE_TTL``).

An outage of the auth database is noted for the request (:func:`unavailable`): MLflow's login
check reads the user after checking the password and takes any error of that read for a user
deleted meanwhile, answering 401 to good credentials while PostgreSQL is down; MLflow's
client does not retry a 401, so a training script would stop. :mod:`~mlflow_stack.server.login`
answers MLflow's 503 instead.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from mlflow_stack.caching import BoundedCache

log = logging.getLogger(__name__)

#: Seconds another worker may keep acting on a user's or grant's previous state.
KEPT_FOR = 2.0
_WROTE = "mlflow_stack_wrote"
_UNAVAILABLE = "mlflow_stack_auth_store_unavailable"


def unavailable() -> MlflowException | None:
    """The auth database's failure met in this request, if any (a Flask request only)."""
    from flask import g, has_app_context

    return g.get(_UNAVAILABLE) if has_app_context() else None


def _note(error: MlflowException) -> None:
    from flask import g, has_app_context

    if error.error_code == "TEMPORARILY_UNAVAILABLE" and has_app_context():
        setattr(g, _UNAVAILABLE, error)


def is_read(statement: str) -> bool:
    return statement.lstrip()[:6].upper() == "SELECT"


class StackAuthStore(SqlAlchemyStore):
    def __init__(self, kept_for: float = KEPT_FOR) -> None:
        super().__init__()
        self.users: BoundedCache[str, Any] = BoundedCache(kept_for)
        self.grants: BoundedCache[tuple[int, str, frozenset[str]], tuple[Any, ...]] = BoundedCache(
            kept_for
        )

    def init_db(self, db_uri: str, read_db_uri: str | None = None) -> None:
        super().init_db(db_uri, read_db_uri=read_db_uri)
        self._watch_writes(self.engine)

    def get_user(self, username: str) -> Any:
        try:
            return self.users.get(username, lambda: super(StackAuthStore, self).get_user(username))
        except MlflowException as error:
            _note(error)
            raise

    def list_grants(self, user_id: int, workspace: str, resource_types: Collection[str]) -> list:
        key = (user_id, workspace, frozenset(resource_types))
        rows = self.grants.get(
            key,
            lambda: tuple(
                super(StackAuthStore, self).list_grants(user_id, workspace, resource_types)
            ),
        )
        return list(rows)

    def forget(self) -> None:
        """Drop every kept answer: something was written."""
        self.users.forget_all()
        self.grants.forget_all()

    def _watch_writes(self, engine: Any) -> None:
        from sqlalchemy import event

        def before_cursor_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if not is_read(statement):
                conn.info[_WROTE] = True
                self.forget()

        def end_of_transaction(conn: Any) -> None:
            if conn.info.pop(_WROTE, False):
                self.forget()  # what was read while it was open may be the old state

        event.listen(engine, "before_cursor_execute", before_cursor_execute)
        event.listen(engine, "commit", end_of_transaction)
        event.listen(engine, "rollback", end_of_transaction)


def install() -> StackAuthStore:
    """Make the stack's store the one MLflow's auth app uses, before the app initialises it
    (``create_app`` runs ``store.init_db`` on whatever ``mlflow.server.auth.store`` is)."""
    from mlflow.server import auth

    if not isinstance(auth.store, StackAuthStore):
        auth.store = StackAuthStore()
    return auth.store
