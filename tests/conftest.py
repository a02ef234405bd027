"""Shared fixtures. The live native stack is started once per session, on free ports in a
temporary directory, through the real CLI (`mlflow-stack up`), and stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.native.processes import ProcessRecord, free_port
from mlflow_stack.native.service import Layout
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import merged_environment

REPO = Path(__file__).resolve().parent.parent

#: The settings without defaults, with valid values: enough for Settings.from_env.
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-password-123456",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-123456",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-key-123456",
}
#: REQUIRED plus the S3 keys and a local endpoint, as for compose or the native runtime.
WITH_S3 = {
    **REQUIRED,
    "MLFLOW_STACK_S3_ACCESS_KEY": "access-key-1",
    "MLFLOW_STACK_S3_SECRET_KEY": "s3-secret-key-123456",
    "MLFLOW_STACK_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
}
#: What single sign-on needs on top of REQUIRED (MLFLOW_STACK_AUTH_MODE=oidc).
SSO = {
    "MLFLOW_STACK_AUTH_MODE": "oidc",
    "MLFLOW_STACK_PUBLIC_URL": "https://mlflow.example.com",
    "MLFLOW_STACK_OIDC_ISSUER": "https://idp.example.com",
    "MLFLOW_STACK_OIDC_CLIENT_ID": "mlflow",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET": "a-client-secret",
    "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS": "ml-team=EDIT",
}


def make_settings(**overrides: str) -> Settings:
    return Settings.from_env({**WITH_S3, **overrides})


CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `mlflow-stack ARGS` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "mlflow_stack", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class LiveStack:
    root: Path
    env: dict[str, str]  # the environment the CLI runs with (ports chosen by the fixture)
    settings: Settings = field(init=False)

    @classmethod
    def on_free_ports(cls, root: Path) -> LiveStack:
        """A stack in ``root`` on free ports, with no client variables of ours in its way."""
        pg_port, s3_port, mlflow_port = distinct_free_ports(3)
        env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
        env.update(
            POSTGRES_PORT=str(pg_port),
            MLFLOW_STACK_PORT=str(mlflow_port),
            MLFLOW_STACK_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
        )
        return cls(root=root, env=env)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "--env-file",
            str(self.env_file),
            *args,
            *(["--data-dir", str(self.data_dir)] if args and args[0] in DATA_COMMANDS else []),
            env=self.env,
            cwd=self.root,
            timeout=timeout,
        )

    def load_settings(self) -> None:
        self.settings = Settings.from_env(merged_environment(self.env_file, self.env))

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking_uri

    @property
    def admin(self) -> tuple[str, str]:
        return self.settings.admin_username, self.settings.admin_password

    def records(self) -> dict[str, ProcessRecord]:
        found = {}
        for path in Layout(self.data_dir).run.glob("*.json"):
            record = ProcessRecord.load(path)
            if record:
                found[path.stem] = record
        return found

    def server(self, service: str) -> Any:
        """The service's running server process (its supervisor's child), or None."""
        from mlflow_stack.native.supervisor import SupervisorState

        state = SupervisorState.load(Layout(self.data_dir).state(service))
        return state.child_process() if state else None

    def s3(self) -> Any:
        from mlflow_stack.stores.storage import s3_client

        return s3_client(self.settings, timeout=30)

    def pg(self, dbname: str | None = None) -> Any:
        from mlflow_stack.stores.database import connect

        return connect(self.settings, dbname or self.settings.postgres_db)

    def up(self) -> None:
        result = self.cli("up")
        if result.returncode != 0:
            logs = self.cli("logs", "-n", "30").stdout
            pytest.fail(f"mlflow-stack up failed:\n{result.stderr}\n--- logs ---\n{logs}")


DATA_COMMANDS = {"up", "down", "status", "logs"}


@pytest.fixture(scope="session")
def stack() -> Iterator[LiveStack]:
    # Not below pytest's 0700 basetemp: PostgreSQL runs as another account when we are root.
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-test-"))
    root.chmod(0o755)
    live = LiveStack.on_free_ports(root)
    live.up()
    live.load_settings()
    saved = {name: os.environ.get(name) for name in CLIENT_VARIABLES}
    os.environ.update(
        MLFLOW_TRACKING_URI=live.tracking_uri,
        MLFLOW_TRACKING_USERNAME=live.settings.admin_username,
        MLFLOW_TRACKING_PASSWORD=live.settings.admin_password,
    )
    try:
        yield live
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        result = live.cli("down")
        assert result.returncode == 0, result.stderr
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def experiment_id(stack: LiveStack) -> str:
    """A fresh experiment per test, so tests never see each other's runs."""
    from mlflow import MlflowClient

    return MlflowClient(stack.tracking_uri).create_experiment(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def client(stack: LiveStack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(stack.tracking_uri)


def log_small_model() -> Any:
    """Log a one-feature linear regression to the active run as ``model``; its ModelInfo. The
    requirements are given: inferring them re-imports the model in a subprocess (~4 s of CPU)."""
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0], [1]], [0, 1])
    return mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])


def which_or_fail(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"{name} is not installed: run `make install`")
    return found


# --- the session's plan: what starts early, and in which order the folders run ---
#
# Two slow things wait mostly on others, so they start first and run in the background: the
# Terraform emulator's applies (provider waiters on moto) and the Docker provisioning of the
# compose tests (apt, debootstrap, image builds, `docker compose up --wait`). The compose
# tests go out first (their unit starts the applies), then the other Terraform tests, then the
# tests that start servers, then the fast folders; the emulator's destroy starts after the last
# test that reads its deployments and is checked last. Under pytest-xdist (`make test` runs 4
# workers) the same order is the plan of the scheduler, and the controller does the Docker
# provisioning (see tests/parallel.py).

