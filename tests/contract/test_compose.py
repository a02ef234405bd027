"""docker-compose.yml, checked statically (no Docker engine here): healthchecks, start order,
published ports, pinned images, named volumes; dclint for the schema and common mistakes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
#: Services that run once per `docker compose up` and exit; every other one keeps running.
ONE_SHOT = {"minio-init"}
DCLINT = REPO / ".venv" / "node" / "node_modules" / ".bin" / "dclint"


def test_the_stack_has_postgres_minio_its_provisioning_mlflow_and_gc() -> None:
    assert set(SERVICES) == {"postgres", "minio", "minio-init", "mlflow", "gc"}


def test_gc_runs_daily_through_the_server_with_the_admin_login_and_no_storage_keys() -> None:
    gc = SERVICES["gc"]
    assert gc["build"] == SERVICES["mlflow"]["build"]  # the same image
    assert gc["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
    assert gc["command"][:3] == ["gc", "--every", "24h"]
    assert gc["networks"] == ["frontend"]  # the server's network, not the data services'
    environment = gc["environment"]
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["MLFLOW_TRACKING_USERNAME"] == "${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
    assert environment["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD:?")
    assert environment["MLFLOW_STACK_GC_RETENTION_DAYS"] == "${MLFLOW_STACK_GC_RETENTION_DAYS:-30}"
    assert not any(name.startswith(("POSTGRES_", "MLFLOW_STACK_S3_")) for name in environment)
    health_file = gc["command"][gc["command"].index("--health-file") + 1]
    assert gc["healthcheck"]["test"] == ["CMD", "test", "-f", health_file]


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_service_has_a_healthcheck_and_restarts(name: str) -> None:
    service = SERVICES[name]
    test = service["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1
    assert service["restart"] == "unless-stopped"


def test_mlflow_starts_only_after_its_dependencies_are_healthy_and_minio_is_provisioned() -> None:
    depends = SERVICES["mlflow"]["depends_on"]
    assert depends == {
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }


def test_minio_init_provisions_once_per_up_from_the_minio_folder() -> None:
    init = SERVICES["minio-init"]
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert init["restart"] == "no"  # a one-shot: it exits when done
    assert "healthcheck" not in init
    assert init["volumes"] == ["./minio:/minio:ro"]
    assert init["entrypoint"] == ["/bin/sh", "/minio/provision.sh"]
    assert (REPO / "minio" / "provision.sh").is_file()
    assert (REPO / "minio" / "bucket-policy.json").is_file()
    assert init["user"] == "65534:65534"  # not root
    assert init["read_only"] is True
    assert init["environment"]["MC_CONFIG_DIR"].startswith("/tmp/")
    assert "/tmp" in init["tmpfs"]  # the alias (root credentials) never touches a disk


def test_the_bucket_policy_allows_only_the_bucket_and_its_objects() -> None:
    document = json.loads((REPO / "minio" / "bucket-policy.json").read_text())
    allowed = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            allowed.setdefault(resource, set()).update(statement["Action"])
    assert allowed == {
        "arn:aws:s3:::BUCKET": {
            "s3:GetBucketLocation",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
        },
        "arn:aws:s3:::BUCKET/*": {
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        },
    }


def test_only_the_mlflow_port_is_published() -> None:
    for name, service in SERVICES.items():
        if name != "mlflow":
            assert "ports" not in service, f"{name} must not publish ports"
    (port,) = SERVICES["mlflow"]["ports"]
    assert port["target"] == 5000
    assert port["published"] == "${MLFLOW_STACK_PORT:-5000}"
    assert port["host_ip"] == "${MLFLOW_STACK_HOST:-127.0.0.1}"  # loopback unless .env opens it


def test_data_services_sit_on_an_internal_network() -> None:
    assert COMPOSE["networks"]["backend"]["internal"] is True
    assert SERVICES["postgres"]["networks"] == ["backend"]
    assert SERVICES["minio"]["networks"] == ["backend"]
    assert SERVICES["minio-init"]["networks"] == ["backend"]


def test_images_are_pinned() -> None:
    assert re.fullmatch(r"postgres:15-\w+", SERVICES["postgres"]["image"])
    release = r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ"
    assert re.fullmatch(rf"minio/minio:{release}", SERVICES["minio"]["image"])
    assert re.fullmatch(rf"minio/mc:{release}", SERVICES["minio-init"]["image"])
    build = SERVICES["mlflow"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_state_lives_in_named_volumes() -> None:
    assert set(COMPOSE["volumes"]) == {"postgres-data", "minio-data"}
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "minio-data:/data" in SERVICES["minio"]["volumes"]


@pytest.mark.parametrize("name", ["mlflow", "gc", "minio-init"])
def test_the_server_image_containers_and_minio_init_drop_privileges(name: str) -> None:
    service = SERVICES[name]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


def test_postgres_init_script_is_mounted() -> None:
    assert "./postgres/initdb.d:/docker-entrypoint-initdb.d:ro" in SERVICES["postgres"]["volumes"]
    assert (REPO / "postgres" / "initdb.d" / "10-auth-database.sh").is_file()


def test_dclint_finds_no_problem() -> None:
    if not DCLINT.exists():
        if shutil.which("npm") is None:
            pytest.skip("dclint needs Node.js/npm, which this machine lacks")
        pytest.fail("dclint missing: run `make install` (it installs dclint with npm)")
    result = subprocess.run(
        [str(DCLINT), "docker-compose.yml"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "problem" not in result.stdout
