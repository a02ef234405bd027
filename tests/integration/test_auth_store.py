"""The stack's auth store on the real PostgreSQL: two instances on one auth database stand for
two workers. A change through one is seen by it at once and by the other within the bound;
a kept answer costs no statement."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import event

from mlflow_stack.server.authstore import StackAuthStore
from tests.conftest import LiveStack

BOUND = 1.0  # the tests' own bound, shorter than the server's


@dataclass
class Workers:
    this: StackAuthStore
    other: StackAuthStore
    statements: list[str]  # what ``this`` sent to PostgreSQL


@pytest.fixture(scope="module")
def workers(stack: LiveStack) -> Iterator[Workers]:
    name = f"auth_cache_{uuid.uuid4().hex[:8]}"
    s = stack.settings
    uri = (
        f"postgresql+psycopg2://{quote(s.postgres_user, safe='')}:"
        f"{quote(s.postgres_password, safe='')}@{s.postgres_host}:{s.postgres_port}/{name}"
    )
    admin = stack.pg("postgres")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    this, other = StackAuthStore(kept_for=BOUND), StackAuthStore(kept_for=BOUND)
    this.init_db(uri)
    other.init_db(uri)
    statements: list[str] = []
    event.listen(
        this.engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql)
    )
    try:
        yield Workers(this, other, statements)
    finally:
        for store in (this, other):
            store.engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def until(check: Any, limit: float) -> float:
    """Seconds until ``check()`` is true; fails after ``limit``."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < limit, "not seen within the bound"
        time.sleep(0.05)
    return time.monotonic() - began


def test_a_kept_user_costs_no_statement(workers: Workers) -> None:
    name = f"ada-{uuid.uuid4().hex[:6]}"
    workers.other.create_user(name, "ada-password-123")
    first = workers.this.get_user(name)
    workers.statements.clear()
    for _ in range(20):
        assert workers.this.get_user(name).id == first.id
    assert workers.statements == []


def test_a_change_made_here_is_seen_here_at_once(workers: Workers) -> None:
    name = f"bo-{uuid.uuid4().hex[:6]}"
    workers.this.create_user(name, "bo-password-1234")
    assert workers.this.get_user(name).is_admin is False
    workers.this.update_user(name, is_admin=True)
    assert workers.this.get_user(name).is_admin is True
    user_id = workers.this.get_user(name).id
    experiment = uuid.uuid4().hex[:6]
    assert workers.this.list_grants(user_id, "default", {"experiment"}) == []
    workers.this.grant_user_permission(name, "experiment", experiment, "EDIT")
    granted = workers.this.list_grants(user_id, "default", {"experiment"})
    assert [(g.resource_pattern, g.permission) for g in granted] == [(experiment, "EDIT")]
    workers.this.revoke_user_resource_permission(name, "experiment", experiment)
    assert workers.this.list_grants(user_id, "default", {"experiment"}) == []
    workers.this.delete_user(name)
    with pytest.raises(Exception, match="not found"):
        workers.this.get_user(name)


def test_a_change_made_elsewhere_is_seen_within_the_bound(workers: Workers) -> None:
    name = f"cy-{uuid.uuid4().hex[:6]}"
    workers.other.create_user(name, "cy-password-1234")
    experiment = uuid.uuid4().hex[:6]
    workers.other.grant_user_permission(name, "experiment", experiment, "MANAGE")
    user_id = workers.this.get_user(name).id
    assert len(workers.this.list_grants(user_id, "default", {"experiment"})) == 1  # now kept

    workers.other.revoke_user_resource_permission(name, "experiment", experiment)
    workers.other.update_user(name, is_admin=True)
    assert len(workers.this.list_grants(user_id, "default", {"experiment"})) == 1  # kept still
    waited = until(lambda: workers.this.list_grants(user_id, "default", {"experiment"}) == [],
                   BOUND + 0.5)  # fmt: skip
    assert waited <= BOUND + 0.5
    until(lambda: workers.this.get_user(name).is_admin, BOUND + 0.5)
