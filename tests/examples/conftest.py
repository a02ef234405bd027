"""Fixtures of the example tests: each script runs as a subprocess, as a team member would run it,
against the session's live stack (``tests/conftest.py``); the tests read back what it left.

Every script spends seconds importing MLflow, scikit-learn and friends, and there are eighteen
runs. So they do not run one after the other: the first test to ask for ``jobs`` queues them all
on a small pool of threads (one subprocess each, a few at a time), in the order the tests need
them, and every test waits only for its own results. (Selecting a single test with ``-k`` still
runs them all.) The summary at the end shows when each started and how long it took.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlflow_stack.native.processes import free_port
from tests.conftest import REPO, LiveStack

EXAMPLES = REPO / "examples"
SCRIPTS = (
    "manual_logging.py",
    "autolog_xgboost.py",
    "hyperopt_sweep.py",
    "model_registry.py",
    "evaluate_candidate.py",
)
#: Small data and few trials keep the suite fast; the scripts' defaults are larger.
ROWS = "2000"
SEED = "7"
SWEEP_TRIALS = 3
#: Subprocesses at a time: two cores, and the server's hashing wants one of them.
WORKERS = 3
#: Manual-logging runs, each in its own experiment, so that the registry can be fed one at a time:
#: from worse to better on the test month, ridge (alpha 100) < random forest < linear.
MANUAL_MODELS = {
    "random-forest": ["--model", "random-forest", "--n-estimators", "30", "--max-depth", "10"],
    "ridge": ["--model", "ridge", "--alpha", "100"],
    "linear": ["--model", "linear"],
}
UNREACHABLE = "model_registry.py"  # the script run against an unreachable server
REPORT_LINE = re.compile(r"^([a-z_]+): (.*)$")
FINISHED: list[Finished] = []


@dataclass
class Finished:
    """A script's run: exit code, output, and the ``name: value`` lines it reported."""

    script: str
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    started: float  # time.monotonic()

    @property
    def report(self) -> dict[str, str]:
        return {
            match[1]: match[2]
            for line in self.stdout.splitlines()
            if (match := REPORT_LINE.match(line))
        }

    def ok(self) -> Finished:
        assert self.returncode == 0, (
            f"{self.script} {' '.join(self.args)} exited with {self.returncode}:\n"
            f"{self.stdout[-2000:]}\n{self.stderr[-4000:]}"
        )
        return self


def run_example(script: str, *args: str, env: dict[str, str], timeout: float = 400) -> Finished:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    finished = Finished(
        script,
        list(args),
        result.returncode,
        result.stdout,
        result.stderr,
        time.monotonic() - started,
        started,
    )
    FINISHED.append(finished)
    return finished


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How long each script took (start offset, duration): the suite is meant to stay fast."""
    if not FINISHED:
        return
    origin = min(run.started for run in FINISHED)
    terminalreporter.section("example scripts")
    for run in sorted(FINISHED, key=lambda run: run.started):
        terminalreporter.write_line(
            f"+{run.started - origin:5.1f}s {run.seconds:5.1f}s exit {run.returncode} "
            f"{run.script} {' '.join(run.args)}"[:160]
        )


@dataclass
class RegistryStep:
    """One run of the registry script and the registry as it was right after it."""

    run: Finished
    aliases: dict[str, str]
    versions: dict[str, Any]  # version -> ModelVersion


@dataclass
class Jobs:
    """The futures of every script run the example tests look at."""

    tag: str
    env: dict[str, str]
    data_dir: Path
    experiments: dict[str, str] = field(default_factory=dict)
    manual: dict[str, Future[Finished]] = field(default_factory=dict)
    autolog: Future[Finished] | None = None
    sweep: Future[Finished] | None = None
    registry: Future[list[RegistryStep]] | None = None
    evaluation: dict[str, Future[Finished]] = field(default_factory=dict)
    failures: dict[tuple[str, str], Future[Finished]] = field(default_factory=dict)
    model_name: str = ""

    def name(self, what: str) -> str:
        return f"examples-{self.tag}-{what}"

    def common_args(self) -> list[str]:
        return ["--rows", ROWS, "--seed", SEED]

    def data_args(self) -> list[str]:
        return [*self.common_args(), "--data-dir", str(self.data_dir)]


def client_env(stack: LiveStack) -> dict[str, str]:
    """What a team member exports, and no more: no storage credentials, and nothing that quiets
    the scripts (test_output.py checks that they are quiet by themselves)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(
        MLFLOW_TRACKING_URI=stack.tracking_uri,
        MLFLOW_TRACKING_USERNAME=stack.admin[0],
        MLFLOW_TRACKING_PASSWORD=stack.admin[1],
        MLFLOW_DISABLE_TELEMETRY="true",  # no phoning home from the test machine
    )
    # Python's default warning filters, as in a terminal: pytest's own would not reach the
    # subprocesses anyway, but a PYTHONWARNINGS inherited from a CI job would hide them.
    env.pop("PYTHONWARNINGS", None)
    return env


