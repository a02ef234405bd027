"""`docker compose up` for real: the repository's docker-compose.yml and mlflow-server/Dockerfile
on a Docker engine, reached through the published port only, as users reach it.

The images no registry gives this machine (python, postgres, MinIO) are stand-ins built from
Debian's packages and SeaweedFS (tests/compose/engine.py); the mlflow service, its image,
networks, volumes and settings are exactly what users get.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
import mlflow
import psycopg2
import pytest
import requests

from mlflow_stack.settings.contract import SETTINGS
from tests.compose.conftest import ComposeStack
from tests.compose.engine import Engine, new_env_file
from tests.conftest import log_small_model

CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def client(compose_stack: ComposeStack) -> Iterator[Any]:
    """An MlflowClient (and the fluent API) logged in to the compose stack."""
    user, password = compose_stack.admin
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", compose_stack.tracking_uri)
        patch.setenv("MLFLOW_TRACKING_USERNAME", user)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        yield mlflow.MlflowClient(compose_stack.tracking_uri)


def wait_healthy(stack: ComposeStack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(stack.tracking_uri + "/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{stack.tracking_uri}/health not 200 within {timeout:g} s")


def test_every_service_is_healthy_and_only_mlflow_is_published(
    compose_stack: ComposeStack,
) -> None:
    stack = compose_stack
    services = stack.services()
    assert set(services) == {"postgres", "minio", "minio-init", "mlflow", "gc"}
    for name, service in services.items():
        if name == "minio-init":  # the one-shot provisioning: done, and succeeded
            assert (service["State"], service["ExitCode"]) == ("exited", 0), service
            continue
        assert (service["State"], service["Health"]) == ("running", "healthy"), name
    published = {
        name: {(p["URL"], p["PublishedPort"], p["TargetPort"])
               for p in service["Publishers"] if p["PublishedPort"]}
        for name, service in services.items()
    }  # fmt: skip
    assert published == {
        "mlflow": {("127.0.0.1", stack.port, 5000)},
        "postgres": set(),
        "minio": set(),
        "minio-init": set(),
        "gc": set(),
    }
    for name in ("postgres", "minio", "minio-init"):
        container = services[name]["ID"]
        assert stack.engine.docker("port", container).stdout.strip() == "", name
        networks = stack.inspect(name)["NetworkSettings"]["Networks"]
        assert set(networks) == {"mlflow-stack-test_backend"}, name  # the internal one only


NEIGHBOUR_PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "open")
    except OSError as error:
        print(target, type(error).__name__)
"""


