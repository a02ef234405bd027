"""The native runtime: health reporting, no twins, loopback only, credentials enforced by
PostgreSQL and S3, and state that survives a full stop."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import botocore
import mlflow
import psutil
import psycopg2
import pytest
from botocore.config import Config

from tests.conftest import REPO, LiveStack, log_small_model

SERVICES = ("postgres", "s3", "mlflow")


def listening_addresses(stack: LiveStack) -> set[tuple[str, str]]:
    """(service, ip) of every TCP listener of the stack's process groups."""
    found = set()
    for name, record in stack.records().items():
        for proc in record.group():
            try:
                connections = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            found |= {(name, c.laddr.ip) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def test_status_reports_every_service_healthy(stack: LiveStack) -> None:
    result = stack.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    statuses = {s["name"]: s for s in json.loads(result.stdout)}
    assert list(statuses) == list(SERVICES)
    for status in statuses.values():
        assert status["state"] == "healthy"
        assert status["pid"] > 0 and status["resident_bytes"] > 0
    assert statuses["mlflow"]["endpoint"] == stack.tracking_uri
    text = stack.cli("status")
    assert text.returncode == 0 and text.stdout.count("healthy") == 3


def test_a_second_up_starts_no_twins(stack: LiveStack) -> None:
    before = {name: r.pid for name, r in stack.records().items()}
    result = stack.cli("up")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert {name: r.pid for name, r in stack.records().items()} == before
    data = str(stack.data_dir)
    weeds = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "weed" and f"-dir={data}/s3/data" in (p.info["cmdline"] or [])
    ]
    assert len(weeds) == 1


def test_every_listener_is_on_loopback(stack: LiveStack) -> None:
    addresses = listening_addresses(stack)
    assert {name for name, _ in addresses} == set(SERVICES)
    assert {ip for _, ip in addresses} == {"127.0.0.1"}


def test_the_server_is_one_master_whose_forked_workers_share_its_mlflow(
    stack: LiveStack,
) -> None:
    """`serve` imports MLflow once and forks its workers (mlflow_stack.server.launcher): no
    second copy of MLflow in an idle launcher, none of the master's database connections in
    a worker, most of each worker's memory shared with the master."""
    serve = stack.server("mlflow")
    assert serve is not None
    children = serve.children()
    assert len(children) == stack.settings.workers, children  # no launcher, no tracker
    for worker in children:
        assert worker.cmdline() == serve.cmdline()  # forked, not spawned or exec'd
        memory = worker.memory_full_info()
        assert memory.pss < 0.75 * memory.rss, memory  # shared with the master and siblings
    database = stack.settings.postgres_port
    master_connections = [
        c for c in serve.net_connections(kind="tcp") if c.raddr and c.raddr.port == database
    ]
    assert master_connections == []  # the workers each open their own


def test_postgres_runs_unprivileged_and_refuses_a_wrong_password(stack: LiveStack) -> None:
    postgres = stack.server("postgres")
    assert postgres is not None
    assert postgres.uids().effective != 0
    assert os.getsid(postgres.pid) == stack.records()["postgres"].pid  # under its supervisor
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host="127.0.0.1",
            port=stack.settings.postgres_port,
            user=stack.settings.postgres_user,
            password="not-the-password",
            dbname="postgres",
            connect_timeout=5,
        )


def test_s3_refuses_unsigned_and_wrongly_signed_requests(stack: LiveStack) -> None:
    endpoint, bucket = stack.settings.s3_endpoint_url, stack.settings.s3_bucket
    stack.s3().put_object(Bucket=bucket, Key="probe/secret.txt", Body=b"only for the server")

    def attempt(client) -> None:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            client.get_object(Bucket=bucket, Key="probe/secret.txt")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)
        with pytest.raises(botocore.exceptions.ClientError):
            client.put_object(Bucket=bucket, Key="probe/intruder.txt", Body=b"x")
        with pytest.raises(botocore.exceptions.ClientError):
            client.list_objects_v2(Bucket=bucket)

    region = stack.settings.s3_region
    attempt(
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=Config(signature_version=botocore.UNSIGNED),
        )
    )
    attempt(
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=stack.settings.s3_access_key,
            aws_secret_access_key="wrong-secret-key-123456",
        )
    )
    attempt(
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id="unknown-key",
            aws_secret_access_key=stack.settings.s3_secret_key,
        )
    )
    listed = stack.s3().list_objects_v2(Bucket=bucket, Prefix="probe/")
    assert [o["Key"] for o in listed["Contents"]] == ["probe/secret.txt"]


def test_compose_init_script_creates_the_auth_database_idempotently(stack: LiveStack) -> None:
    script = REPO / "postgres" / "initdb.d" / "10-auth-database.sh"
    env = {
        **os.environ,
        "POSTGRES_USER": stack.settings.postgres_user,
        "POSTGRES_DB": stack.settings.postgres_db,
        "MLFLOW_STACK_AUTH_DB": "init_script_check",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(stack.settings.postgres_port),
        "PGPASSWORD": stack.settings.postgres_password,
    }
    for _ in range(2):
        subprocess.run(["/bin/bash", str(script)], env=env, check=True, capture_output=True)
    conn = stack.pg("postgres")
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = 'init_script_check'")
        assert cursor.fetchone() == (1,)
        cursor.execute("DROP DATABASE init_script_check")
    conn.close()


