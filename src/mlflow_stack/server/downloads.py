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

Any other artifact repository (a non-S3 destination) is left to MLflow's route.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from mlflow_stack.server.artifacts import S3ArtifactRepository, StoredObject

logger = logging.getLogger(__name__)

PATHS = (
    "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
)
CHUNK = 4 * 1024 * 1024  # per download in flight; 1 MiB (MLflow's chunk) was slower here


async def download_artifact(artifact_path: str) -> Any:
    """The route: MLflow's prelude, then the object's bytes as they arrive from S3."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse
    from mlflow.exceptions import MlflowException
    from mlflow.server import artifact_router
    from mlflow.utils.mime_type_utils import _guess_mime_type
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
    name = scoped.rsplit("/", 1)[-1]
    return StreamingResponse(
        _logged(stored.chunks(CHUNK), scoped),
        headers={
            "Content-Type": _guess_mime_type(name),
            "Content-Disposition": artifact_router._content_disposition(name),
            "X-Content-Type-Options": "nosniff",
            "Content-Length": str(stored.size),
        },
    )


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
