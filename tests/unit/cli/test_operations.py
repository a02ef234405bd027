"""`backup`, `restore` and `gc` as commands: their option checks, the retention default, what
gc prints for a real (loopback) gc endpoint's answers, `gc --every` as a real process that
SIGTERM stops, and backup and restore refusing before they change anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.gc.collector import Summary
from mlflow_stack.native.processes import free_port
from tests.conftest import WITH_S3
from tests.unit.cli.conftest import invoke


@dataclass
class Endpoint:
    """A gc endpoint on 127.0.0.1 answering ``summaries`` in turn (the last one again)."""

    url: str = ""
    summaries: list[Summary] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(summaries=[Summary(False, 30, 1)])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            document = json.loads(self.rfile.read(length))
            state.requests.append({**document, "authorization": self.headers["Authorization"]})
            summary = state.summaries.pop(0) if len(state.summaries) > 1 else state.summaries[0]
            body = json.dumps(summary.as_dict()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def gc(tmp_path: Path, endpoint: Endpoint, *args: str, **env: str) -> Any:
    return invoke(
        tmp_path,
        "gc",
        *args,
        env={
            "MLFLOW_TRACKING_URI": endpoint.url,
            "MLFLOW_TRACKING_USERNAME": "ops",
            "MLFLOW_TRACKING_PASSWORD": "pw",
            **env,
        },
    )


# --- gc's options ---


def test_a_bad_interval_is_clicks_error_naming_the_option(tmp_path: Path) -> None:
    result = invoke(tmp_path, "gc", "--every", "1w")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for --every: '1w' is not an interval such as 30m, 24h or 7d"
    )


def test_days_out_of_range_are_refused_by_click(tmp_path: Path) -> None:
    result = invoke(tmp_path, "gc", "--older-than", "-1")
    assert result.exit_code == 2
    assert "Invalid value for '--older-than'" in result.stderr


def test_the_retention_defaults_to_the_setting_in_the_environment_or_the_file(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    assert gc(tmp_path, endpoint).exit_code == 0
    assert gc(tmp_path, endpoint, MLFLOW_STACK_GC_RETENTION_DAYS="12").exit_code == 0
    (tmp_path / ".env").write_text("MLFLOW_STACK_GC_RETENTION_DAYS=5\n")
    assert gc(tmp_path, endpoint).exit_code == 0
    assert gc(tmp_path, endpoint, "--older-than", "0.5").exit_code == 0
    assert [r["older_than_days"] for r in endpoint.requests] == [30, 12, 5, 0.5]


def test_a_bad_retention_setting_is_one_line_naming_it_and_asks_nothing(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    result = gc(tmp_path, endpoint, MLFLOW_STACK_GC_RETENTION_DAYS="a month")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: MLFLOW_STACK_GC_RETENTION_DAYS='a month' must be a whole number between 0 and "
        "36500\n",
    )
    assert endpoint.requests == []


# --- what gc prints ---


def test_gc_prints_the_summed_batches_in_one_sentence(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.summaries = [
        Summary(True, 7, 1, runs=["a"], objects=2, bytes=20, next_page_token="t"),
        Summary(True, 7, 1, experiments=["4"], skipped=["s3://other/x (not in the bucket)"]),
    ]
    result = gc(tmp_path, endpoint, "--older-than", "7", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "gc would delete 1 run and 1 experiment deleted more than 7 days ago, with 2 objects "
        "(20 bytes).",
        "  left alone: s3://other/x (not in the bucket)",
    ]
    assert [(r["dry_run"], r.get("page_token")) for r in endpoint.requests] == [
        (True, None),
        (True, "t"),
    ]
    assert endpoint.requests[0]["authorization"].startswith("Basic ")


def test_a_failed_item_is_on_stderr_and_makes_the_exit_code_1(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.summaries = [Summary(False, 7, 1, runs=["a"], failed=["run b: AccessDenied"])]
    result = gc(tmp_path, endpoint)
    assert result.exit_code == 1
    assert result.stdout.startswith("gc deleted 1 run and 0 experiments")
    assert result.stderr.splitlines() == [
        "  failed: run b: AccessDenied",
        "error: 1 could not be deleted; the next gc retries",
    ]


def test_json_is_the_summary_for_scripts(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.summaries = [Summary(False, 30, 9, runs=["a"], objects=1, bytes=3)]
    result = gc(tmp_path, endpoint, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == Summary(False, 30, 9, ["a"], [], 1, 3).as_dict()


def test_the_option_names_the_server_over_the_environment(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    elsewhere = f"http://127.0.0.1:{free_port()}"
    result = gc(tmp_path, endpoint, "--tracking-uri", elsewhere)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot reach the MLflow server at {elsewhere}: Connection refused\n"
    )


# --- gc --every, as the compose gc service runs it ---


def test_gc_every_keeps_a_health_file_and_stops_on_sigterm_with_0(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    health = tmp_path / "gc-ok"
    env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_URI": endpoint.url,
        "MLFLOW_TRACKING_USERNAME": "ops",
        "MLFLOW_TRACKING_PASSWORD": "pw",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow_stack", "gc", "--every", "1h", "--health-file", str(health)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not health.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert health.exists(), process.stderr.read() if process.poll() is not None else ""
        process.send_signal(signal.SIGTERM)  # as `docker compose down` does
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert out.startswith("gc deleted 0 runs and 0 experiments deleted more than 30 days")
        assert len(endpoint.requests) == 1
    finally:
        process.kill()
        process.communicate()


# --- backup and restore ---


def _settings_file(tmp_path: Path, **extra: str) -> None:
    values = {**WITH_S3, **extra}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_a_backup_without_settings_names_what_is_missing(tmp_path: Path) -> None:
    result = invoke(tmp_path, "backup", str(tmp_path / "dest"))
    assert result.exit_code == 2
    assert "error: POSTGRES_PASSWORD" in result.stderr
    assert not (tmp_path / "dest").exists()


def test_a_backup_with_postgresql_down_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    port = free_port()
    _settings_file(tmp_path, POSTGRES_PORT=str(port))
    result = invoke(tmp_path, "backup", str(tmp_path / "dest"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach PostgreSQL at 127.0.0.1:{port}: ")
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_jobs_are_between_1_and_64(tmp_path: Path, command: str) -> None:
    for jobs in ("0", "65"):
        result = invoke(tmp_path, command, str(tmp_path / "x"), "--jobs", jobs)
        assert result.exit_code == 2
        assert "Invalid value for '--jobs'" in result.stderr


def test_a_restore_from_a_directory_without_manifest_is_refused_first(tmp_path: Path) -> None:
    _settings_file(tmp_path, POSTGRES_PORT=str(free_port()))  # PostgreSQL is not even asked
    (tmp_path / "not-a-backup").mkdir()
    result = invoke(tmp_path, "restore", str(tmp_path / "not-a-backup"))
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: {tmp_path / 'not-a-backup'} has no manifest.json: it is not a complete backup\n",
    )
