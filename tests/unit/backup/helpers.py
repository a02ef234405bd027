"""A small complete backup on disk, as `mlflow-stack backup` writes one; stand-ins for pg_dump
and pg_restore (real processes) and for PostgreSQL's answers on a connection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg2 import sql

from mlflow_stack.backup.manifest import Database, Manifest, StoredObject

#: Installed on this machine and in CI (Debian's postgresql-15).
PG15 = Path("/usr/lib/postgresql/15/bin")

OBJECTS = {"1/r/artifacts/x.txt": b"hello", "2/r/artifacts/y.bin": b"\0" * 10}
DUMPS = {"tracking": b"PGDMP1", "auth": b"PGDMP2"}


def write_backup(root: Path, *, mlflow_version: str = "3.17.2", postgres: int = 15) -> Manifest:
    """Two objects, two dumps and their manifest below ``root`` (which must exist)."""
    items = []
    for key, data in OBJECTS.items():
        path = root / "objects" / key
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        items.append(StoredObject(key, len(data), hashlib.sha256(data).hexdigest()))
    manifest = Manifest(
        "2026-12-01T00:00:00+00:00", mlflow_version, postgres, postgres, "mlflow", objects=items
    )
    for role, content in DUMPS.items():
        (root / f"{role}.dump").write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        manifest.databases[role] = Database(role, f"{role}.dump", "abc", len(content), digest)
    manifest.write(root)
    return manifest


def fake_pg_tool(directory: Path, name: str, major: int, *, fail_on: str = "") -> Path:
    """A stand-in for pg_dump or pg_restore: it reports PostgreSQL ``major``, appends each
    call (its arguments, then PGPASSWORD) to ``calls.log`` beside it, writes a small dump to
    --file, and fails as pg_dump does when --dbname is ``fail_on``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / name
    script.write_text(
        f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo '{name} (PostgreSQL) {major}.3'; exit 0; fi
echo "$*" >> '{directory}/calls.log'
echo "PGPASSWORD=$PGPASSWORD" >> '{directory}/calls.log'
out=""; db=""
while [ $# -gt 0 ]; do
  case "$1" in --file) out="$2"; shift;; --dbname) db="$2"; shift;; esac
  shift
done
if [ "$db" = '{fail_on}' ]; then
  echo >&2; echo "{name}: error: connection to server failed: boom" >&2; echo "more" >&2; exit 1
fi
if [ -n "$out" ]; then printf 'PGDMP %s' "$db" > "$out"; fi
"""
    )
    script.chmod(0o755)
    return script


def render(statement: Any) -> str:
    """A psycopg2 ``sql`` composition as text (quoting needs no server)."""
    if isinstance(statement, sql.Composed):
        return "".join(render(part) for part in statement.seq)
    if isinstance(statement, sql.Identifier):
        return ".".join(f'"{s}"' for s in statement.strings)
    if isinstance(statement, sql.SQL):
        return statement.string
    return str(statement)


class Connection:
    """Plays PostgreSQL: ``tables`` exist (to_regclass), and each other query is answered with
    the rows of the first piece of ``answers`` that its text contains."""

    def __init__(
        self, answers: dict[str, list[tuple[Any, ...]]] | None = None, tables: tuple[str, ...] = ()
    ) -> None:
        self.answers = answers or {}
        self.tables = set(tables)
        self.executed: list[tuple[str, Any]] = []
        self.closed = False
        self.server_version = 150004
        self._rows: list[tuple[Any, ...]] = []

    @contextmanager
    def cursor(self) -> Iterator[Connection]:
        yield self

    def execute(self, statement: Any, parameters: Any = None) -> None:
        text = render(statement)
        self.executed.append((text, parameters))
        if text == "SELECT to_regclass(%s)":
            self._rows = [(parameters[0] if parameters[0] in self.tables else None,)]
        else:
            found = (rows for piece, rows in self.answers.items() if piece in text)
            self._rows = next(found, [])

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def close(self) -> None:
        self.closed = True
