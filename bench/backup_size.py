"""Backup and restore time and size for a stack with many runs and artifacts.

    .venv/bin/python -m bench.backup_size --runs 10000 --artifact-mb 1024

Starts a native stack (free ports, temporary directory), fills it through the API as clients
would (per run: create_run, one log_batch of 5 params, 2 tags and 3 metrics x 10 steps, then
set_terminated, from --threads parallel clients; artifacts are random, incompressible files of
--object-mb uploaded through the server with log_artifact), then times `mlflow-stack backup`,
measures the backup on disk, starts a second, empty stack, stops its server, times
`mlflow-stack restore` and the first `up` after it, and checks the restored run and object
counts. Everything is removed at the end unless --keep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from bench.seed import seed_runs
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import merged_environment
from mlflow_stack.stores.database import connect
from mlflow_stack.stores.storage import s3_client

CLIENT_PREFIXES = ("MLFLOW_", "AWS_", "PG", "POSTGRES_")


class Stack:
    """A native stack driven through the CLI, as a user would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o755)
        ports: list[int] = []
        while len(ports) < 3:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_PREFIXES)}
        self.env.update(
            POSTGRES_PORT=str(ports[0]),
            MLFLOW_STACK_S3_ENDPOINT_URL=f"http://127.0.0.1:{ports[1]}",
            MLFLOW_STACK_PORT=str(ports[2]),
        )
        self.settings: Any = None

    def cli(self, *args: str, data_dir: bool = False) -> float:
        """Run `mlflow-stack ARGS`; the seconds it took."""
        command = [sys.executable, "-m", "mlflow_stack", "--env-file", str(self.root / ".env")]
        extra = ["--data-dir", str(self.root / "data")] if data_dir else []
        began = time.monotonic()
        result = subprocess.run(
            [*command, *args, *extra],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=7200,
            check=False,
        )
        took = time.monotonic() - began
        if result.returncode != 0:
            raise click.ClickException(f"mlflow-stack {args[0]} failed:\n{result.stderr}")
        return took

    def up(self) -> float:
        took = self.cli("up", data_dir=True)
        self.settings = Settings.from_env(merged_environment(self.root / ".env", self.env))
        return took

    def set_admin_password(self, password: str) -> None:
        path = self.root / ".env"
        lines = [
            f"MLFLOW_AUTH_ADMIN_PASSWORD={password}"
            if line.startswith("MLFLOW_AUTH_ADMIN_PASSWORD=")
            else line
            for line in path.read_text().splitlines()
        ]
        path.write_text("\n".join(lines) + "\n")

    def run_count(self) -> int:
        conn = connect(self.settings, self.settings.postgres_db)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM runs")
                return cursor.fetchone()[0]
        finally:
            conn.close()


def _log_run(client: MlflowClient, experiment: str, index: int) -> str:
    run_id = client.create_run(experiment, run_name=f"run-{index}").info.run_id
    client.log_batch(
        run_id,
        metrics=[
            Metric(key, 1.0 / (step + 1) + index, 1_767_225_600_000 + step, step)
            for key in ("rmse", "mae", "r2")
            for step in range(10)
        ],
        params=[Param(f"p{i}", str(index * i)) for i in range(5)],
        tags=[RunTag("team", f"team-{index % 5}"), RunTag("index", str(index))],
    )
    client.set_terminated(run_id)
    return run_id


def _seeded_runs(stack: Stack, client: MlflowClient, experiment: str, runs: int) -> list[str]:
    """Rows COPied into PostgreSQL shaped as MLflow writes them (bench.seed, as `make bench`
    does for its 100k runs): 5 params, 2 tags, 3 metrics per run."""
    settings = stack.settings
    seed_runs(
        settings.backend_store_uri,
        settings.postgres_password,
        experiment_id=int(experiment),
        artifact_root=client.get_experiment(experiment).artifact_location,
        total=runs,
    )
    conn = connect(settings, settings.postgres_db)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT run_uuid FROM runs ORDER BY start_time")
            return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


