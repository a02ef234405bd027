"""/health follows PostgreSQL; /health/live only the server; status says which is down."""

from __future__ import annotations

import json
import time

import requests

from tests.conftest import LiveStack


def wait_for_status(url: str, status: int, timeout: float = 20) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(url, timeout=10)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def test_health_is_503_while_postgres_is_down_and_200_again_after(stack: LiveStack) -> None:
    health = stack.tracking_uri + "/health"
    assert requests.get(health, timeout=10).status_code == 200
    result = stack.cli("down", "postgres")
    assert result.returncode == 0, result.stderr
    try:
        down = wait_for_status(health, 503)
        assert down.status_code == 503
        assert "backend store is unreachable" in down.text
        assert requests.get(stack.tracking_uri + "/health/live", timeout=10).status_code == 200
        statuses = {s["name"]: s for s in json.loads(stack.cli("status", "--json").stdout)}
        assert statuses["mlflow"]["state"] == "unhealthy"
        assert "503" in statuses["mlflow"]["detail"]
    finally:
        stack.up()
    assert wait_for_status(health, 200).status_code == 200
    api = requests.get(
        stack.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1",
        auth=stack.admin,
        timeout=30,
    )
    assert api.status_code == 200  # the server's pool reconnected by itself
