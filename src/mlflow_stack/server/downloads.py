"""Proxied downloads streamed from S3 while they arrive.

MLflow's download route (``GET /api/2.0/mlflow-artifacts/artifacts/<path>``, and the same under
``/ajax-api``) copies the whole object from S3 into a temporary file and only then sends the
file, so the client waits for both copies in turn and the server's disk holds every download
in flight. :func:`install` puts a route for the same paths in front of MLflow's in its FastAPI
app (MLflow's auth middleware, which wraps the app, still authorizes every request first). It
answers as MLflow's does: the same checks of the path in the same order, the same headers,
MLflow's JSON errors. The differences are that bytes go out as they come from S3, with the
stored size as ``Content-Length`` (so a download cut short shows as one), and that a directory
is refused with MLflow's 400 for a directory instead of a stream that breaks off.

The UI's downloads (``GET /get-artifact?run_id=&path=`` and
``GET /model-versions/get-artifact?name=&version=&path=``, Flask views of MLflow's) copy to a
temporary file the same way. :func:`install_ui` swaps those two views in MLflow's Flask app
for ones that stream; the route, and so MLflow's auth check before it (the run's or the model
version's READ), stay MLflow's. They resolve the artifact as MLflow's views do and answer with
MLflow's headers, ``Accept-Ranges`` and ``Cache-Control: no-cache`` included, the object's own
ETag and Last-Modified from S3. A HEAD, or a request with a Range or a conditional header, goes
to MLflow's own view, which answers it from its copy (the UI sends none of them).

Any other artifact repository (a non-S3 destination) is left to MLflow's route.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from mlflow_stack.server.artifacts import S3ArtifactRepository, StoredObject

logger = logging.getLogger(__name__)

PATHS = (
    "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
)
CHUNK = 4 * 1024 * 1024  # per download in flight; 1 MiB (MLflow's chunk) was slower here
#: Requests MLflow's UI views answer with a range or conditionally: left to them.
CONDITIONAL = (
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)


async def download_artifact(artifact_path: str) -> Any:
    """The route: MLflow's prelude, then the object's bytes as they arrive from S3."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse
    from mlflow.exceptions import MlflowException
    from mlflow.server import artifact_router
    from mlflow.utils.uri import validate_path_is_safe

    if not artifact_router._is_serving_proxied_artifacts():
        return await artifact_router.download_artifact(artifact_path)  # its own 503
    try:
        safe = validate_path_is_safe(artifact_path)
        scoped = artifact_router._get_workspace_scoped_path(safe)
        repository = artifact_router._get_artifact_repo()
        if not isinstance(repository, S3ArtifactRepository):
            return await artifact_router.download_artifact(artifact_path)
        stored: StoredObject = await run_in_threadpool(repository.open_object, scoped)
    except MlflowException as error:
        return JSONResponse(
            status_code=error.get_http_status_code(),
            content=json.loads(error.serialize_as_json()),
        )
    return StreamingResponse(
        _logged(stored.chunks(CHUNK), scoped),
        headers=_object_headers(scoped, stored, artifact_router._content_disposition),
    )


def _object_headers(
    scoped: str, stored: StoredObject, disposition: Callable[[str], str]
) -> dict[str, str]:
    """MLflow's headers for a download of the object at ``scoped``, named by its last part,
    with the stored size as Content-Length; ``disposition`` is the route's own helper."""
    from mlflow.utils.mime_type_utils import _guess_mime_type

    name = scoped.rsplit("/", 1)[-1]
    return {
        "Content-Type": _guess_mime_type(name),
        "Content-Disposition": disposition(name),
        "X-Content-Type-Options": "nosniff",
        "Content-Length": str(stored.size),
    }


def _logged(chunks: Iterator[bytes], path: str) -> Iterator[bytes]:
    """The chunks; a failure after the first byte can only cut the response short, so it is
    logged here, naming the artifact, and the connection closes early."""
    try:
        yield from chunks
    except Exception:
        logger.exception("download of artifact %r broke off", path)
        raise


