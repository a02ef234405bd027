"""The compose stack of the tests: the repository's docker-compose.yml, unchanged, on the
private engine (tests/compose/engine.py), with a .env written by `mlflow-stack config init`
and the MLflow port on a free loopback port. Tests reach it only through that port, as users
do, and through the engine (`docker compose ps/exec/inspect`)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.envfile import read_env_file
from tests.compose.engine import Engine, new_env_file


@dataclass
class ComposeStack:
    engine: Engine
    env_file: Path
    port: int

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600, env_file: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.engine.compose(env_file or self.env_file, *args, check=check, timeout=timeout)

    def up(self) -> None:
        result = self.compose("up", "--detach", "--no-build", "--wait", "--wait-timeout", "300",
                              check=False)  # fmt: skip
        if result.returncode != 0:
            logs = self.compose("logs", "--tail", "40", check=False).stdout
            pytest.fail(f"docker compose up failed:\n{result.stderr[-3000:]}\n{logs[-6000:]}")

    @property
    def values(self) -> dict[str, str]:
        return read_env_file(self.env_file)

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> tuple[str, str]:
        values = self.values
        return values["MLFLOW_AUTH_ADMIN_USERNAME"], values["MLFLOW_AUTH_ADMIN_PASSWORD"]

    def services(self) -> dict[str, dict[str, Any]]:
        """`docker compose ps` as JSON, by service."""
        lines = self.compose("ps", "--all", "--format", "json").stdout.splitlines()
        return {entry["Service"]: entry for entry in map(json.loads, filter(None, lines))}

    def backend_address(self, service: str) -> str:
        """The service's address on the internal network (the Docker host reaches it)."""
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        return str(networks[f"{self.engine_project}_backend"]["IPAddress"])

    @property
    def engine_project(self) -> str:
        from tests.compose.engine import PROJECT

        return PROJECT

    def s3(self) -> Any:
        """A boto3 client with the server's S3 keys (the bucket-only user minio-init creates)."""
        import boto3

        values = self.values
        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.backend_address('minio')}:9000",
            region_name=values.get("MLFLOW_STACK_S3_REGION") or "us-east-1",
            aws_access_key_id=values["MLFLOW_STACK_S3_ACCESS_KEY"],
            aws_secret_access_key=values["MLFLOW_STACK_S3_SECRET_KEY"],
        )

    def inspect(self, service: str) -> dict[str, Any]:
        container = self.services()[service]["ID"]
        return dict(json.loads(self.engine.docker("inspect", container).stdout)[0])


@pytest.fixture(scope="session")
def compose_engine(request: pytest.FixtureRequest) -> Engine:
    """The private engine, provisioned in the background: by this process, or under xdist by
    the controller (tests/parallel.py), which hands over through a file."""
    from tests.conftest import PROVISIONING, start_the_emulator_with_its_unit
    from tests.parallel import Handoff, handoff_path

    # Session fixtures are set up before the autouse one that starts the emulator's applies:
    # they would wait here for the Docker provisioning first.
    start_the_emulator_with_its_unit(request, "tests/compose/")
    path = handoff_path(request.config)
    if path is not None:
        handoff = Handoff.wait(path)
        if handoff.state == "failed":
            pytest.fail(f"the Docker provisioning failed: {handoff.error}")
        return Engine()
    if not PROVISIONING:
        pytest.fail("the Docker provisioning was not started (tests/conftest.py)")
    return PROVISIONING[0].wait()


def start_stack(engine: Engine) -> ComposeStack:
    """The repository's compose file up, with a fresh .env and the MLflow port on a free
    loopback port (run by the background provisioning, see tests/conftest.py)."""
    directory = Path(tempfile.mkdtemp(prefix="mlflow-stack-compose-"))
    port = free_port()
    env_file = directory / ".env"
    new_env_file(env_file, MLFLOW_STACK_PORT=str(port))
    stack = ComposeStack(engine, env_file, port)
    stack.compose("down", "--volumes", "--remove-orphans", check=False)  # an aborted run's
    stack.up()
    return stack


@pytest.fixture(scope="session")
def compose_stack(compose_engine: Engine, request: pytest.FixtureRequest) -> Iterator[ComposeStack]:
    from tests.conftest import PROVISIONING
    from tests.parallel import Handoff, handoff_path

    path = handoff_path(request.config)
    if path is not None:
        handoff = Handoff.wait(path)
        stack = ComposeStack(compose_engine, Path(handoff.env_file), handoff.port)
    else:
        stack = PROVISIONING[0].result or start_stack(compose_engine)
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
