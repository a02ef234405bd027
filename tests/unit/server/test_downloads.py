"""The streamed download route, and the UI's two download views, against MLflow's own, on a
real S3 on a loopback socket (moto's server): the same answers (status, MLflow's headers, bytes,
errors), with the stored size as Content-Length; bytes go out before S3 has sent the rest; a
directory is MLflow's 400.

Timings and failures a real S3 rarely shows (an S3 that stalls or breaks off mid-object) use a
fake body."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import flask
import pytest
from fastapi import FastAPI
from mlflow.server import artifact_router, handlers
from werkzeug.http import http_date

from mlflow_stack.server import downloads
from mlflow_stack.server.artifacts import S3ArtifactRepository, StoredObject
from tests.unit.server.test_artifacts import Store, store  # noqa: F401  (the fixture)

ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"
MLFLOW_HEADERS = (b"content-type", b"content-disposition", b"x-content-type-options")


@dataclass
class Sent:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def drive(app: Any, path: str, on_body: Any = None) -> Sent:
    """One GET, as uvicorn sends it: the client stays connected until the answer is out."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
    }
    gone = asyncio.Event()
    requested = False
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            chunks.append(message.get("body", b""))
            if on_body is not None:
                await on_body(chunks)

    try:
        await app(scope, receive, send)
    finally:
        gone.set()
    return Sent(start["status"], dict(start["headers"]), b"".join(chunks))


def get(app: Any, path: str) -> Sent:
    return asyncio.run(drive(app, path))


