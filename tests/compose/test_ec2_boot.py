"""The AWS path's container start-up: the image started as the EC2 instance starts it.

The Terraform emulator's deployment (tests/terraform, applied against moto) renders the
instance's boot script. Its `prepare` step writes the env file from Secrets Manager (moto) and
the instance metadata, as systemd runs it before each start; its unit's `docker run` line
starts the image. Here both run for real against the compose stack's PostgreSQL and S3: the
infrastructure's addresses and keys in the env file are pointed at the compose services (RDS,
AWS S3 and the instance role are what moto cannot give), and CloudWatch logging is left out;
every other setting and every `docker run` flag is as rendered.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from mlflow_stack.native.processes import free_port
from tests.compose.conftest import ComposeStack
from tests.compose.engine import PROJECT

#: Settings that name the infrastructure: on AWS they point at RDS, S3 and the instance role.
#: The databases get names of their own, so that this server bootstraps its own admin from the
#: password in Secrets Manager instead of meeting the compose stack's.
INFRASTRUCTURE = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
                  "POSTGRES_PASSWORD_SECRET_ARN", "POSTGRES_SSLMODE", "POSTGRES_DB",
                  "MLFLOW_STACK_AUTH_DB", "MLFLOW_STACK_S3_ENDPOINT_URL",
                  "MLFLOW_STACK_S3_ACCESS_KEY", "MLFLOW_STACK_S3_SECRET_KEY")  # fmt: skip


def unit_run_arguments(script: str) -> list[str]:
    """The arguments of `docker run` in the systemd unit the boot script installs."""
    match = re.search(r"^ExecStart=/usr/bin/docker run (.*?\$IMAGE serve)$", script,
                      re.MULTILINE | re.DOTALL)  # fmt: skip
    assert match, "no ExecStart=/usr/bin/docker run ... line in the boot script"
    return shlex.split(match.group(1).replace("\\\n", " "))


def without_cloudwatch(arguments: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in ("--log-driver", "--log-opt"):
            skip = True
        else:
            kept.append(argument)
    return kept


def test_the_image_starts_as_the_ec2_boot_script_starts_it(
    compose_stack: ComposeStack, emulation: Any, tmp_path: Path
) -> None:
    deployment = emulation.applied()["http"]
    boot = deployment.boot_prepare(tmp_path)
    assert boot.result.returncode == 0, boot.result.stderr
    rendered = dict(line.split("=", 1) for line in boot.env_file.read_text().splitlines())
    app_secret = deployment.secret(deployment.outputs["admin_password_secret_arn"])

    compose = compose_stack.values
    values = {
        **rendered,
        "POSTGRES_HOST": "postgres",
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": compose["POSTGRES_USER"],
        "POSTGRES_PASSWORD": compose["POSTGRES_PASSWORD"],
        # On AWS the server reads the database secret itself; here the compose password.
        "POSTGRES_PASSWORD_SECRET_ARN": "",
        "POSTGRES_SSLMODE": "prefer",  # RDS requires TLS; the compose PostgreSQL has none
        "POSTGRES_DB": "ec2_mlflow",
        "MLFLOW_STACK_AUTH_DB": "ec2_mlflow_auth",
        "MLFLOW_STACK_S3_ENDPOINT_URL": "http://minio:9000",
        # The instance role's stand-in: the compose server's key reaches only the compose
        # bucket, so MinIO's root key, which creates the bucket Terraform names, as on AWS.
        "MLFLOW_STACK_S3_ACCESS_KEY": compose["MINIO_ROOT_USER"],
        "MLFLOW_STACK_S3_SECRET_KEY": compose["MINIO_ROOT_PASSWORD"],
    }
    assert set(values) == set(rendered)
    unchanged = {name for name in rendered if name not in INFRASTRUCTURE}
    assert {name: values[name] for name in unchanged} == {n: rendered[n] for n in unchanged}
    env_file = tmp_path / "ec2.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    env_file.chmod(0o600)

    script = boot.script.read_text()
    arguments = without_cloudwatch(unit_run_arguments(script))
    port = free_port()
    container = f"mlflow-stack-ec2-{uuid.uuid4().hex[:6]}"
    substitutions = {
        "$ENV_FILE": str(env_file),
        "$PORT:$PORT": f"127.0.0.1:{port}:5000",  # the instance publishes 5000 on all addresses
        "mlflow-stack": container,
        "$IMAGE": f"{PROJECT}-mlflow",  # the image compose built from mlflow-server/Dockerfile
    }
    arguments = [substitutions.get(argument, argument) for argument in arguments]
    assert arguments[:2] == ["--rm", "--name"]
    assert arguments[-2:] == [f"{PROJECT}-mlflow", "serve"]
    for flag in ("--cap-drop", "--security-opt", "--env-file", "--publish"):
        assert flag in arguments

    engine = compose_stack.engine
    # `docker run` joins one network; the instance's container has the host's. Here it needs
    # the backend (postgres, minio) and the frontend (its published port): create, connect,
    # start, which is what `docker run` does.
    created = arguments[1:-2]  # without --rm: the container is removed below, logs kept meanwhile
    engine.docker("create", *created, "--network", f"{PROJECT}_backend", f"{PROJECT}-mlflow",
                  "serve")  # fmt: skip
    try:
        engine.docker("network", "connect", f"{PROJECT}_frontend", container)
        engine.docker("start", container)
        uri = f"http://127.0.0.1:{port}"
        wait_for_health(uri, engine, container)
        admin = (values["MLFLOW_AUTH_ADMIN_USERNAME"], app_secret["MLFLOW_AUTH_ADMIN_PASSWORD"])
        api = uri + "/api/2.0/mlflow"
        created_experiment = requests.post(f"{api}/experiments/create",
                                           json={"name": "from-the-ec2-path"}, auth=admin,
                                           timeout=30)  # fmt: skip
        assert created_experiment.status_code == 200, created_experiment.text
        experiment_id = created_experiment.json()["experiment_id"]
        run = requests.post(f"{api}/runs/create", json={"experiment_id": experiment_id},
                            auth=admin, timeout=30).json()["run"]["info"]  # fmt: skip
        artifact = f"{uri}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run['run_id']}"
        assert requests.put(f"{artifact}/artifacts/boot.txt", data=b"booted like EC2",
                            auth=admin, timeout=30).status_code == 200  # fmt: skip
        back = requests.get(f"{artifact}/artifacts/boot.txt", auth=admin, timeout=30)
        assert back.content == b"booted like EC2"
        status = engine.docker("exec", container, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\s+10001\s", status, re.MULTILINE)
        assert re.search(r"^CapEff:\s+0{16}$", status, re.MULTILINE)
        stopped = time.monotonic()
        engine.docker("stop", "--time", "30", container, timeout=60)  # the unit's ExecStop
        assert time.monotonic() - stopped < 30
        state = engine.docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout
        assert state.strip() == "0", engine.docker("logs", "--tail", "30", container).stderr
    finally:
        engine.docker("rm", "--force", container, check=False)


def wait_for_health(uri: str, engine: Any, container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(uri + "/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        running = engine.docker("inspect", "--format", "{{.State.Running}}", container).stdout
        if running.strip() != "true":
            break
        time.sleep(1)
    logs = engine.docker("logs", "--tail", "40", container, check=False)
    raise AssertionError(f"{container} did not become healthy:\n{logs.stdout}{logs.stderr}")
