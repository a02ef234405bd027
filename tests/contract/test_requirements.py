"""The versions tested are the versions shipped: the image's lock is contained in the test
lock, and this very environment has those exact versions installed."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", re.MULTILINE)


def pins(path: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): ver for name, ver in PIN.findall(path.read_text())}


SERVER = pins(REPO / "mlflow-server" / "requirements.txt")
DEV = pins(REPO / "requirements-dev.txt")


def test_every_server_dependency_is_pinned() -> None:
    assert SERVER["mlflow"] == "3.17.2"
    for name in ("mlflow-skinny", "psycopg2-binary", "boto3", "sqlalchemy", "uvicorn", "click"):
        assert name in SERVER
    lines = [
        line
        for line in (REPO / "mlflow-server" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]


def test_the_test_lock_contains_the_server_lock_exactly() -> None:
    differing = {n: (v, DEV.get(n)) for n, v in SERVER.items() if DEV.get(n) != v}
    assert not differing


def test_this_environment_runs_the_locked_versions() -> None:
    mismatched = {}
    for name, pinned in DEV.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert not mismatched, "run `make install`"
