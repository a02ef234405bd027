"""The mlflow-server image, checked statically: hadolint, non-root, healthcheck, entrypoint,
and the same pinned lock the tests install."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import which_or_fail

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "mlflow-server" / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def instructions(keyword: str) -> list[str]:
    joined = TEXT.replace("\\\n", " ")
    return [
        line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(keyword + " ")
    ]


#: the image users get, and the compose tests' stand-ins for images no registry gives them
LINTED = [DOCKERFILE, *sorted((REPO / "tests" / "compose" / "standins").glob("*/Dockerfile"))]


@pytest.mark.parametrize("dockerfile", LINTED, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = subprocess.run(
        [which_or_fail("hadolint"), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_base_image_is_pinned_to_the_python_the_tests_run_on() -> None:
    (base,) = instructions("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-\w+", base)
    assert match, base
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]


def test_runs_as_a_numeric_non_root_user() -> None:
    user = instructions("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_installs_the_pinned_lock_then_the_package_without_resolving_again() -> None:
    runs = instructions("RUN")
    assert any("-r requirements.txt" in run for run in runs)
    assert any("--no-deps" in run for run in runs)
    assert "COPY mlflow-server/requirements.txt ./requirements.txt" in TEXT


def test_healthcheck_and_entrypoint_use_the_cli() -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["mlflow-stack", "healthcheck"]')
    assert instructions("ENTRYPOINT") == ['["mlflow-stack"]']
    assert instructions("CMD") == ['["serve"]']
    assert instructions("EXPOSE") == ["5000"]


def test_no_secret_is_baked_in() -> None:
    for env in instructions("ENV") + instructions("ARG"):
        assert not re.search(r"PASSWORD|SECRET|KEY", env), env