def test_everything_survives_down_and_up_and_down_leaves_no_process(
    stack: LiveStack, client, experiment_id: str, tmp_path: Path
) -> None:

    artifact = tmp_path / "model-card.md"
    artifact.write_text("# trip duration\n")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("alpha", "0.5")
        for step in range(3):
            mlflow.log_metric("rmse", 5.0 - step, step=step)
        mlflow.log_artifact(str(artifact))
        info = log_small_model()
    name = f"persisted-{experiment_id}"
    version = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, "champion", version.version)

    groups = {name: record.group() for name, record in stack.records().items()}
    assert all(groups.values())
    result = stack.cli("down")
    assert result.returncode == 0, result.stderr
    assert "killed" not in result.stderr, result.stderr  # every service stopped gracefully
    for service, members in groups.items():
        alive = [p.pid for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"{service} left processes behind: {alive}"
    assert stack.records() == {}
    assert listening_addresses(stack) == set()
    stopped = stack.cli("status")
    assert stopped.returncode == 1
    assert "not running" in stopped.stderr
    stopped = json.loads(stack.cli("status", "--json").stdout)
    assert [s["state"] for s in stopped] == ["stopped"] * 3

    stack.up()
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"alpha": "0.5"}
    history = sorted(client.get_metric_history(run.info.run_id, "rmse"), key=lambda m: m.step)
    assert [m.value for m in history] == [5.0, 4.0, 3.0]
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model-card.md", dst_path=str(tmp_path / "dl")
    )
    assert Path(downloaded).read_text() == "# trip duration\n"
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict([[2.0]])[0] == pytest.approx(2.0)


def test_up_wrote_a_private_env_file_with_every_setting(stack: LiveStack) -> None:
    import stat

    from mlflow_stack.settings.contract import SETTING_NAMES
    from mlflow_stack.settings.envfile import read_env_file

    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
    values = read_env_file(stack.env_file)
    assert set(values) == SETTING_NAMES
    assert len(values["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 32


def test_logs_show_each_service(stack: LiveStack) -> None:
    result = stack.cli("logs", "-n", "200")
    assert result.returncode == 0, result.stderr
    for service in SERVICES:
        assert f"{service}.log <==" in result.stdout
    mlflow_log = stack.cli("logs", "mlflow", "-n", "500").stdout
    assert f"Listening at: http://{stack.settings.host}:{stack.settings.port}" in mlflow_log
    assert "database system is ready to accept connections" in stack.cli("logs", "postgres").stdout


def test_seaweedfs_internal_grpc_needs_the_stacks_certificate(
    stack: LiveStack, experiment_id: str, tmp_path: Path
) -> None:
    """Another local user with a `weed` binary cannot browse the stack's files via gRPC."""
    import sys

    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("secret", "probe.txt")
    ports = json.loads((stack.data_dir / "s3" / "ports.json").read_text())
    weed = str(Path(sys.executable).parent / "weed")
    shell = [
        weed,
        "shell",
        f"-master=127.0.0.1:{ports['master']}.{ports['master_grpc']}",
        f"-filer=127.0.0.1:{ports['filer']}.{ports['filer_grpc']}",
    ]
    listing = f"fs.ls /buckets/{stack.settings.s3_bucket}/{experiment_id}/\nexit\n"

    def browse(cwd: Path, timeout: float) -> str:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no ~/.seaweedfs either
        try:
            done = subprocess.run(
                shell, input=listing, cwd=cwd, env=env, capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as expired:
            return (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else ""
        return done.stdout

    # with the stack's security.toml and certificates (its S3 home directory): allowed
    assert run.info.run_id in browse(stack.data_dir / "s3", timeout=30)
    # from anywhere else: no TLS client certificate, no answer
    assert run.info.run_id not in browse(tmp_path, timeout=8)


def test_down_one_service_and_up_restarts_only_that_one(stack: LiveStack) -> None:
    before = {name: r.pid for name, r in stack.records().items()}
    result = stack.cli("down", "mlflow")
    assert result.returncode == 0, result.stderr
    assert "stopped: mlflow" in result.stderr
    assert set(stack.records()) == {"postgres", "s3"}
    result = stack.cli("up")
    assert result.returncode == 0, result.stderr
    after = {name: r.pid for name, r in stack.records().items()}
    assert after["postgres"] == before["postgres"] and after["s3"] == before["s3"], (
        result.stderr + stack.cli("logs", "postgres", "-n", "15").stdout
    )
    assert after["mlflow"] != before["mlflow"]
    assert stack.cli("status").returncode == 0