def populate(stack: Stack, options: dict[str, Any]) -> int:
    """Fill the stack; returns the number of artifact files uploaded through the server."""
    os.environ["MLFLOW_TRACKING_USERNAME"] = stack.settings.admin_username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack.settings.admin_password
    client = MlflowClient(stack.settings.tracking_uri)
    experiment = client.create_experiment("backup-size")
    runs, object_mb = options["runs"], options["object_mb"]
    files = min(options["artifact_mb"] // object_mb, runs) if options["artifact_mb"] else 0
    scratch = Path(tempfile.mkdtemp(prefix="backup-size-files-"))
    done = [0]
    lock = threading.Lock()

    def attach(run_id: str, index: int) -> None:
        if index < files:
            path = scratch / f"blob-{index}.bin"
            path.write_bytes(os.urandom(object_mb * 2**20))  # incompressible
            client.log_artifact(run_id, str(path))
            path.unlink()
        with lock:
            done[0] += 1
            if done[0] % 1000 == 0:
                click.echo(f"  {done[0]:,} runs", err=True)

    with ThreadPoolExecutor(max_workers=options["threads"]) as pool:
        if options["via"] == "api":
            run_ids = list(pool.map(lambda i: _log_run(client, experiment, i), range(runs)))
        else:
            run_ids = _seeded_runs(stack, client, experiment, runs)
        try:
            list(pool.map(attach, run_ids, range(len(run_ids))))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return files


def disk_usage(path: Path) -> tuple[int, int, int]:
    """(files, bytes, bytes allocated on disk) below path."""
    count = size = allocated = 0
    for item in path.rglob("*"):
        if item.is_file():
            info = item.stat()
            count, size, allocated = (
                count + 1,
                size + info.st_size,
                allocated + info.st_blocks * 512,
            )
    return count, size, allocated


@click.command()
@click.option("--runs", default=10_000, show_default=True, help="Runs to create.")
@click.option("--artifact-mb", default=1024, show_default=True, help="Artifact megabytes.")
@click.option("--object-mb", default=1, show_default=True, help="Size of each artifact file.")
@click.option("--threads", default=8, show_default=True, help="Parallel API clients.")
@click.option(
    "--via",
    type=click.Choice(["sql", "api"]),
    default="sql",
    show_default=True,
    help="Create runs with COPY into PostgreSQL (fast) or through the REST API (~7 runs/s "
    "here); artifacts always go through the server.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write JSON.")
@click.option("--keep", is_flag=True, help="Keep the stacks' directories and the backup.")
def main(  # noqa: PLR0917 - click passes options positionally
    runs: int,
    artifact_mb: int,
    object_mb: int,
    threads: int,
    via: str,
    json_path: Path | None,
    keep: bool,
) -> None:
    """Time `mlflow-stack backup` and `restore` on a stack of RUNS runs and ARTIFACT-MB of
    artifacts, and measure the backup's size."""
    work = Path(tempfile.mkdtemp(prefix="backup-size-"))
    work.chmod(0o755)  # PostgreSQL runs as another account when we are root
    source, target = Stack(work / "a"), Stack(work / "b")
    backup = work / "backup"
    figures: dict[str, Any] = {
        "runs": runs,
        "artifact_mb": artifact_mb,
        "object_mb": object_mb,
        "threads": threads,
        "via": via,
    }
    try:
        source.up()
        click.echo(f"populating {runs:,} runs and {artifact_mb} MB of artifacts...", err=True)
        began = time.monotonic()
        figures["artifact_files"] = populate(source, figures)
        figures["populate_s"] = round(time.monotonic() - began, 1)
        figures["backup_s"] = round(source.cli("backup", str(backup)), 1)
        files, size, allocated = disk_usage(backup)
        manifest = json.loads((backup / "manifest.json").read_text())
        figures.update(
            backup_files=files,
            backup_bytes=size,
            backup_allocated_bytes=allocated,
            dump_bytes={r: d["bytes"] for r, d in manifest["databases"].items()},
            objects=manifest["objects"]["count"],
        )
        admin_password = source.settings.admin_password
        source.cli("down", data_dir=True)
        target.up()
        target.cli("down", "mlflow", data_dir=True)
        figures["restore_s"] = round(target.cli("restore", str(backup)), 1)
        target.set_admin_password(admin_password)
        figures["first_up_after_restore_s"] = round(target.up(), 1)
        figures["restored_runs"] = target.run_count()
        listed = sum(
            page.get("KeyCount", 0)
            for page in _s3(target)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=target.settings.s3_bucket)
        )
        figures["restored_objects"] = listed
        if figures["restored_runs"] != runs or listed != figures["objects"]:
            raise click.ClickException(f"restored counts differ: {figures}")
    finally:
        for stack in (source, target):
            if (stack.root / "data").exists():
                try:
                    stack.cli("down", data_dir=True)
                except click.ClickException as error:
                    click.echo(str(error), err=True)
        if keep:
            click.echo(f"kept {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=2)
    click.echo(text)
    if json_path:
        json_path.write_text(text + "\n")


def _s3(stack: Stack) -> Any:
    return s3_client(stack.settings, timeout=60)


if __name__ == "__main__":
    main()
