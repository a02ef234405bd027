"""A newcomer's first hour on the real native stack: the first `up` on chosen ports keeps them in
the new .env and leaves no FATAL line in PostgreSQL's log; `status` stays healthy while the
server is busy; the server sends no telemetry."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric

from mlflow_stack.native.service import Layout
from mlflow_stack.settings.envfile import read_env_file
from tests.conftest import LiveStack, run_cli

SETTING_PREFIXES = ("MLFLOW_STACK_", "POSTGRES_", "MLFLOW_AUTH_", "MLFLOW_FLASK_")


def test_the_first_up_keeps_the_chosen_ports_and_logs_no_fatal_line() -> None:
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-first-"))
    root.chmod(0o755)  # PostgreSQL runs as another account when we are root
    live = LiveStack.on_free_ports(root)
    live.env.pop("MAKELEVEL", None)  # as a user runs it, even under `make test`
    chosen = {name: live.env[name] for name in ("POSTGRES_PORT", "MLFLOW_STACK_PORT")}
    try:
        result = live.cli("up")
        assert result.returncode == 0, result.stderr
        assert "it keeps MLFLOW_STACK_PORT, MLFLOW_STACK_S3_ENDPOINT_URL, POSTGRES_PORT" in (
            result.stderr
        )
        saved = read_env_file(live.env_file)
        assert {name: saved[name] for name in chosen} == chosen
        live.load_settings()
        assert f"Tracking URI:  http://127.0.0.1:{chosen['MLFLOW_STACK_PORT']}" in result.stdout
        assert "log in as 'admin' with MLFLOW_AUTH_ADMIN_PASSWORD from" in result.stdout
        assert "Status: mlflow-stack status" in result.stdout  # as invoked: python -m ...
        for noise in ("FATAL", "Warning", "Traceback"):
            assert noise not in result.stdout + result.stderr

        # PostgreSQL was never asked for the tracking database before it existed
        postgres_log = Layout(live.data_dir).log("postgres").read_text()
        assert "starting PostgreSQL" in postgres_log
        assert "FATAL" not in postgres_log, postgres_log[-2000:]
        # nor does the server's log carry Starlette's deprecation of MLflow's WSGI bridge
        mlflow_log = Layout(live.data_dir).log("mlflow").read_text()
        assert "starting MLflow on" in mlflow_log
        assert "DeprecationWarning" not in mlflow_log, mlflow_log[-2000:]

        # later commands need no variables: the ports are in .env
        plain = {k: v for k, v in live.env.items() if not k.startswith(SETTING_PREFIXES)}
        status = run_cli(
            "--env-file", str(live.env_file), "status", "--data-dir", str(live.data_dir),
            env=plain, cwd=root,
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" healthy ") == 3, status.stdout

        # another port on the command line, with .env written already: refused, as `status`
        # and clients would look for the server where .env says
        moved = run_cli(
            "--env-file", str(live.env_file), "up", "--data-dir", str(live.data_dir),
            env={**plain, "MLFLOW_STACK_PORT": "5999"}, cwd=root,
        )  # fmt: skip
        assert moved.returncode != 0
        assert moved.stderr.strip().splitlines() == [
            f"error: MLFLOW_STACK_PORT=5999 differs from MLFLOW_STACK_PORT="
            f"{chosen['MLFLOW_STACK_PORT']} in {live.env_file}: set it there (status, logs and "
            "clients read the file), then run up again"
        ]
    finally:
        assert live.cli("down").returncode == 0
        shutil.rmtree(root, ignore_errors=True)


def test_status_stays_healthy_while_the_server_is_busy(
    stack: LiveStack, client: MlflowClient, experiment_id: str
) -> None:
    """`status` asks each service once; slow answers under load are not failures."""
    stop = threading.Event()
    written = []

    def write() -> None:
        run_id = client.create_run(experiment_id).info.run_id
        step = 0
        while not stop.is_set():
            now = int(time.time() * 1000)
            metrics = [Metric(f"m{i}", float(step), now, step) for i in range(200)]
            client.log_batch(run_id, metrics=metrics)
            step += 1
        written.append(step)

    writers = [threading.Thread(target=write) for _ in range(12)]
    for writer in writers:
        writer.start()
    try:
        time.sleep(2)
        verdicts = []
        for _ in range(4):
            result = stack.cli("status", "--json", timeout=120)
            verdicts.append((result.returncode, result.stdout))
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    assert sum(written) > 12, written  # the server was kept busy throughout
    for code, output in verdicts:
        assert code == 0, output


def test_the_server_sends_no_telemetry(stack: LiveStack) -> None:
    # `serve` sets MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK in-process and forks its workers,
    # so /proc shows neither; the worker's handler reads them at request time (MLflow's
    # `is_telemetry_disabled()`) and then answers its fallback without asking anyone.
    # the UI asks the server whether to send its own; the answer is no
    response = requests.get(
        f"{stack.tracking_uri}/ajax-api/3.0/mlflow/ui-telemetry", auth=stack.admin, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["disable_ui_telemetry"] is True
    # the fallback answer: MLflow asked no telemetry service for a config, as it would have
    # done without the variables (`is_telemetry_disabled()` in its handler)
    assert response.json()["ui_rollout_percentage"] == 0
