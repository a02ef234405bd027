"""Bad API input is answered with a 4xx before MLflow reads it; good input reaches MLflow
byte for byte."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from mlflow_stack.server.validation import MAX_DEPTH, RequestValidator, mlflow_routes
from tests.unit.server.asgi_harness import Answer, EchoApp, request

LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
JSON = {"Content-Type": "application/json"}
RUN = "0123456789abcdef0123456789abcdef"


def post(path: str, body: bytes | str, headers: dict[str, str] | None = None, **kw: int) -> Answer:
    raw = body.encode() if isinstance(body, str) else body
    return request(RequestValidator(EchoApp()), "POST", path, body=raw,
                   headers=JSON if headers is None else headers, **kw)  # fmt: skip


def metric(**fields: object) -> str:
    return json.dumps({"run_id": RUN, "key": "rmse", "value": 1.5, "timestamp": 1, **fields})


BAD_BODIES = {
    "bare NaN": f'{{"run_id": "{RUN}", "key": "k", "value": NaN, "timestamp": 1}}',
    "bare Infinity": f'{{"run_id": "{RUN}", "key": "k", "value": -Infinity, "timestamp": 1}}',
    "1e400": f'{{"run_id": "{RUN}", "key": "k", "value": 1e400, "timestamp": 1}}',
    "step 2**70": metric(step=2**70),
    "timestamp 2**63": metric(timestamp=2**63),
    "run_id number": metric(run_id=31),
    "NUL in key": metric(key="a\x00b"),
    "NUL in an unknown field": metric(comment="a\x00b"),
    "lone surrogate": f'{{"run_id": "{RUN}", "key": "\\ud800", "value": 1, "timestamp": 1}}',
    "list": "[1, 2]",
    "string": '"x"',
    "double-encoded list": json.dumps("[1]"),
    "null": "null",
    "number": "3",
    "deep": '{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
    "very deep": "[" * 100_000 + "]" * 100_000,
    "not JSON": "{bad",
    "invalid UTF-8": b'{"run_id": "\xff\xfe"}',
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_get_400_in_mlflows_error_format(body: str | bytes) -> None:
    answer = post(LOG_METRIC, body)
    assert answer.status == 400, answer.body
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert not answer.reached_app


def test_messages_name_the_field() -> None:
    assert (
        "for parameter 'run_id' supplied" in post(LOG_METRIC, metric(run_id=31)).json()["message"]
    )
    assert post(LOG_METRIC, metric(step=2**70)).json()["message"].startswith("step=")
    batch = json.dumps({"run_id": RUN, "params": [{"key": "a", "value": "x\x00"}]})
    message = post("/api/2.0/mlflow/runs/log-batch", batch).json()["message"]
    assert message.startswith("params[0].value contains a NUL character")


GOOD_BODIES = {
    "plain": metric(),
    "quoted NaN": metric(value="NaN"),
    "quoted Infinity": metric(value="-Infinity"),
    "int64 as string": metric(timestamp="1700000000000"),
    "double-encoded object": json.dumps(metric()),
    "empty": "",
    "unknown fields": metric(extra={"nested": [1, 2.5, "x"]}),
}


@pytest.mark.parametrize("body", GOOD_BODIES.values(), ids=GOOD_BODIES.keys())
def test_good_bodies_reach_mlflow_unchanged(body: str) -> None:
    answer = post(LOG_METRIC, body, chunk=7)
    assert answer.status == 200
    assert answer.app_received == body.encode()


def test_form_posts_and_artifact_uploads_are_not_parsed() -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post("/api/2.0/mlflow/users/create", "username=a&password=b", form).reached_app
    upload_path = "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x.json"
    upload = request(RequestValidator(EchoApp()), "PUT", upload_path, body=b"[NaN")
    assert upload.status == 200
    assert upload.app_received == b"[NaN"


def test_a_body_mlflow_would_parse_is_checked_whatever_its_content_type() -> None:
    """MLflow reads PATCH and DELETE bodies with get_json(force=True)."""
    body = f'{{"run_id": "{RUN}", "key": "k", "value": NaN}}'
    answer = request(RequestValidator(EchoApp()), "PATCH", "/api/2.0/mlflow/x", body=body.encode(),
                     headers={"Content-Type": "text/plain"})  # fmt: skip
    assert answer.status == 400
    unparsable = request(RequestValidator(EchoApp()), "PATCH", "/api/2.0/mlflow/x",
                         body=b"<xml/>", headers={"Content-Type": "text/xml"})  # fmt: skip
    assert unparsable.reached_app  # MLflow cannot read it either: nothing to check


def test_an_oversized_body_gets_413(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_stack.server import validation

    monkeypatch.setattr(validation, "MAX_JSON_BYTES", 100)
    answer = post(LOG_METRIC, metric(key="k" * 200), chunk=30)
    assert answer.status == 413
    assert not answer.reached_app


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/2.0/mlflow-artifacts/artifacts/1/..\\..\\x", b""),
        ("/api/2.0/mlflow-artifacts/artifacts", b"path=..%5cx"),
        ("/api/2.0/mlflow/artifacts/list", b"run_id=" + RUN.encode() + b"&path=a%5Cb"),
        ("/get-artifact", b"run_id=" + RUN.encode() + b"&path=..%5cx"),
        ("/model-versions/get-artifact", b"name=m&version=1&path=a%5cb"),
        ("/api/2.0/mlflow/experiments/get-by-name", b"experiment_name=a%00b"),
        ("/api/2.0/mlflow/experiments/get-by-name", b"experiment_name=%ff"),
        ("/api/2.0/mlflow/experiments/search", b"max_results=1180591620717411303424"),
        ("/api/2.0/mlflow/experiments/search", b"max_results=ten"),
        ("/api/2.0/mlflow/metrics/get-history", b"run_id=r&metric_key=k&max_results=2.5"),
        ("/api/2.0/mlflow/a\x00b", b""),
    ],
)
def test_bad_paths_and_query_strings_get_400(path: str, query: bytes) -> None:
    answer = request(RequestValidator(EchoApp()), "GET", path, query=query)
    assert answer.status == 400, answer.body
    assert not answer.reached_app


def test_good_queries_pass() -> None:
    for path, query in [
        ("/api/2.0/mlflow/experiments/search", b"max_results=10&view_type=ACTIVE_ONLY"),
        ("/api/2.0/mlflow/artifacts/list", b"run_id=" + RUN.encode() + b"&path=model/x.pkl"),
        ("/api/2.0/mlflow/experiments/get-by-name", b"experiment_name=caf%C3%A9+runs"),
    ]:
        assert request(RequestValidator(EchoApp()), "GET", path, query=query).reached_app


@pytest.mark.parametrize(
    "source",
    ["s3://mlflow/1/abc/artifacts/model", "S3://mlflow/1/x", "gs://b/x", "file:///etc",
     "/tmp/model", "http://169.254.169.254/latest/meta-data", "hdfs://x/y"],
)  # fmt: skip
def test_model_version_sources_outside_the_checked_schemes_get_403(source: str) -> None:
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):
        answer = post(
            f"{prefix}/model-versions/create", json.dumps({"name": "m", "source": source})
        )
        assert answer.status == 403
        assert answer.json()["error_code"] == "PERMISSION_DENIED"
        assert not answer.reached_app


@pytest.mark.parametrize(
    "source",
    [f"runs:/{RUN}/model", "models:/m/1", "models:/m-0123", "mlflow-artifacts:/1/r/artifacts/m",
     "mlflow-artifacts://host:5000/1/r/artifacts/m", "prompt-template", "dummy-source"],
)  # fmt: skip
def test_sources_mlflow_checks_permissions_for_pass(source: str) -> None:
    answer = post(
        "/api/2.0/mlflow/model-versions/create", json.dumps({"name": "m", "source": source})
    )
    assert answer.reached_app


def test_experiment_artifact_locations_must_stay_behind_the_server() -> None:
    create = "/api/2.0/mlflow/experiments/create"
    assert (
        post(create, json.dumps({"name": "e", "artifact_location": "s3://mlflow/1"})).status == 403
    )
    assert post(create, json.dumps({"name": "e", "artifactLocation": "/tmp/x"})).status == 403
    assert post(
        create, json.dumps({"name": "e", "artifact_location": "mlflow-artifacts:/x"})
    ).reached_app
    assert post(create, json.dumps({"name": "e"})).reached_app


def test_the_route_table_covers_mlflows_api() -> None:
    routes = mlflow_routes()
    assert routes.request_type("POST", LOG_METRIC).name == "LogMetric"
    assert routes.request_type("POST", "/ajax-api/2.0/mlflow/runs/log-batch").name == "LogBatch"
    assert routes.request_type("PATCH", "/api/2.0/mlflow/traces/tr-1/tags").name == "SetTraceTag"
    assert routes.request_type("GET", "/api/2.0/mlflow/no-such-route") is None


# -- MLflow's own answers, where MLflow itself refuses -----------------------------------------

RUN_ID = "<run>"
#: (method, route, input, the field it gets wrong, what stock MLflow 3.17 does with it)
#: "refuses": 400 naming that field, which the validator must answer word for word;
#: "accepts": 200, the value dropped or altered; "fails": 500; "misnames": 400 naming
#: another field, from its half-parsed message. In these three the validator speaks. "passes":
#: protobuf parses it as MLflow asks it to (True as 1.0, an unknown enum name ignored), so the
#: validator lets it through and MLflow's own answer stands.
CONTRACT: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("POST", "runs/log-metric", {"run_id": 31, "key": "k", "value": 1, "timestamp": 1},
     "run_id", "refuses"),
    ("POST", "runs/log-metric", {"key": "k", "value": "abc", "timestamp": 1}, "value", "refuses"),
    ("POST", "runs/log-metric", {"key": "k", "value": 1, "timestamp": "x"}, "timestamp",
     "refuses"),
    ("POST", "runs/log-metric", {"key": "k", "value": 1, "timestamp": 1, "step": "x"}, "step",
     "refuses"),
    ("POST", "runs/log-metric", {"key": 5, "value": 1, "timestamp": 1}, "key", "refuses"),
    ("POST", "runs/log-metric", {"key": "k", "value": 1, "timestamp": 1.5}, "timestamp",
     "accepts"),
    ("POST", "runs/log-metric", {"key": "k", "value": True, "timestamp": 1}, "value", "passes"),
    ("POST", "runs/log-batch", {"metrics": "foo"}, "metrics", "refuses"),
    ("POST", "runs/log-batch", {"params": "foo"}, "params", "refuses"),
    ("POST", "runs/log-batch", {"tags": 5}, "tags", "refuses"),
    ("POST", "runs/log-batch", {"run_id": 31}, "run_id", "refuses"),
    ("POST", "runs/log-batch", {"metrics": [{"key": "a", "value": "x", "timestamp": 1}]},
     "metrics", "misnames"),
    ("POST", "runs/log-batch", {"metrics": [5]}, "metrics", "fails"),
    ("POST", "experiments/create", {"name": 123}, "name", "refuses"),
    ("POST", "experiments/create", {"name": "x2", "tags": "x"}, "tags", "refuses"),
    ("POST", "runs/set-tag", {"key": 1, "value": "v"}, "key", "refuses"),
    ("POST", "runs/set-tag", {"key": "k", "value": 2}, "value", "refuses"),
    ("POST", "runs/set-tag", {"run_id": 3, "key": "k", "value": "v"}, "run_id", "refuses"),
    ("POST", "runs/log-parameter", {"key": 1, "value": "v"}, "key", "refuses"),
    ("POST", "runs/log-parameter", {"key": "k", "value": 2}, "value", "refuses"),
    ("POST", "runs/create", {"experiment_id": 5}, "experiment_id", "refuses"),
    ("POST", "runs/create", {"start_time": "abc"}, "start_time", "refuses"),
    ("POST", "runs/create", {"tags": "x"}, "tags", "accepts"),
    ("POST", "runs/search", {"max_results": "abc"}, "max_results", "refuses"),
    ("POST", "runs/search", {"experiment_ids": "1"}, "experiment_ids", "refuses"),
    ("POST", "runs/search", {"order_by": "x"}, "order_by", "refuses"),
    ("POST", "runs/search", {"run_view_type": "BOGUS"}, "run_view_type", "passes"),
    ("POST", "runs/update", {"status": "BOGUS"}, "status", "passes"),
    ("POST", "runs/update", {"end_time": "x"}, "end_time", "refuses"),
    ("POST", "experiments/update", {"new_name": 5}, "new_name", "refuses"),
    ("POST", "runs/delete", {"run_id": 7}, "run_id", "refuses"),
    ("GET", "experiments/search", {"max_results": "abc"}, "max_results", "refuses"),
    ("GET", "experiments/search", {"view_type": "BOGUS"}, "view_type", "passes"),
]  # fmt: skip


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """MLflow's own Flask app (no auth, no stack layers) on a SQLite store, with a run."""
    from mlflow.server import app, handlers

    root = tmp_path_factory.mktemp("stock-mlflow")
    env = {
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{root / 'mlflow.db'}",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(root / "artifacts"),
    }
    with (
        mock.patch.dict(os.environ, env),
        mock.patch.multiple(handlers, _tracking_store=None, _model_registry_store=None),
    ):
        client = app.test_client()
        experiment = client.post("/api/2.0/mlflow/experiments/create", json={"name": "e"})
        experiment_id = experiment.get_json()["experiment_id"]
        run = client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id})
        client.ids = {"run_id": run.get_json()["run"]["info"]["run_id"],  # type: ignore[attr-defined]
                      "experiment_id": experiment_id}  # fmt: skip
        yield client


