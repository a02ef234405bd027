"""`python -m bench --quick` against mlflow-stack: every workload runs and is reported.

The stock set-ups (a, b) need their own venv and several minutes; `make bench` runs them.
This smoke run proves the harness and the shipped stack together: zero ingestion errors,
byte-identical artifacts through the proxy, 5,000 seeded runs found in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_quick_benchmark_of_the_stack_runs_every_workload(tmp_path: Path) -> None:
    command = ["--quick", "--setups", "c", "--out", str(tmp_path), "--label", "smoke"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    c = json.loads((tmp_path / "smoke.json").read_text())["results"]["c"]

    assert set(c["latency"]) == {"log_param", "log_metric", "get_run", "search_runs"}
    for call, timing in c["latency"].items():
        assert 0 < timing["p50_ms"] <= timing["p95_ms"], call

    assert [e["clients"] for e in c["ingestion"]] == [1, 8, 32]
    for entry in c["ingestion"]:
        assert entry["errors"] == 0, entry
        assert entry["points_per_s"] > 0

    busy = c["busy"]
    assert busy["clients"] == 64 and busy["errors"] == 0, busy["last_error"]
    for call, figures in busy["by_call"].items():
        assert figures["requests"] > 0 and figures["errors"] == 0, call

    sweep = c["search"]["sweep"]
    assert [entry["runs"] for entry in sweep] == [5000, 10000]
    for entry in sweep:
        for query in ("filtered+ordered", "ordered", "tag filter"):
            assert entry[query]["p95_ms"] > 0

    assert c["artifacts"], "no artifact groups measured"
    for group, figures in c["artifacts"].items():
        assert figures["proxied_up_MBps"] > 0 and figures["direct_up_MBps"] > 0, group
        assert figures["ui_down_MBps"] > 0, group

    assert c["memory_idle"]["total_MB"] > 0
    # forked workers share their master's pages: proportional memory is below resident
    assert 0 < c["memory_idle"]["total_PSS_MB"] < c["memory_idle"]["total_MB"]
    kinds = c["memory_idle"]["processes"]
    assert kinds["mlflow-stack serve worker (forked)"]["count"] == 2, kinds
    # kill -9 of the whole server: its supervisor and the forked workers serve again
    (again,) = c["recovery"]["serving_again_s"]
    assert 0 < again < 60, again
    markdown = (tmp_path / "smoke.md").read_text()
    headings = (
        "Small requests",
        "Ingestion",
        "A busy team",
        "search_runs",
        "Artifacts",
        "Memory (MB)",
        "crash",
    )
    assert "p95 growth from 5,000 to 10,000 runs" in markdown
    for heading in headings:
        assert heading in markdown