def install(app: Any) -> None:
    """Route this module's download in front of MLflow's in MLflow's FastAPI ``app``."""
    from fastapi.routing import APIRoute

    routes = [APIRoute(path, download_artifact, methods=["GET"]) for path in PATHS]
    app.router.routes[0:0] = routes


def _run_artifact_root() -> str:
    """``/get-artifact``: the run's artifact root, looked up as MLflow's view does."""
    from flask import request
    from mlflow.server.handlers import _get_tracking_store

    run_id = request.args.get("run_id") or request.args.get("run_uuid")
    return _get_tracking_store().get_run(run_id).info.artifact_uri


def _model_version_root() -> str:
    """``/model-versions/get-artifact``: the version's download URI, as MLflow's view has it."""
    from flask import request
    from mlflow.server.handlers import _get_model_registry_store

    name, version = request.args.get("name"), request.args.get("version")
    return _get_model_registry_store().get_model_version_download_uri(name, version)


#: MLflow's Flask endpoint -> where the artifacts it serves live.
UI_VIEWS: dict[str, Callable[[], str]] = {
    "serve_artifacts": _run_artifact_root,
    "serve_model_version_artifact": _model_version_root,
}


def _stream_ui_artifact(mlflow_view: Callable[[], Any], artifact_root: Callable[[], str]) -> Any:
    """One UI download: MLflow's prelude (path check, then the run or version), then the
    object's bytes as they arrive from S3; MLflow's own view for anything but S3."""
    from flask import Response, request
    from mlflow.server.handlers import (
        _content_disposition_attachment,
        _get_artifact_repo_mlflow_artifacts,
        _get_proxied_run_artifact_destination_path,
        _get_workspace_scoped_repo_path_if_enabled,
        _is_servable_proxied_run_artifact_root,
    )
    from mlflow.utils.uri import validate_path_is_safe
    from werkzeug.http import http_date

    path = validate_path_is_safe(request.args["path"])
    root = artifact_root()
    if not _is_servable_proxied_run_artifact_root(root):
        return mlflow_view()
    repository = _get_artifact_repo_mlflow_artifacts()
    if not isinstance(repository, S3ArtifactRepository):
        return mlflow_view()
    scoped = _get_workspace_scoped_repo_path_if_enabled(
        _get_proxied_run_artifact_destination_path(proxied_artifact_root=root, relative_path=path)
    )
    stored = repository.open_object(scoped)
    response = Response(_logged(stored.chunks(CHUNK), scoped), direct_passthrough=True)
    response.headers.update(_object_headers(scoped, stored, _content_disposition_attachment))
    response.headers.update({"Accept-Ranges": "bytes", "Cache-Control": "no-cache"})
    if stored.etag:
        response.headers["ETag"] = stored.etag
    if stored.last_modified is not None:
        response.headers["Last-Modified"] = http_date(stored.last_modified)
    return response


def _streaming_view(mlflow_view: Callable[[], Any], artifact_root: Callable[[], str]) -> Any:
    from mlflow.server.handlers import _disable_if_artifacts_only, catch_mlflow_exception

    stream = catch_mlflow_exception(_disable_if_artifacts_only(_stream_ui_artifact))

    @functools.wraps(mlflow_view)
    def view() -> Any:
        from flask import request

        if request.method != "GET" or any(header in request.headers for header in CONDITIONAL):
            return mlflow_view()  # HEAD too: it would open the object only to drop it
        return stream(mlflow_view, artifact_root)

    view.streams_from_s3 = True  # type: ignore[attr-defined]
    return view


def install_ui(flask_app: Any) -> None:
    """Swap MLflow's two UI download views in ``flask_app`` for streaming ones."""
    for endpoint, artifact_root in UI_VIEWS.items():
        mlflow_view = flask_app.view_functions[endpoint]
        if not getattr(mlflow_view, "streams_from_s3", False):  # once per app
            flask_app.view_functions[endpoint] = _streaming_view(mlflow_view, artifact_root)
