"""pg_dump and pg_restore: finding one that suits the server (the real PostgreSQL 15 binaries
of this machine and stand-in scripts of other versions), the arguments and environment they
get, and their failures as one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlflow_stack.backup import pgtools
from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from tests.conftest import make_settings
from tests.unit.backup.helpers import PG15, fake_pg_tool


def _fake_tool(directory: Path, name: str, major: int) -> None:
    fake_pg_tool(directory, name, major)


# --- versions ---


def test_the_version_is_the_major_that_the_tool_reports(tmp_path: Path) -> None:
    assert pgtools.tool_version(PG15 / "pg_dump") == 15
    assert pgtools.tool_version(PG15 / "pg_restore") == 15
    _fake_tool(tmp_path, "pg_dump", 9)
    assert pgtools.tool_version(tmp_path / "pg_dump") == 9


def test_a_tool_that_does_not_run_or_says_no_version_has_none(tmp_path: Path) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.1'\n")
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'pg_dump, some other program 15.1'\n")
    silent.chmod(0o755)
    for path in (tmp_path / "missing", tmp_path / "not-executable", silent, tmp_path):
        assert pgtools.tool_version(path) is None, path


def test_a_tool_that_hangs_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = tmp_path / "pg_dump"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    run = subprocess.run
    monkeypatch.setattr(pgtools.subprocess, "run", lambda *a, **k: run(*a, **{**k, "timeout": 0.2}))
    with pytest.raises(StackError) as refused:
        pgtools.tool_version(hung)
    assert str(refused.value) == f"{hung} --version did not finish within 0.2 s"


# --- where to look ---


def test_path_comes_first_then_the_system_binaries_each_once(tmp_path: Path) -> None:
    _fake_tool(tmp_path / "first", "pg_dump", 16)
    (tmp_path / "empty").mkdir()
    path = os.pathsep.join([str(tmp_path / "empty"), str(tmp_path / "first"), str(PG15)])
    found = pgtools.candidates("pg_dump", path)
    assert found[0] == tmp_path / "first" / "pg_dump"
    assert found.count(PG15 / "pg_dump") == 1
    assert tmp_path / "empty" / "pg_dump" not in found


# --- choosing ---


def test_pg_dump_older_than_the_server_is_skipped_and_the_same_major_preferred(
    tmp_path: Path,
) -> None:
    _fake_tool(tmp_path / "old", "pg_dump", 11)
    old = pgtools.choose("pg_dump", at_least=11, prefer=11, path=str(tmp_path / "old"))
    assert old == pgtools.Tool(tmp_path / "old" / "pg_dump", 11)
    chosen = pgtools.choose("pg_dump", at_least=15, prefer=15, path=str(tmp_path / "old"))
    assert chosen.major == 15  # the system's PostgreSQL 15 beside the server binaries
    assert chosen.path.name == "pg_dump"


def test_without_the_preferred_major_the_oldest_new_enough_is_chosen(tmp_path: Path) -> None:
    # PATH's first pg_restore (17, with 14 behind it, which is never looked at) and PG15's
    _fake_tool(tmp_path / "17", "pg_restore", 17)
    _fake_tool(tmp_path / "14", "pg_restore", 14)
    path = os.pathsep.join(str(tmp_path / m) for m in ("17", "14"))
    assert pgtools.candidates("pg_restore", path)[:2] == [
        tmp_path / "17" / "pg_restore",
        PG15 / "pg_restore",
    ]
    newer = pgtools.choose("pg_restore", at_least=16, prefer=20, path=path)
    assert newer == pgtools.Tool(tmp_path / "17" / "pg_restore", 17)
    oldest = pgtools.choose("pg_restore", at_least=14, prefer=20, path=path)
    assert oldest == pgtools.Tool(PG15 / "pg_restore", 15)
    preferred = pgtools.choose("pg_restore", at_least=14, prefer=17, path=path)
    assert preferred == newer


def test_no_pg_dump_new_enough_is_one_line_naming_what_was_found(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "pg_dump", 11)
    with pytest.raises(StackError) as refused:
        pgtools.choose("pg_dump", at_least=99, prefer=99, path=str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message
    assert f"{tmp_path / 'pg_dump'} (11)" in message
    assert "postgresql-client-99" in message


def test_a_tool_found_nowhere_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(StackError) as refused:
        pgtools.choose("pg_nonesuch", at_least=15, prefer=15, path=str(tmp_path))
    assert str(refused.value) == (
        "pg_nonesuch of PostgreSQL 15 or newer is needed, found none on PATH or beside "
        "PostgreSQL: install PostgreSQL 15's client tools (Debian: postgresql-client-15)"
    )


# --- the password and the environment ---


def test_the_password_reaches_the_tools_through_the_environment_only() -> None:
    settings = make_settings()
    env = pgtools.child_environment(settings)
    assert env["PGPASSWORD"] == settings.postgres_password
    arguments = pgtools._connection_arguments(settings, "mlflow")
    assert settings.postgres_password not in " ".join(arguments)
    assert "--no-password" in arguments


def test_inherited_libpq_variables_do_not_reach_the_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "elsewhere.example.com")
    monkeypatch.setenv("PGPASSWORD", "an-old-password")
    monkeypatch.setenv("PGDATABASE", "other")
    monkeypatch.setenv("KEEP_ME", "1")
    settings = make_settings(POSTGRES_SSLMODE="require")
    env = pgtools.child_environment(settings)
    assert {k: v for k, v in env.items() if k.startswith("PG")} == {
        "PGPASSWORD": settings.postgres_password,
        "PGSSLMODE": "require",
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "mlflow-stack-backup",
    }
    assert env["KEEP_ME"] == "1" and env["PATH"] == os.environ["PATH"]


def test_inherited_tls_file_variables_reach_the_tools_as_they_reach_psycopg2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = {
        "PGSSLROOTCERT": "/etc/ssl/rds-ca.pem",
        "PGSSLCERT": "/etc/ssl/client.crt",
        "PGSSLKEY": "/etc/ssl/client.key",
        "PGSSLCRL": "/etc/ssl/root.crl",
    }
    for name, value in tls.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PGSERVICE", "elsewhere")
    monkeypatch.setenv("PGSSLMODE", "disable")  # the settings' sslmode wins
    env = pgtools.child_environment(make_settings(POSTGRES_SSLMODE="verify-full"))
    assert {k: v for k, v in env.items() if k.startswith("PGSSL")} == {
        **tls,
        "PGSSLMODE": "verify-full",
    }
    assert "PGSERVICE" not in env


# --- running them ---


def test_a_dump_is_custom_format_without_owners_and_the_password_stays_out_of_argv(
    tmp_path: Path,
) -> None:
    settings = make_settings(POSTGRES_HOST="db.internal", POSTGRES_PORT="5433")
    tool = pgtools.Tool(fake_pg_tool(tmp_path / "bin", "pg_dump", 15), 15)
    pgtools.dump(tool, settings, "mlflow", tmp_path / "tracking.dump")
    assert (tmp_path / "tracking.dump").read_bytes() == b"PGDMP mlflow"
    argv, password = (tmp_path / "bin" / "calls.log").read_text().splitlines()
    assert argv == (
        "--host db.internal --port 5433 --username mlflow --dbname mlflow --no-password "
        f"--format=custom --no-owner --no-privileges --file {tmp_path / 'tracking.dump'}"
    )
    assert password == f"PGPASSWORD={settings.postgres_password}"
    assert settings.postgres_password not in argv


def test_a_restore_is_all_or_nothing_into_the_named_database(tmp_path: Path) -> None:
    settings = make_settings()
    tool = pgtools.Tool(fake_pg_tool(tmp_path / "bin", "pg_restore", 15), 15)
    pgtools.restore(tool, settings, "mlflow_restoring", tmp_path / "tracking.dump")
    argv = (tmp_path / "bin" / "calls.log").read_text().splitlines()[0]
    assert argv == (
        f"--host 127.0.0.1 --port 5432 --username mlflow --dbname mlflow_restoring "
        f"--no-password --no-owner --no-privileges --exit-on-error --single-transaction "
        f"{tmp_path / 'tracking.dump'}"
    )


def test_a_failure_is_the_first_line_the_tool_printed(tmp_path: Path) -> None:
    tool = pgtools.Tool(fake_pg_tool(tmp_path, "pg_dump", 15, fail_on="mlflow_auth"), 15)
    with pytest.raises(StackError) as refused:
        pgtools.dump(tool, make_settings(), "mlflow_auth", tmp_path / "auth.dump")
    assert str(refused.value) == (
        "pg_dump of database 'mlflow_auth' failed: "
        "pg_dump: error: connection to server failed: boom"
    )


def test_a_silent_failure_is_its_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "pg_restore"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(StackError, match=r"^pg_restore into database 'x' failed: exit code 3$"):
        pgtools.restore(pgtools.Tool(script, 15), make_settings(), "x", tmp_path / "x.dump")


def test_the_real_pg_dump_against_no_server_fails_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(POSTGRES_PORT=str(port))
    with pytest.raises(StackError) as refused:
        pgtools.dump(pgtools.Tool(PG15 / "pg_dump", 15), settings, "mlflow", tmp_path / "d")
    message = str(refused.value)
    assert message.startswith("pg_dump of database 'mlflow' failed: pg_dump: error: ")
    assert f"port {port} failed" in message and "\n" not in message
    assert settings.postgres_password not in message


def test_the_real_pg_restore_names_a_missing_dump(tmp_path: Path) -> None:
    settings = make_settings(POSTGRES_PORT=str(free_port()))
    with pytest.raises(StackError) as refused:
        pgtools.restore(pgtools.Tool(PG15 / "pg_restore", 15), settings, "x", tmp_path / "no.dump")
    message = str(refused.value)
    assert message.startswith("pg_restore into database 'x' failed: pg_restore: error: ")
    assert "no.dump" in message