def test_postgres_and_s3_answer_only_inside_the_stack(compose_stack: ComposeStack) -> None:
    """Another machine, or a container of another project, cannot reach PostgreSQL or S3; the
    Docker host itself reaches them at their bridge addresses (Docker's design), and there
    they demand the credentials."""
    stack = compose_stack
    backend = {
        name: stack.inspect(name)["NetworkSettings"]["Networks"]["mlflow-stack-test_backend"][
            "IPAddress"
        ]
        for name in ("postgres", "minio")
    }
    targets = [f"{backend['postgres']}:5432", f"{backend['minio']}:9000"]
    # a neighbour on Docker's default bridge, standing for any other network
    probe = stack.engine.docker(
        "run", "--rm", "--network", "bridge", "python:3.11.14-slim-bookworm",
        "python3", "-c", NEIGHBOUR_PROBE, *targets, timeout=60,
    ).stdout.split("\n")  # fmt: skip
    verdicts = dict(line.split() for line in probe if line.strip())
    assert set(verdicts) == set(targets)
    assert "open" not in verdicts.values(), verdicts

    values = stack.values
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=backend["postgres"],
            port=5432,
            user=values["POSTGRES_USER"],
            password="not-the-password",
            dbname="postgres",
            connect_timeout=5,
        )
    unsigned = boto3.client(
        "s3",
        endpoint_url=f"http://{backend['minio']}:9000",
        region_name="us-east-1",
        config=botocore.config.Config(signature_version=botocore.UNSIGNED),
    )
    for attempt in (
        lambda: unsigned.list_objects_v2(Bucket=values["MLFLOW_STACK_S3_BUCKET"]),
        lambda: unsigned.put_object(Bucket=values["MLFLOW_STACK_S3_BUCKET"], Key="x", Body=b"x"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            attempt()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)


def test_login_is_required_and_runs_artifacts_and_models_round_trip(
    compose_stack: ComposeStack, client: Any, tmp_path: Path
) -> None:
    search = compose_stack.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    assert (
        requests.get(search, auth=(compose_stack.admin[0], "wrong"), timeout=30).status_code == 401
    )
    assert requests.get(search, auth=compose_stack.admin, timeout=30).status_code == 200

    experiment = client.create_experiment(f"compose-{uuid.uuid4().hex[:8]}")
    blob = tmp_path / "weights.bin"
    blob.write_bytes(os.urandom(50 * 2**20))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_params({"alpha": "0.5", "layers": "3"})
        for step in range(3):
            mlflow.log_metric("rmse", 5.0 - step, step=step)
        mlflow.log_artifact(str(blob))
        info = log_small_model()
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"alpha": "0.5", "layers": "3"}
    history = sorted(client.get_metric_history(run.info.run_id, "rmse"), key=lambda m: m.step)
    assert [m.value for m in history] == [5.0, 4.0, 3.0]
    downloaded = Path(
        client.download_artifacts(run.info.run_id, "weights.bin", str(tmp_path / "dl"))
    )
    assert sha256(downloaded) == sha256(blob)

    name = f"compose-model-{uuid.uuid4().hex[:6]}"
    version = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, "champion", version.version)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict([[2.0]])[0] == pytest.approx(2.0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("service", ["mlflow", "gc"])
def test_the_image_runs_as_uid_10001_without_privileges(
    compose_stack: ComposeStack, service: str
) -> None:
    details = compose_stack.inspect(service)
    assert details["Config"]["User"] == "10001:10001"
    assert details["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in details["HostConfig"]["SecurityOpt"]
    status = compose_stack.compose("exec", "-T", service, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == ["10001", "10001"]
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"


def test_down_and_up_keep_every_run_and_artifact(
    compose_stack: ComposeStack, client: Any, tmp_path: Path
) -> None:
    experiment = client.create_experiment(f"kept-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "kept", "yes")
    client.log_text(run.info.run_id, "still here", "notes/kept.txt")

    began = time.monotonic()
    compose_stack.compose("down", "--timeout", "30")  # no --volumes: the named volumes stay
    took = time.monotonic() - began
    assert took < 20, f"down took {took:.0f} s: a service waited out its stop timeout"
    assert compose_stack.services() == {}
    volumes = compose_stack.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert {"mlflow-stack-test_postgres-data", "mlflow-stack-test_minio-data"} <= set(volumes)
    compose_stack.up()

    assert client.get_run(run.info.run_id).data.params == {"kept": "yes"}
    path = client.download_artifacts(run.info.run_id, "notes/kept.txt", str(tmp_path))
    assert Path(path).read_text() == "still here"


def test_a_restart_of_the_server_under_a_writing_client_loses_no_acknowledged_write(
    compose_stack: ComposeStack, client: Any
) -> None:
    run_id = client.create_run(
        client.create_experiment(f"restart-{uuid.uuid4().hex[:8]}")
    ).info.run_id
    session = requests.Session()
    session.auth = compose_stack.admin
    url = compose_stack.tracking_uri + "/api/2.0/mlflow/runs/log-metric"
    acknowledged: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def write() -> None:
        step = 0
        while not stop.is_set():
            body = {"run_id": run_id, "key": "loss", "value": step * 0.5,
                    "timestamp": 1_700_000_000_000 + step, "step": step}  # fmt: skip
            try:
                answer = session.post(url, json=body, timeout=10)
                if answer.status_code == 200:
                    acknowledged.append(step)
                else:
                    failures.append(f"{step}: HTTP {answer.status_code}")
            except requests.RequestException as error:
                failures.append(f"{step}: {type(error).__name__}")
            step += 1
            stop.wait(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(2)
        before = len(acknowledged)
        compose_stack.compose("restart", "mlflow", timeout=120)
        wait_healthy(compose_stack)
        time.sleep(2)
    finally:
        stop.set()
        writer.join(30)
    assert before > 0 and len(acknowledged) > before + 5, "the client wrote before and after"
    stored = {int(m.step): m.value for m in client.get_metric_history(run_id, "loss")}
    missing = [step for step in acknowledged if stored.get(step) != step * 0.5]
    assert not missing, f"{len(missing)} acknowledged writes lost or altered: {missing[:10]}"
    print(f"\nrestart: {len(acknowledged)} writes acknowledged, {len(failures)} refused meanwhile")


SECRETS = [s.name for s in SETTINGS if s.required] + [
    "POSTGRES_PASSWORD",  # one of three sources for serve, but compose's postgres needs it
    "MLFLOW_STACK_S3_ACCESS_KEY",
    "MLFLOW_STACK_S3_SECRET_KEY",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
]


@pytest.mark.parametrize("name", SECRETS)
def test_compose_refuses_to_start_without_each_secret(
    compose_engine: Engine, tmp_path: Path, name: str
) -> None:
    env_file = tmp_path / ".env"
    new_env_file(env_file, **{name: ""})
    project = "mlflow-stack-refused"
    result = compose_engine.compose(env_file, "up", "--detach", "--no-build",
                                    check=False, project=project)  # fmt: skip
    assert result.returncode != 0
    assert f"set {name} in .env" in result.stderr, result.stderr
    label = f"label=com.docker.compose.project={project}"
    for kind in ("container", "volume", "network"):
        left = compose_engine.docker(kind, "ls", *(["--all"] if kind == "container" else []),
                                     "--quiet", "--filter", label)  # fmt: skip
        assert left.stdout.strip() == "", f"a {kind} was created"


def bucket_keys(stack: ComposeStack, prefix: str) -> set[str]:
    bucket = stack.values["MLFLOW_STACK_S3_BUCKET"]
    pages = stack.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_the_gc_service_collects_deleted_runs_through_the_server(
    compose_stack: ComposeStack, client: Any
) -> None:
    """The gc service reaches the server with the admin login of .env and no storage keys."""
    experiment = client.create_experiment(f"gc-{uuid.uuid4().hex[:8]}")
    doomed, kept = (client.create_run(experiment).info.run_id for _ in range(2))
    for run_id in (doomed, kept):
        client.log_text(run_id, run_id, "notes/id.txt")
    client.delete_run(doomed)
    with_doomed = {key for key in bucket_keys(compose_stack, "") if doomed in key}
    assert with_doomed, "the deleted run's artifact is in the bucket before gc"
    env = compose_stack.inspect("gc")["Config"]["Env"]
    assert not [item for item in env if item.startswith(("AWS_", "MLFLOW_STACK_S3_"))], env

    result = compose_stack.compose(
        "exec", "-T", "gc", "mlflow-stack", "gc", "--older-than", "0", "--json"
    )
    assert '"runs"' in result.stdout, result.stdout + result.stderr
    with pytest.raises(mlflow.exceptions.MlflowException) as gone:
        client.get_run(doomed)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    keys = bucket_keys(compose_stack, "")
    assert not {key for key in keys if doomed in key}
    assert any(kept in key for key in keys)
    assert client.get_run(kept).info.lifecycle_stage == "active"


def test_a_backup_runs_in_the_compose_network_as_the_readme_says(
    compose_stack: ComposeStack, client: Any, tmp_path: Path
) -> None:
    run_id = client.create_run(client.create_experiment(f"bk-{uuid.uuid4().hex[:8]}")).info.run_id
    client.log_text(run_id, "in the backup", "notes/backup.txt")
    backups = tmp_path / "backups"
    backups.mkdir()
    user = f"{os.getuid()}:{os.getgid()}"
    compose_stack.compose(
        "run", "--rm", "--no-deps", "--user", user, "--volume", f"{backups}:/backups",
        "mlflow", "backup", "/backups/first", timeout=300,
    )  # fmt: skip
    manifest = json.loads((backups / "first" / "manifest.json").read_text())
    objects = {str(item["key"]): item for item in manifest["objects"]["items"]}
    key = next(k for k in objects if run_id in k and k.endswith("notes/backup.txt"))
    stored = backups / "first" / "objects" / key
    assert stored.read_text() == "in the backup"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == objects[key]["sha256"]
    assert (backups / "first" / "tracking.dump").stat().st_size > 0
    assert (backups / "first" / "auth.dump").stat().st_size > 0


def root_s3(stack: ComposeStack) -> Any:
    """A boto3 client with MinIO's root credentials (only minio and minio-init hold them)."""
    values = stack.values
    return boto3.client(
        "s3",
        endpoint_url=f"http://{stack.backend_address('minio')}:9000",
        region_name="us-east-1",
        aws_access_key_id=values["MINIO_ROOT_USER"],
        aws_secret_access_key=values["MINIO_ROOT_PASSWORD"],
    )


def refused(attempt: Any) -> str:
    """The error code S3 refuses ``attempt()`` with (the test fails if S3 allows it)."""
    with pytest.raises(botocore.exceptions.ClientError) as error:
        attempt()
    return str(error.value.response["Error"]["Code"])


def test_minio_init_provisioned_the_server_a_user_of_its_own(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    values = stack.values
    assert values["MLFLOW_STACK_S3_ACCESS_KEY"] != values["MINIO_ROOT_USER"]
    mlflow_env = dict(item.split("=", 1) for item in stack.inspect("mlflow")["Config"]["Env"])
    assert mlflow_env["MLFLOW_STACK_S3_ACCESS_KEY"] == values["MLFLOW_STACK_S3_ACCESS_KEY"]
    assert not {name for name in mlflow_env if name.startswith("MINIO_")}
    assert values["MINIO_ROOT_PASSWORD"] not in "\n".join(stack.inspect("mlflow")["Config"]["Env"])

    init = stack.inspect("minio-init")
    assert (init["State"]["Status"], init["State"]["ExitCode"]) == ("exited", 0)
    assert init["Config"]["User"] == "65534:65534"
    assert init["HostConfig"]["CapDrop"] == ["ALL"]
    assert init["HostConfig"]["ReadonlyRootfs"] is True
    logs = stack.compose("logs", "--no-log-prefix", "minio-init").stdout
    for step in (
        "accepts the root credentials",
        f"bucket {values['MLFLOW_STACK_S3_BUCKET']}",
        "policy mlflow-stack-artifacts",
        "has policy mlflow-stack-artifacts: done",
    ):
        assert step in logs, logs  # fmt: skip
    assert values["MINIO_ROOT_PASSWORD"] not in logs
    assert values["MLFLOW_STACK_S3_SECRET_KEY"] not in logs


def test_the_servers_key_reaches_its_bucket_and_no_other(compose_stack: ComposeStack) -> None:
    """What the bucket policy allows: the artifact bucket's objects (put, get, list, delete,
    multipart uploads); not ListBuckets beyond it, CreateBucket or another bucket."""
    stack = compose_stack
    bucket = stack.values["MLFLOW_STACK_S3_BUCKET"]
    server, root = stack.s3(), root_s3(stack)
    other = f"other-{uuid.uuid4().hex[:8]}"
    root.create_bucket(Bucket=other)
    root.put_object(Bucket=other, Key="private.txt", Body=b"not the server's")
    try:
        key = f"probe/{uuid.uuid4().hex}.txt"
        server.put_object(Bucket=bucket, Key=key, Body=b"mine")
        assert server.get_object(Bucket=bucket, Key=key)["Body"].read() == b"mine"
        listed = server.list_objects_v2(Bucket=bucket, Prefix="probe/").get("Contents", [])
        assert key in {item["Key"] for item in listed}
        upload = server.create_multipart_upload(Bucket=bucket, Key=key + ".parts")["UploadId"]
        server.list_parts(Bucket=bucket, Key=key + ".parts", UploadId=upload)
        server.list_multipart_uploads(Bucket=bucket)
        server.abort_multipart_upload(Bucket=bucket, Key=key + ".parts", UploadId=upload)
        server.delete_object(Bucket=bucket, Key=key)
        assert "Contents" not in server.list_objects_v2(Bucket=bucket, Prefix=key)

        try:
            names = {item["Name"] for item in server.list_buckets()["Buckets"]}
        except botocore.exceptions.ClientError as error:
            assert error.response["Error"]["Code"] == "AccessDenied"
        else:
            assert names <= {bucket}, names
        assert other in {item["Name"] for item in root.list_buckets()["Buckets"]}
        new = f"new-{uuid.uuid4().hex[:8]}"
        assert refused(lambda: server.create_bucket(Bucket=new)) == "AccessDenied"
        assert new not in {item["Name"] for item in root.list_buckets()["Buckets"]}
        for attempt in (
            lambda: server.get_object(Bucket=other, Key="private.txt"),
            lambda: server.list_objects_v2(Bucket=other),
            lambda: server.put_object(Bucket=other, Key="x", Body=b"x"),
            lambda: server.delete_object(Bucket=other, Key="private.txt"),
            lambda: server.delete_bucket(Bucket=bucket),
        ):
            assert refused(attempt) == "AccessDenied"
        assert (
            root.get_object(Bucket=other, Key="private.txt")["Body"].read() == b"not the server's"
        )
    finally:
        root.delete_object(Bucket=other, Key="private.txt")
        root.delete_bucket(Bucket=other)


def wait_service_healthy(stack: ComposeStack, service: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while stack.services()[service].get("Health") != "healthy":
        if time.monotonic() > deadline:
            pytest.fail(f"{service} not healthy within {timeout:g} s")
        time.sleep(1)


def test_up_again_reprovisions_and_a_minio_restart_keeps_the_user(
    compose_stack: ComposeStack, client: Any, tmp_path: Path
) -> None:
    """minio-init runs on every `docker compose up` and succeeds again without touching the
    data; the user it made lives in MinIO's volume, so a restart of minio keeps it."""
    stack = compose_stack
    run_id = client.create_run(client.create_experiment(f"re-{uuid.uuid4().hex[:8]}")).info.run_id
    client.log_text(run_id, "from before", "notes/before.txt")
    first = stack.inspect("minio-init")["State"]["StartedAt"]

    stack.up()
    again = stack.inspect("minio-init")["State"]
    assert again["StartedAt"] != first, "minio-init did not run again"
    assert (again["Status"], again["ExitCode"]) == ("exited", 0)
    path = client.download_artifacts(run_id, "notes/before.txt", str(tmp_path / "1"))
    assert Path(path).read_text() == "from before"

    stack.compose("restart", "minio", timeout=120)
    wait_service_healthy(stack, "minio")
    bucket = stack.values["MLFLOW_STACK_S3_BUCKET"]
    assert stack.s3().list_objects_v2(Bucket=bucket, MaxKeys=1)["KeyCount"] == 1
    client.log_text(run_id, "after the restart", "notes/after.txt")
    path = client.download_artifacts(run_id, "notes/before.txt", str(tmp_path / "2"))
    assert Path(path).read_text() == "from before"
    path = client.download_artifacts(run_id, "notes/after.txt", str(tmp_path / "3"))
    assert Path(path).read_text() == "after the restart"
