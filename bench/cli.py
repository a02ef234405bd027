"""``python -m bench``: stock MLflow against mlflow-stack, side by side on this machine."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import mlflow

from bench import report, workloads
from bench.setups import REPO, MlflowStack, Running, StockOnStackParts, StockSqlite

log = logging.getLogger("bench")
WORKLOADS = ("latency", "ingestion", "busy", "search", "artifacts", "recovery")


def _drive(running: Running, sizes: workloads.Sizes, files: dict[str, list[Path]],
           scratch: Path, only: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    time.sleep(5)  # let start-up work settle before the idle memory reading
    result: dict[str, Any] = {"title": running.title, "memory_idle": workloads.memory(running)}
    steps = {
        "latency": lambda: workloads.latency(running, sizes),
        "ingestion": lambda: [
            workloads.ingestion(running, clients, runs) for clients, runs in sizes.ingestion.items()
        ],
        "busy": lambda: workloads.busy(running, sizes),
        "search": lambda: workloads.search_at_scale(running, sizes),
        "artifacts": lambda: workloads.artifacts(running, files, scratch),
    }
    for name in only:
        if name in steps:
            began = time.monotonic()
            result[name] = steps[name]()
            log.info("(%s) %s done in %.0f s", running.key, name, time.monotonic() - began)
    result["memory_after_load"] = workloads.memory(running)
    if "recovery" in only:  # last: it kills the server
        result["recovery"] = workloads.recovery(running, sizes)
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of every workload.")
@click.option(
    "--setups",
    default="abc",
    show_default=True,
    help="Set-ups to run: a (stock, sqlite), b (stock on the stack's PostgreSQL + S3), "
    "c (mlflow-stack).",
)
@click.option(
    "--only",
    type=click.Choice(WORKLOADS),
    multiple=True,
    help="Run only these workloads (repeatable); default: all.",
)
@click.option(
    "--stack-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a setting of (c) to try a knob, e.g. MLFLOW_STACK_WORKERS=4 (repeatable).",
)
@click.option(
    "--stock-python",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO / ".venv" / "stock" / "bin" / "python",
    show_default=True,
    help="Python of the stock MLflow venv (`make bench` creates it).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO / "bench" / "results",
    show_default=True,
    help="Where the JSON and Markdown results go.",
)
@click.option(
    "--million",
    is_flag=True,
    help=f"Grow the ordered-search sweep to {workloads.MILLION:,} runs (seeding takes minutes).",
)
@click.option("--label", help="File name of the results (default: date and mode).")
def main(  # noqa: PLR0917 - click passes options positionally
    quick: bool,
    setups: str,
    only: tuple[str, ...],
    stack_env: tuple[str, ...],
    stock_python: Path,
    out: Path,
    label: str | None,
    million: bool,
) -> None:
    """Start stock MLflow set-ups and mlflow-stack one after another, drive each with the same
    client workloads, and print a table of absolute figures and ratios."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if any(k in setups for k in "ab") and not stock_python.exists():
        raise click.UsageError(f"{stock_python} is missing: run `make bench` to create it")
    if "b" in setups and "c" not in setups:
        raise click.UsageError("set-up b runs on c's PostgreSQL and S3: include c")
    overrides = dict(item.split("=", 1) for item in stack_env)
    sizes = workloads.QUICK if quick else workloads.FULL
    if million:
        sizes = dataclasses.replace(sizes, search_runs=(*sizes.search_runs, workloads.MILLION))
    only = only or WORKLOADS
    root = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    root.chmod(0o755)
    files = workloads.make_artifact_files(root / "files", sizes) if "artifacts" in only else {}
    scratch = root / "scratch"
    scratch.mkdir()
    results: dict[str, Any] = {}
    stack = MlflowStack(root, overrides) if "c" in setups else None
    try:
        if "a" in setups:
            a = StockSqlite(stock_python, root)
            try:
                results["a"] = _drive(a.start(), sizes, files, scratch, only)
            finally:
                a.stop()
        if stack is not None:
            results["c"] = _drive(stack.start(), sizes, files, scratch, only)
            if "b" in setups:
                stack.stop_server_only()
                b = StockOnStackParts(stock_python, root, stack)
                try:
                    results["b"] = _drive(b.start(), sizes, files, scratch, only)
                finally:
                    b.stop()
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(root, ignore_errors=True)

    meta = {
        "mode": "quick" if quick else "full",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores {platform.machine()}, "
        f"Python {platform.python_version()}",
        "mlflow": mlflow.__version__,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "stack_overrides": overrides,
    }
    out.mkdir(parents=True, exist_ok=True)
    name = label or f"{datetime.date.today()}-{meta['mode']}"
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    markdown = report.render(meta, results)
    (out / f"{name}.md").write_text(markdown)
    click.echo(markdown)
    click.echo(f"written: {out / name}.json and .md", err=True)
