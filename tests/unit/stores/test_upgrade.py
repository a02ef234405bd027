"""The names and hints of the copies taken before a schema upgrade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mlflow_stack.stores.upgrade import MAX_NAME_BYTES, copy_name, rollback_hint, schemas
from tests.conftest import make_settings

AT = datetime(2026, 12, 1, 6, 47, 8, tzinfo=UTC)


def test_copy_name_says_what_and_when_in_utc() -> None:
    assert copy_name("mlflow", "b7e2c1a4d9f3", AT) == "mlflow_before_b7e2c1a4d9f3_20261201064708"
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    assert copy_name("mlflow", "b7e2c1a4d9f3", paris).endswith("_20261201064708")


def test_copy_name_fits_postgresql_identifiers() -> None:
    long = "team_" + "x" * 80
    name = copy_name(long, "b7e2c1a4d9f3", AT)
    assert len(name.encode()) == MAX_NAME_BYTES
    assert name.endswith("_before_b7e2c1a4d9f3_20261201064708") and name.startswith("team_x")
    wide = "é" * 40  # two bytes each: never cut inside a character
    assert len(copy_name(wide, "unversioned", AT).encode()) <= MAX_NAME_BYTES
    copy_name(wide, "unversioned", AT).encode().decode()


def test_rollback_hint_quotes_only_names_that_need_it() -> None:
    assert rollback_hint("mlflow", "mlflow_before_abc_1") == (
        "ALTER DATABASE mlflow RENAME TO mlflow_failed; "
        "ALTER DATABASE mlflow_before_abc_1 RENAME TO mlflow"
    )
    hint = rollback_hint("Team-DB", "Team-DB_before_abc_1")
    assert hint.startswith('ALTER DATABASE "Team-DB" RENAME TO "Team-DB_failed"')


def test_schemas_name_the_installed_heads_and_databases() -> None:
    tracking, auth = schemas(make_settings(POSTGRES_DB="runs", MLFLOW_STACK_AUTH_DB="users"))
    assert (tracking.database, tracking.version_table) == ("runs", "alembic_version")
    assert (auth.database, auth.version_table) == ("users", "alembic_version_auth")
    assert tracking.head in tracking.revisions and auth.head in auth.revisions
    assert "b7e2c1a4d9f3" in tracking.revisions  # MLflow 3.16's head, upgraded from


def test_copy_name_keeps_twelve_characters_of_the_revision() -> None:
    name = copy_name("mlflow", "0123456789abcdefXYZ", AT)
    assert name == "mlflow_before_0123456789ab_20261201064708"


def test_rollback_hint_quotes_digits_first_non_ascii_and_embedded_quotes() -> None:
    assert rollback_hint("1db", "c").startswith('ALTER DATABASE "1db" RENAME TO "1db_failed"; ')
    assert rollback_hint("données", "c").startswith('ALTER DATABASE "données" RENAME TO ')
    hint = rollback_hint('my"db', "c")
    assert hint.startswith('ALTER DATABASE "my""db" RENAME TO "my""db_failed"; ')
    assert hint.endswith('ALTER DATABASE c RENAME TO "my""db"')
