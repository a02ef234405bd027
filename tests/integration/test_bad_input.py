"""Every kind of bad input gets a clear 4xx from the live server, never a 500 or an HTML page,
and nothing of it is stored: read back through the API and straight from PostgreSQL and S3."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import LiveStack


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # may contain {run} and {experiment}
    body: str | bytes | None = None  # raw bytes on the wire; {run} is filled in
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)


def raw_metric(value: str, **extra: Any) -> str:
    fields = {"run_id": "{run}", "key": "m", "timestamp": 1, "step": 0, **extra}
    text = json.dumps(fields)
    return text[:-1] + f', "value": {value}}}'


CASES = {
    # 5. values over MLflow's limits are refused, not cut short
    "param value of 6,001 characters": Case(
        "POST", "/api/2.0/mlflow/runs/log-parameter",
        json.dumps({"run_id": "{run}", "key": "long", "value": "x" * 6001}),
    ),
    "tag value of 8,001 characters": Case(
        "POST", "/api/2.0/mlflow/runs/set-tag",
        json.dumps({"run_id": "{run}", "key": "long", "value": "x" * 8001}),
    ),
    "param of 6,001 characters in log_batch": Case(
        "POST", "/api/2.0/mlflow/runs/log-batch",
        json.dumps({"run_id": "{run}", "params": [{"key": "long", "value": "x" * 6001}]}),
    ),
    # 6. numbers JSON has not, or that do not fit
    "bare NaN metric": Case("POST", "/api/2.0/mlflow/runs/log-metric", raw_metric("NaN")),
    "bare Infinity metric": Case("POST", "/api/2.0/mlflow/runs/log-metric", raw_metric("Infinity")),
    "bare -Infinity metric": Case(
        "POST", "/api/2.0/mlflow/runs/log-metric", raw_metric("-Infinity")
    ),
    "metric of 1e400": Case("POST", "/api/2.0/mlflow/runs/log-metric", raw_metric("1e400")),
    "step of 2**70": Case(
        "POST", "/api/2.0/mlflow/runs/log-metric",
        raw_metric("1.0").replace('"step": 0', f'"step": {2**70}'),
    ),
    "timestamp of 2**70": Case(
        "POST", "/api/2.0/mlflow/runs/log-metric",
        raw_metric("1.0").replace('"timestamp": 1', f'"timestamp": {2**70}'),
    ),
    "bare NaN in log_batch": Case(
        "POST", "/api/2.0/mlflow/runs/log-batch",
        '{"run_id": "{run}", "metrics": [{"key": "m", "value": NaN, "timestamp": 1, "step": 0}]}',
    ),
    # 7. NUL characters
    "NUL in a param value": Case(
        "POST", "/api/2.0/mlflow/runs/log-parameter",
        json.dumps({"run_id": "{run}", "key": "nul", "value": "a\x00b"}),
    ),
    "NUL in a tag": Case(
        "POST", "/api/2.0/mlflow/runs/set-tag",
        json.dumps({"run_id": "{run}", "key": "nul", "value": "a\x00b"}),
    ),
    "NUL in a run name": Case(
        "POST", "/api/2.0/mlflow/runs/update",
        json.dumps({"run_id": "{run}", "run_name": "renamed\x00"}),
    ),
    "NUL in an experiment name": Case(
        "POST", "/api/2.0/mlflow/experiments/create", json.dumps({"name": "bad-input\x00exp"})
    ),
    "NUL in a model description": Case(
        "POST", "/api/2.0/mlflow/registered-models/create",
        json.dumps({"name": "bad-input-model", "description": "a\x00b"}),
    ),
    "NUL in a query parameter": Case(
        "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=a%00b"
    ),
    # 9. bodies that are not JSON objects, and backslash paths
    "a JSON list": Case("POST", "/api/2.0/mlflow/runs/log-parameter", "[1, 2]"),
    "a JSON string": Case("POST", "/api/2.0/mlflow/runs/log-parameter", '"text"'),
    "JSON null": Case("POST", "/api/2.0/mlflow/runs/log-parameter", "null"),
    "JSON nested 100,000 deep": Case(
        "POST", "/api/2.0/mlflow/runs/log-parameter", "[" * 100_000 + "]" * 100_000
    ),
    "not JSON": Case("POST", "/api/2.0/mlflow/runs/log-parameter", "{run_id: x"),
    "backslash artifact path (download)": Case(
        "GET", "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/..%5c..%5cx"
    ),
    "backslash artifact path (upload)": Case(
        "PUT", "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/a%5cb.txt", b"x"
    ),
    "backslash artifact path (list)": Case(
        "GET", "/api/2.0/mlflow/artifacts/list?run_id={run}&path=..%5c..%5cx"
    ),
    "backslash artifact path (UI download)": Case("GET", "/get-artifact?run_id={run}&path=..%5cx"),
    # 11. wrong types (for a non-admin this reached PostgreSQL)
    "run_id as a number": Case(
        "POST", "/api/2.0/mlflow/runs/log-parameter",
        json.dumps({"run_id": 31, "key": "k", "value": "v"}),
    ),
    "experiment_ids as numbers": Case(
        "POST", "/api/2.0/mlflow/runs/search", json.dumps({"experiment_ids": [1]})
    ),
    # 8. credentials that are not basic
    "Bearer token": Case(
        "GET", "/api/2.0/mlflow/runs/get?run_id={run}", status=401,
        headers={"Authorization": "Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"},
    ),
    "Digest credentials": Case(
        "GET", "/ajax-api/2.0/mlflow/runs/get?run_id={run}", status=401,
        headers={"Authorization": 'Digest username="admin"'},
    ),
    "Bearer token on an artifact route": Case(
        "GET", "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/a.txt",
        status=401, headers={"Authorization": "Bearer x"},
    ),
}  # fmt: skip


def send(stack: LiveStack, case: Case, run_id: str, experiment_id: str, auth: Any) -> Any:
    def fill(text: str) -> str:
        return text.replace("{run}", run_id).replace("{experiment}", experiment_id)

    body = case.body
    if isinstance(body, str):
        body = fill(body).encode()
    headers = {"Content-Type": "application/json", **case.headers}
    return requests.request(
        case.method,
        stack.tracking_uri + fill(case.path),
        data=body,
        headers=headers,
        auth=None if "Authorization" in case.headers else auth,
        timeout=30,
    )


def stored_rows(stack: LiveStack, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = stack.pg()
    try:
        with conn.cursor() as cursor:
            rows = {}
            for table, columns in (
                ("params", "key, value"),
                ("tags", "key, value"),
                ("metrics", "key, value, timestamp, step, is_nan"),
                ("latest_metrics", "key, value, timestamp, step, is_nan"),
            ):
                cursor.execute(
                    f"SELECT {columns} FROM {table} WHERE run_uuid = %s ORDER BY key",  # noqa: S608
                    (run_id,),
                )
                rows[table] = cursor.fetchall()
            cursor.execute("SELECT name FROM runs WHERE run_uuid = %s", (run_id,))
            rows["name"] = cursor.fetchall()
            return rows
    finally:
        conn.close()


def test_every_bad_input_gets_a_clear_4xx_and_nothing_is_stored(
    stack: LiveStack, client: Any, experiment_id: str
) -> None:
    run = client.create_run(experiment_id, run_name="untouched")
    run_id = run.info.run_id
    client.log_param(run_id, "kept", "yes")
    before = stored_rows(stack, run_id)
    objects_before = _objects(stack, experiment_id)
    models_before = {m.name for m in client.search_registered_models()}

    failures = []
    for name, case in CASES.items():
        began = time.monotonic()
        answer = send(stack, case, run_id, experiment_id, stack.admin)
        elapsed = time.monotonic() - began
        problem = _check_answer(answer, case)
        if problem or elapsed > 5:
            failures.append(f"{name}: {problem or f'took {elapsed:.1f} s'}")
    assert not failures, "\n".join(failures)

    assert stored_rows(stack, run_id) == before
    assert _objects(stack, experiment_id) == objects_before
    assert {m.name for m in client.search_registered_models()} == models_before
    assert not [e for e in client.search_experiments() if "\x00" in e.name]


def _check_answer(answer: requests.Response, case: Case) -> str:
    if answer.status_code != case.status:
        return f"HTTP {answer.status_code} instead of {case.status}: {answer.text[:200]}"
    if answer.text.lstrip().startswith("<"):
        return f"an HTML page: {answer.text[:100]}"
    if case.status == 400:
        error = answer.json()
        if error.get("error_code") != "INVALID_PARAMETER_VALUE" or not error.get("message"):
            return f"not MLflow's error format: {answer.text[:200]}"
    return ""


def _objects(stack: LiveStack, experiment_id: str) -> list[str]:
    listed = stack.s3().list_objects_v2(Bucket=stack.settings.s3_bucket, Prefix=f"{experiment_id}/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_the_clients_quoted_non_finite_values_still_work(client: Any, experiment_id: str) -> None:
    import math
    import sys

    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", float("nan"), step=1)
    client.log_metric(run_id, "loss", float("inf"), step=2)
    history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert math.isnan(history[0].value)
    assert history[1].value >= sys.float_info.max  # MLflow's SQL store keeps inf as the max


def test_a_non_admin_never_sees_sql_text(stack: LiveStack, experiment_id: str) -> None:
    from mlflow.server import get_app_client

    name, password = f"typo-{uuid.uuid4().hex[:6]}", "typo-password-123456"
    get_app_client("basic-auth", tracking_uri=stack.tracking_uri).create_user(name, password)
    api = stack.tracking_uri + "/api/2.0/mlflow"
    for path, body in [
        ("/runs/log-parameter", {"run_id": 31, "key": "k", "value": "v"}),
        ("/runs/set-tag", {"run_id": {"$ne": None}, "key": "k", "value": "v"}),
        ("/runs/delete", {"run_id": ["x"]}),
        ("/experiments/delete", {"experiment_id": 7.5}),
        ("/experiments/update", {"experiment_id": True, "new_name": "x"}),
    ]:
        answer = requests.post(api + path, json=body, auth=(name, password), timeout=30)
        assert answer.status_code == 400, (path, answer.text)
        text = answer.text.lower()
        for leak in ("select", "operator does not exist", 'sqlstate": "42', "psycopg", "where"):
            assert leak not in text, (path, answer.text)


def test_the_mlflow_client_gets_an_error_for_a_long_param_or_tag(
    client: Any, experiment_id: str
) -> None:
    from mlflow.entities import Param, RunTag
    from mlflow.exceptions import MlflowException

    run_id = client.create_run(experiment_id).info.run_id
    attempts = [
        lambda: client.log_param(run_id, "long", "x" * 6001),
        lambda: client.set_tag(run_id, "long", "x" * 8001),
        lambda: client.log_batch(run_id, params=[Param("long", "x" * 6001)]),
        lambda: client.log_batch(run_id, tags=[RunTag("long", "x" * 8001)]),
    ]
    for attempt in attempts:
        with pytest.raises(MlflowException, match="exceeds the maximum length") as refused:
            attempt()
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    client.log_param(run_id, "fits", "x" * 6000)
    got = client.get_run(run_id).data
    assert "long" not in got.params and "long" not in got.tags
    assert got.params["fits"] == "x" * 6000
