"""The stack's indexes as declared: on MLflow's tables and columns, under a prefix MLflow's
migrations never use, none on values MLflow lets grow past a B-tree entry. Building them on a
real PostgreSQL, under an MLflow upgrade, is in tests/integration/test_indexes.py."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow.store.db_migrations
from mlflow.store.db.base_sql_model import Base
from mlflow.store.tracking.dbmodels import models  # noqa: F401 - registers the tables

from mlflow_stack.stores.indexes import INDEXES, PREFIX

TARGET = re.compile(r"^(\w+) \(([\w ,]+)\)$")


def _targets() -> dict[str, tuple[str, list[str]]]:
    found = {}
    for name, target in INDEXES.items():
        match = TARGET.match(target)
        assert match, target
        columns = [part.split()[0] for part in match.group(2).split(",")]
        found[name] = (match.group(1), columns)
    return found


def test_every_index_is_on_columns_of_mlflows_tables() -> None:
    for name, (table, columns) in _targets().items():
        assert table in Base.metadata.tables, name
        assert set(columns) <= set(Base.metadata.tables[table].columns.keys()), name


def test_no_index_holds_a_text_value_mlflow_lets_grow_long() -> None:
    """A B-tree entry holds about 2,700 bytes; an index on a param or tag value (up to 8,000
    characters) would refuse a value MLflow accepts."""
    for name, (table, columns) in _targets().items():
        for column in columns:
            kind = Base.metadata.tables[table].columns[column].type
            length = getattr(kind, "length", None)
            assert length is None or length <= 500, (name, column, length)
            assert kind.python_type in (int, float, bool, str), (name, column)
            if kind.python_type is str:
                assert length is not None, (name, column)


def test_the_prefix_is_one_mlflows_migrations_never_use() -> None:
    assert all(name.startswith(PREFIX) for name in INDEXES)
    versions = Path(mlflow.store.db_migrations.__file__).parent / "versions"
    scripts = list(versions.glob("*.py"))
    assert len(scripts) > 50  # the directory really holds MLflow's migrations
    for script in scripts:
        assert PREFIX not in script.read_text(), script.name