def completed(route: str, given: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """The input, with the ids it needs to get past the fields it does not get wrong."""
    needs = {"runs": "run_id", "experiments": "experiment_id"}
    if route in ("experiments/create", "experiments/search"):
        return dict(given)
    if route in ("runs/create", "runs/search"):
        key = "experiment_ids" if route == "runs/search" else "experiment_id"
        value = [ids["experiment_id"]] if route == "runs/search" else ids["experiment_id"]
        return {key: value, **given}
    name = needs[route.split("/", maxsplit=1)[0]]
    return {name: ids[name], **given}


def answers(client: Any, method: str, path: str, document: dict[str, Any]) -> tuple[Any, Answer]:
    if method == "GET":
        theirs = client.get(path, query_string=document)
        query = "&".join(f"{k}={v}" for k, v in document.items()).encode()
        ours = request(RequestValidator(EchoApp()), "GET", path, query=query)
    else:
        theirs = client.post(path, json=document)
        ours = post(path, json.dumps(document))
    return theirs, ours


@pytest.mark.parametrize(
    ("method", "route", "given", "field", "mlflow"), CONTRACT, ids=[
        f"{c[1]}:{c[3]}:{c[4]}" for c in CONTRACT
    ]
)  # fmt: skip
def test_where_mlflow_refuses_the_validator_answers_in_mlflows_words(  # noqa: PLR0917
    stock: Any, method: str, route: str, given: dict[str, Any], field: str, mlflow: str
) -> None:
    path = f"/api/2.0/mlflow/{route}"
    document = completed(route, given, stock.ids)
    theirs, ours = answers(stock, method, path, document)
    body = theirs.get_json(silent=True) or {}
    if mlflow == "passes":
        assert ours.reached_app, ours.body
        return
    assert ours.status == 400 and not ours.reached_app, ours.body
    if mlflow == "refuses":
        assert theirs.status_code == 400, (theirs.status_code, body)
        assert f"parameter '{field}'" in body["message"]  # the field the input gets wrong
        assert ours.json() == {"error_code": body["error_code"], "message": body["message"]}
        return
    # MLflow would not refuse it, or not for this field: the stack's own message names it
    expected = {"accepts": 200, "fails": 500, "misnames": 400}[mlflow]
    assert theirs.status_code == expected, (theirs.status_code, body)
    if mlflow == "misnames":
        assert f"'{field}'" not in body["message"], body
    assert field in ours.json()["message"]