def registry_chain(jobs: Jobs, client: MlflowClient) -> list[RegistryStep]:
    """Feed the registry one experiment at a time, then roll back, then re-run the last step."""
    steps = [
        "random-forest",  # the first champion
        "ridge",  # a worse challenger
        "linear",  # a better challenger
        None,  # --rollback
        "linear",  # again: nothing new
    ]
    done = []
    for model in steps:
        if model is None:
            args = ["--rollback"]
        else:
            jobs.manual[model].result().ok()
            args = ["--experiment-name", jobs.experiments[f"manual-{model}"]]
        registry = ["--model-name", jobs.model_name, "--top-n", "1"]
        run = run_example("model_registry.py", *registry, *args, *jobs.common_args(), env=jobs.env)
        aliases = dict(client.get_registered_model(jobs.model_name).aliases)
        versions = {
            v.version: v for v in client.search_model_versions(f"name = '{jobs.model_name}'")
        }
        done.append(RegistryStep(run, aliases, versions))
        if run.returncode != 0:
            break
    return done


@pytest.fixture(scope="session")
def jobs(stack: LiveStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    env = client_env(stack)
    queue = Jobs(tag=uuid.uuid4().hex[:8], env=env, data_dir=tmp_path_factory.mktemp("trips"))
    queue.model_name = queue.name("duration")
    client = MlflowClient(stack.tracking_uri)
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="example")

    def submit(script: str, *args: str, env: dict[str, str] = env) -> Future[Finished]:
        return pool.submit(run_example, script, *args, env=env)

    def experiment(what: str) -> list[str]:
        queue.experiments[what] = queue.name(what)
        return ["--experiment-name", queue.experiments[what]]

    # The longest path is the manual runs, then the five registry steps one after the other:
    # they go first, and the other scripts keep the other workers busy meanwhile.
    for model, model_args in MANUAL_MODELS.items():
        queue.manual[model] = submit(
            "manual_logging.py",
            *experiment(f"manual-{model}"),
            *["--developer", "ada", *model_args, *queue.data_args()],
        )
    queue.registry = pool.submit(registry_chain, queue, client)
    queue.sweep = submit(
        "hyperopt_sweep.py",
        *experiment("sweep"),
        *["--max-evals", str(SWEEP_TRIALS), "--num-boost-round", "60", *queue.data_args()],
    )
    queue.autolog = submit(
        "autolog_xgboost.py",
        *experiment("autolog"),
        *["--developer", "ada", "--num-boost-round", "60", *queue.data_args()],
    )
    evaluation = experiment("evaluation")

    def evaluate(*thresholds: str) -> Finished:
        candidate = queue.manual["linear"].result().ok().report["model_uri"]
        return run_example(
            "evaluate_candidate.py",
            *["--model-uri", candidate, *evaluation, *thresholds, *queue.common_args()],
            env=env,
        )

    queue.evaluation["passes"] = pool.submit(evaluate, "--max-rmse", "8")
    queue.evaluation["fails"] = pool.submit(evaluate, "--max-rmse", "1", "--fail-on-reject")

    # Every script with a wrong password: each checks the login before anything else. Nothing
    # listening at the tracking URI takes the same path, shown once (each run costs seconds of
    # imports, and this machine has two cores).
    wrong_password = {**env, "MLFLOW_TRACKING_PASSWORD": stack.admin[1] + "-wrong"}
    unreachable = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    for script in SCRIPTS:
        args = ["--model-uri", "models:/anything@champion"] if "evaluate" in script else []
        queue.failures[script, "wrong-password"] = submit(script, *args, env=wrong_password)
    queue.failures[UNREACHABLE, "unreachable"] = submit(UNREACHABLE, env=unreachable)
    try:
        yield queue
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
