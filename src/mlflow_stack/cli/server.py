"""The server's commands: ``serve`` (the entrypoint of the image, the native runtime and EC2)
and ``healthcheck`` (the image's HEALTHCHECK)."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

import click

from mlflow_stack.cli.base import Context
from mlflow_stack.errors import StackError


@click.command()
@click.pass_obj
def serve(obj: Context) -> NoReturn:
    """Start the MLflow server (the entrypoint of the image, the native runtime and EC2).

    Waits for PostgreSQL and S3, creates the databases and bucket if missing, migrates both
    schemas, then execs `mlflow server` with proxied artifacts and basic-auth.
    """
    from mlflow_stack.serve import serve as run

    logging.getLogger().handlers[0].setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s mlflow-stack: %(message)s")
    )
    environ = obj.environment()
    run(obj.settings(environ), environ)


@click.command()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
def healthcheck(timeout: float) -> None:
    """Exit 0 when the server on this host answers /health (the image's HEALTHCHECK)."""
    from http.client import HTTPException

    from mlflow_stack.native.mlflow import http_status
    from mlflow_stack.settings.contract import setting

    port = setting("MLFLOW_STACK_PORT").value_from(os.environ)
    try:
        code = http_status(f"http://127.0.0.1:{port}/health", timeout=timeout)
    except (OSError, HTTPException) as error:  # HTTPException: not HTTP (BadStatusLine, ...)
        detail = " ".join(str(error).split())[:200]  # BadStatusLine's is the line, CRLF and all
        raise StackError(f"no answer from http://127.0.0.1:{port}/health: {detail}") from None
    if code != 200:
        raise StackError(f"http://127.0.0.1:{port}/health answered HTTP {code}")