import contextlib  # noqa: E402
import threading  # noqa: E402

from tests.compose.engine import Engine, Provisioning  # noqa: E402
from tests.parallel import (  # noqa: E402
    EMULATED,
    HANDOFF_KEY,
    Handoff,
    PlannedScheduling,
    is_controller,
    is_worker,
    scope_of,
    selects,
)
from tests.terraform.fixtures import (  # noqa: E402,F401 - registered here for every folder
    STARTED,
    emulation,
    moto_servers,
    terraform_bin,
    tf_factory,
)

TERRAFORM_TESTS = REPO / "tests" / "terraform"
COMPOSE_TESTS = REPO / "tests" / "compose"
#: Folders whose tests start servers or run long: they go out before the fast ones.
HEAVY_TESTS = tuple(
    REPO / "tests" / name for name in ("benchmark", "integration", "examples", "sso")
)
EMULATOR_TESTS = "test_apply_moto.py"
DESTROY_TEST = "test_destroy_leaves_nothing"
PROVISIONING: list[Provisioning] = []
HANDOFF: list[Path] = []
_LAST_EMULATION_READER: list[pytest.Item] = []


def _within(item: pytest.Item, folder: Path) -> bool:
    return folder in item.path.parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    terraform = [item for item in items if _within(item, TERRAFORM_TESTS)]
    emulator = [item for item in terraform if item.path.name == EMULATOR_TESTS]
    destroy = [item for item in emulator if item.name == DESTROY_TEST]
    reading = [item for item in emulator if item.name != DESTROY_TEST]
    static = [item for item in terraform if item.path.name != EMULATOR_TESTS]
    compose = [item for item in items if _within(item, COMPOSE_TESTS)]
    # The compose tests that do not read the emulator's deployments run while they apply.
    compose_first = [item for item in compose if "emulation" not in item.fixturenames]
    compose_reading = [item for item in compose if item not in compose_first]
    rest = [item for item in items if item not in terraform and item not in compose]
    heavy = [item for item in rest if any(_within(item, folder) for folder in HEAVY_TESTS)]
    light = [item for item in rest if item not in heavy]
    items[:] = [
        *compose_first, *static, *reading, *compose_reading, *heavy, *light, *destroy
    ]  # fmt: skip
    readers = [item for item in items if item not in destroy and "emulation" in item.fixturenames]
    _LAST_EMULATION_READER[:] = readers[-1:]


def start_the_emulator_with_its_unit(request: pytest.FixtureRequest, nodeid: str) -> None:
    """Under xdist, the emulator's applies start with the first test of the unit that reads
    them (on the one worker that runs it), to run while the compose tests do. A failure is not
    raised here: the tests that read the deployments meet it themselves."""
    if is_worker(request.config) and scope_of(nodeid) == EMULATED and not STARTED:
        with contextlib.suppress(Exception, pytest.skip.Exception, pytest.fail.Exception):
            request.getfixturevalue("emulation")


@pytest.fixture(autouse=True)
def _start_the_emulator_with_its_unit(request: pytest.FixtureRequest) -> None:
    start_the_emulator_with_its_unit(request, request.node.nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> PlannedScheduling:
    return PlannedScheduling(config, log)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, the controller provisions Docker from the start (its workers collect)."""
    config = session.config
    if config.option.collectonly or not is_controller(config):
        return
    if selects(config, COMPOSE_TESTS):
        from tests.compose.conftest import start_stack

        path = Handoff.new_path()
        HANDOFF.append(path)
        provisioning = Provisioning(Engine(), then=start_stack)
        PROVISIONING.append(provisioning)
        threading.Thread(
            target=_hand_over, args=(provisioning, path), name="compose-handoff", daemon=True
        ).start()


def _hand_over(provisioning: Provisioning, path: Path) -> None:
    try:
        provisioning.wait()
        stack = provisioning.result
        Handoff("ready", env_file=str(stack.env_file), port=stack.port).write(path)
    except BaseException as error:  # noqa: BLE001 - handed to the compose tests' worker
        Handoff("failed", error=f"{type(error).__name__}: {error}").write(path)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    if HANDOFF:
        node.workerinput[HANDOFF_KEY] = str(HANDOFF[0])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist, this process provisions Docker, once it knows compose tests will run."""
    if session.config.option.collectonly or is_worker(session.config):
        return
    if not PROVISIONING and any(_within(item, COMPOSE_TESTS) for item in session.items):
        from tests.compose.conftest import start_stack

        PROVISIONING.append(Provisioning(Engine(), then=start_stack))


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The emulator's destroy (~90 s of waiting) starts once nothing reads the deployments."""
    if STARTED and item in _LAST_EMULATION_READER:
        STARTED[0].start_destroy()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for provisioning in PROVISIONING:
        provisioning.engine.stop()
    for path in HANDOFF:
        path.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for provisioning in PROVISIONING:
        took = (provisioning.finished or 0) - provisioning.began
        steps = ", ".join(
            f"{step} {seconds:g} s" for step, seconds in provisioning.engine.timings.items()
        )
        terminalreporter.write_sep("=", "docker provisioning for the compose tests")
        terminalreporter.write_line(f"{took:.0f} s in the background: {steps}")
