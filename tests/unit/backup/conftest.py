"""A real S3 for the backup's object copies: moto's threaded server on a loopback port, one per
session of this folder, with a fresh bucket for each test that asks for one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from tests.conftest import make_settings


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def settings_for(endpoint: str, bucket: str | None = None, **overrides: str) -> Settings:
    """Settings of a stack whose bucket (new and unique unless named) is on ``endpoint``."""
    return make_settings(
        MLFLOW_STACK_S3_ENDPOINT_URL=endpoint,
        MLFLOW_STACK_S3_BUCKET=bucket or f"b-{uuid.uuid4().hex[:16]}",
        **overrides,
    )


@pytest.fixture
def settings(s3_endpoint: str) -> Settings:
    """Settings whose bucket exists and is empty."""
    settings = settings_for(s3_endpoint)
    s3_client(settings).create_bucket(Bucket=settings.s3_bucket)
    return settings


@pytest.fixture
def s3(settings: Settings) -> Any:
    return s3_client(settings)
