"""Every example: a --help like mlflow's own, and one clear line (no traceback, exit code 1) when
the server is unreachable or the password is wrong."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from click.testing import CliRunner

from tests.examples.conftest import EXAMPLES, SCRIPTS, UNREACHABLE, Jobs

EXPECTED = {
    "wrong-password": (
        "rejected the login (401 Unauthorized): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    ),
    "unreachable": "cannot reach the tracking server at http://127.0.0.1:",
}


@pytest.mark.parametrize(
    ("script", "mode"),
    [*((script, "wrong-password") for script in SCRIPTS), (UNREACHABLE, "unreachable")],
)
def test_a_connection_failure_is_one_line_and_a_non_zero_exit(
    jobs: Jobs, script: str, mode: str
) -> None:
    finished = jobs.failures[script, mode].result()
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    (line,) = finished.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert EXPECTED[mode] in line
    if mode == "unreachable":
        assert line.endswith("(MLFLOW_TRACKING_URI): Connection refused")
    assert finished.stdout == ""


@pytest.fixture(scope="module")
def scripts() -> Iterator[dict[str, ModuleType]]:
    """The scripts as modules (they import their siblings, so examples/ goes on the path)."""
    loaded = set(sys.modules)
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield {name: importlib.import_module(name.removesuffix(".py")) for name in SCRIPTS}
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in set(sys.modules) - loaded:
            if getattr(sys.modules[name], "__file__", "") == str(EXAMPLES / f"{name}.py"):
                del sys.modules[name]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_explains_itself(scripts: dict[str, ModuleType], script: str) -> None:
    module = scripts[script]
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) > 1
    result = CliRunner().invoke(module.main, ["--help"], prog_name=script)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {script} [OPTIONS]")
    assert f"Example: python examples/{script}" in result.output
    assert "-h, --help" in result.output
    name_option = "--model-uri" if script == "evaluate_candidate.py" else "--experiment-name"
    assert name_option in result.output