@pytest.fixture
def serving(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:  # noqa: F811
    """MLflow serving proxied artifacts from the test's bucket, as ``serve`` configures it."""
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", store.repository.artifact_uri)
    monkeypatch.setattr(handlers, "_artifact_repo", store.repository)
    return store


def mlflows_app() -> FastAPI:
    app = FastAPI()
    app.include_router(artifact_router.artifact_router)
    return app


def stacks_app() -> FastAPI:
    app = mlflows_app()
    downloads.install(app)
    return app


def put(into: Store, path: str, body: bytes) -> None:
    into.s3.put_object(Bucket=into.bucket, Key=into.key(path), Body=body)


@pytest.mark.parametrize(
    "path", ["model/MLmodel", "data/weights.bin", "notes.txt", "table.csv", "plain"]
)
def test_a_download_answers_as_mlflows_route_with_the_stored_size(
    serving: Store, path: str
) -> None:
    body = os.urandom(3 * downloads.CHUNK + 17)
    put(serving, path, body)

    ours, theirs = get(stacks_app(), ROUTE + path), get(mlflows_app(), ROUTE + path)

    assert (ours.status, ours.body) == (theirs.status, theirs.body) == (200, body)
    assert {h: ours.headers.get(h) for h in MLFLOW_HEADERS} == {
        h: theirs.headers.get(h) for h in MLFLOW_HEADERS
    }
    assert ours.headers[b"content-length"] == str(len(body)).encode()


def test_an_empty_object_downloads_empty(serving: Store) -> None:
    put(serving, "empty.txt", b"")
    answer = get(stacks_app(), ROUTE + "empty.txt")
    assert (answer.status, answer.body, answer.headers[b"content-length"]) == (200, b"", b"0")


def test_the_ajax_route_streams_too(serving: Store) -> None:
    put(serving, "a.bin", b"abc")
    app = stacks_app()
    assert (
        app.router.routes[1].path == "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}"
    )
    answer = get(app, "/ajax-api/2.0/mlflow-artifacts/artifacts/a.bin")
    assert (answer.status, answer.body, answer.headers[b"content-length"]) == (200, b"abc", b"3")


def test_a_missing_artifact_is_the_same_404_as_mlflows(serving: Store) -> None:
    ours, theirs = get(stacks_app(), ROUTE + "nope.bin"), get(mlflows_app(), ROUTE + "nope.bin")
    assert (ours.status, ours.json()) == (theirs.status, theirs.json())
    assert ours.status == 404 and ours.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b", "/abs/path", "a%2F..%2F..%2Fb"])
def test_an_unsafe_path_gets_mlflows_answer(serving: Store, path: str) -> None:
    ours, theirs = get(stacks_app(), ROUTE + path), get(mlflows_app(), ROUTE + path)
    assert (ours.status, ours.body) == (theirs.status, theirs.body)
    assert ours.status >= 400


def test_a_directory_is_mlflows_400_for_a_directory(serving: Store) -> None:
    put(serving, "model/MLmodel", b"flavors: {}")
    put(serving, "model/data/x.bin", b"x")
    for path in ("model", "model/"):
        answer = get(stacks_app(), ROUTE + path)
        assert answer.status == 400, answer.body
        error = answer.json()
        assert error["error_code"] == "INVALID_PARAMETER_VALUE"
        assert error["message"] == f"Artifact path refers to a directory, not a file: '{path}'"


def test_without_proxied_artifacts_it_is_mlflows_503(
    serving: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "false")
    ours, theirs = get(stacks_app(), ROUTE + "a"), get(mlflows_app(), ROUTE + "a")
    assert (ours.status, ours.body) == (theirs.status, theirs.body)
    assert ours.status == 503


def test_another_repository_is_left_to_mlflows_route(
    serving: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    (tmp_path / "local.txt").write_text("on disk")
    monkeypatch.setattr(handlers, "_artifact_repo", LocalArtifactRepository(str(tmp_path)))
    answer = get(stacks_app(), ROUTE + "local.txt")
    assert (answer.status, answer.body) == (200, b"on disk")
    assert b"content-length" in answer.headers  # MLflow's FileResponse, not a stream of ours


class FakeBody:
    """An S3 body that sends its first piece, then waits until ``release`` is set; it breaks
    off instead of sending the rest when ``broken``."""

    def __init__(self, pieces: list[bytes], broken: bool = False) -> None:
        self.pieces = pieces
        self.broken = broken
        self.release = threading.Event()
        self.closed = False

    def iter_chunks(self, size: int):
        yield self.pieces[0]
        assert self.release.wait(10), "the test never let the rest through"
        if self.broken:
            raise ConnectionResetError("S3 went away")
        yield from self.pieces[1:]

    def close(self) -> None:
        self.closed = True


def fake_object(
    monkeypatch: pytest.MonkeyPatch, pieces: list[bytes], broken: bool = False
) -> FakeBody:
    body = FakeBody(pieces, broken)
    stored = StoredObject(size=sum(map(len, pieces)), body=body)
    monkeypatch.setattr(S3ArtifactRepository, "open_object", lambda self, path: stored)
    return body


def test_the_first_bytes_go_out_before_s3_has_sent_the_rest(
    serving: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = fake_object(monkeypatch, [b"first", b"second", b"third"])

    async def on_body(chunks: list[bytes]) -> None:
        if chunks == [b"first"]:  # out while S3 still holds the rest back
            body.release.set()

    answer = asyncio.run(drive(stacks_app(), ROUTE + "big.bin", on_body))
    assert answer.body == b"firstsecondthird"
    assert answer.headers[b"content-length"] == b"16"
    assert body.closed


def test_s3_breaking_off_cuts_the_answer_short_of_its_length_and_logs_it(
    serving: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    body = fake_object(monkeypatch, [b"first", b"never sent"], broken=True)
    sent: list[bytes] = []

    async def on_body(chunks: list[bytes]) -> None:
        sent[:] = chunks
        body.release.set()

    with pytest.raises(ConnectionResetError):  # uvicorn then closes the connection
        asyncio.run(drive(stacks_app(), ROUTE + "big.bin", on_body))
    assert b"".join(sent) == b"first"  # 5 of the 15 bytes its Content-Length promised
    assert body.closed
    assert "download of artifact 'big.bin' broke off" in caplog.text


def test_open_object_reads_size_and_bytes(serving: Store) -> None:
    put(serving, "x/y.bin", b"0123456789")
    stored = serving.repository.open_object("x/y.bin")
    assert stored.size == 10
    assert b"".join(stored.chunks(3)) == b"0123456789"


# The UI's two download views (Flask), against MLflow's own views on the same bucket.

RUN_ROOT = "mlflow-artifacts:/7/0123abcd/artifacts"
UI_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "X-Content-Type-Options",
    "Accept-Ranges",
    "Cache-Control",
    "Content-Length",
)


@dataclass
class Stores:
    """MLflow's tracking and registry stores as the two views use them: a run's artifact root
    and a model version's download URI."""

    run_root: str = RUN_ROOT
    asked: list[str] | None = None

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if run_id != "0123abcd":
            raise MlflowException(f"Run '{run_id}' not found", RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(info=SimpleNamespace(artifact_uri=self.run_root))

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return f"{self.run_root}/model"


@pytest.fixture
def ui(serving: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    stores = Stores()
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: stores)
    monkeypatch.setattr(handlers, "_get_model_registry_store", lambda: stores)
    return serving


def ui_app(streaming: bool) -> flask.Flask:
    """A Flask app with MLflow's own two views under MLflow's endpoints for them."""
    app = flask.Flask("ui")
    for endpoint, rule, view in (
        ("serve_artifacts", "/get-artifact", handlers.get_artifact_handler),
        (
            "serve_model_version_artifact",
            "/model-versions/get-artifact",
            handlers.get_model_version_artifact_handler,
        ),
    ):
        app.add_url_rule(rule, endpoint, view)
    if streaming:
        downloads.install_ui(app)
    return app


def ui_get(streaming: bool, url: str, **headers: str) -> Any:
    return ui_app(streaming).test_client().get(url, headers=headers)


def ui_put(into: Store, path: str, body: bytes) -> dict[str, Any]:
    put(into, f"7/0123abcd/artifacts/{path}", body)
    return into.s3.head_object(Bucket=into.bucket, Key=into.key(f"7/0123abcd/artifacts/{path}"))


UI_URLS = {
    "run": "/get-artifact?run_id=0123abcd&path={path}",
    "run (run_uuid)": "/get-artifact?run_uuid=0123abcd&path={path}",
    "model version": "/model-versions/get-artifact?name=m&version=1&path={path}",
}


@pytest.mark.parametrize("route", UI_URLS)
@pytest.mark.parametrize("path", ["weights.bin", "notes.txt", "table.csv", "plain"])
def test_a_ui_download_answers_as_mlflows_view_from_the_object_itself(
    ui: Store, route: str, path: str
) -> None:
    stored = "model/" + path if route == "model version" else path
    body = os.urandom(2 * downloads.CHUNK + 5)
    head = ui_put(ui, stored, body)
    url = UI_URLS[route].format(path=path)

    ours, theirs = ui_get(True, url), ui_get(False, url)

    assert (ours.status_code, ours.data) == (theirs.status_code, theirs.data) == (200, body)
    assert {h: ours.headers.get(h) for h in UI_HEADERS} == {
        h: theirs.headers.get(h) for h in UI_HEADERS
    }
    # S3's own validators (MLflow's are those of its temporary copy): the bytes came from S3
    assert ours.headers["ETag"] == head["ETag"] != theirs.headers["ETag"]
    assert ours.headers["Last-Modified"] == http_date(head["LastModified"])


def test_a_ui_download_goes_out_as_s3_sends_it(ui: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    body = fake_object(monkeypatch, [b"first", b"second"])
    answer = ui_app(True).test_client().get(UI_URLS["run"].format(path="big.bin"), buffered=False)
    pieces = iter(answer.response)
    assert next(pieces) == b"first"  # out while S3 still holds the rest back
    body.release.set()
    assert b"".join(pieces) == b"second"
    answer.close()
    assert body.closed and answer.headers["Content-Length"] == "11"


@pytest.mark.parametrize(
    ("case", "url"),
    [
        ("missing object", UI_URLS["run"].format(path="gone.bin")),
        ("directory", UI_URLS["run"].format(path="model")),
        ("directory, model version", UI_URLS["model version"].format(path="")),
        ("unknown run", "/get-artifact?run_id=ffff&path=a.txt"),
        ("unsafe path", UI_URLS["run"].format(path="../../etc/passwd")),
        ("no path", "/get-artifact?run_id=0123abcd"),
    ],
)
def test_a_failed_ui_download_is_mlflows_answer(ui: Store, case: str, url: str) -> None:
    ui_put(ui, "model/MLmodel", b"flavors: {}")
    ours, theirs = ui_get(True, url), ui_get(False, url)
    assert (ours.status_code, ours.data) == (theirs.status_code, theirs.data), case
    assert ours.status_code >= 400


@pytest.mark.parametrize(
    "headers",
    [
        {"Range": "bytes=2-5"},
        {"If-None-Match": '"x"'},
        {"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"},
    ],
)
def test_a_range_or_conditional_ui_download_is_left_to_mlflows_view(
    ui: Store, headers: dict[str, str]
) -> None:
    ui_put(ui, "notes.txt", b"0123456789")
    url = UI_URLS["run"].format(path="notes.txt")
    ours, theirs = ui_get(True, url, **headers), ui_get(False, url, **headers)
    assert (ours.status_code, ours.data) == (theirs.status_code, theirs.data)
    assert ours.headers["ETag"] != '"' + hashlib.md5(b"0123456789").hexdigest() + '"'  # noqa: S324
    if "Range" in headers:
        assert (ours.status_code, ours.data) == (206, b"2345")


def test_a_run_outside_the_proxied_root_is_left_to_mlflows_view(
    ui: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    (tmp_path / "local.txt").write_text("on disk")
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: Stores(str(tmp_path)))
    ours = ui_get(True, "/get-artifact?run_id=0123abcd&path=local.txt")
    assert (ours.status_code, ours.data) == (200, b"on disk")


def test_mlflows_app_has_both_views_and_installing_twice_wraps_once() -> None:
    from mlflow.server import app as mlflow_app

    app = flask.Flask("ui")
    for endpoint in downloads.UI_VIEWS:
        app.add_url_rule(f"/{endpoint}", endpoint, mlflow_app.view_functions[endpoint])
    downloads.install_ui(app)
    once = dict(app.view_functions)
    downloads.install_ui(app)
    assert app.view_functions == once
