"""Tuned PostgreSQL session defaults that `serve` sets on the tracking database."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from mlflow_stack.stores.database import TRACKING_DATABASE_DEFAULTS, apply_database_defaults
from tests.conftest import LiveStack


def show(stack: LiveStack, dbname: str, name: str) -> str:
    conn = stack.pg(dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return cursor.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def scratch_database(stack: LiveStack) -> Iterator[str]:
    name = f"tuning_{uuid.uuid4().hex[:8]}"
    conn = stack.pg("postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}"')
    finally:
        conn.close()


def test_server_sessions_on_the_tracking_database_get_the_tuned_work_mem(
    stack: LiveStack,
) -> None:
    assert TRACKING_DATABASE_DEFAULTS == {"work_mem": "32MB"}
    assert show(stack, stack.settings.postgres_db, "work_mem") == "32MB"
    # Only the tracking database: the server-wide default is PostgreSQL's own.
    assert show(stack, stack.settings.auth_db, "work_mem") == "4MB"


def test_defaults_are_set_once_and_never_override_the_operator(
    stack: LiveStack, scratch_database: str
) -> None:
    settings = dataclasses.replace(stack.settings, postgres_db=scratch_database)
    conn = stack.pg("postgres")
    try:
        assert apply_database_defaults(conn, settings) == {"work_mem": "32MB"}
        assert show(stack, scratch_database, "work_mem") == "32MB"
        assert apply_database_defaults(conn, settings) == {}  # a restart changes nothing

        with conn.cursor() as cursor:  # the operator decides otherwise
            cursor.execute(f"ALTER DATABASE \"{scratch_database}\" SET work_mem = '8MB'")
        assert apply_database_defaults(conn, settings) == {}
        assert show(stack, scratch_database, "work_mem") == "8MB"
    finally:
        conn.close()
