"""Code style and shell scripts: ruff and shellcheck must be clean."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import which_or_fail

REPO = Path(__file__).resolve().parents[2]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_lint_is_clean() -> None:
    result = run(which_or_fail("ruff"), "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout


def test_ruff_format_is_clean() -> None:
    result = run(which_or_fail("ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted(
        p
        for p in [*REPO.glob("**/*.sh"), REPO / ".ci" / "run"]
        if ".venv" not in p.parts and ".data" not in p.parts
    )
    assert scripts
    result = run(which_or_fail("shellcheck"), *map(str, scripts))
    assert result.returncode == 0, result.stdout
