"""A real S3 for the backup's object copies: moto's threaded server on a loopback port (the
session's, tests/unit/conftest.py), with a fresh bucket for each test that asks for one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import s3_client
from tests.conftest import make_settings


def settings_for(endpoint: str, bucket: str | None = None, **overrides: str) -> Settings:
    """Settings of a stack whose bucket (new and unique unless named) is on ``endpoint``."""
    return make_settings(
        MLFLOW_STACK_S3_ENDPOINT_URL=endpoint,
        MLFLOW_STACK_S3_BUCKET=bucket or f"b-{uuid.uuid4().hex[:16]}",
        **overrides,
    )


@pytest.fixture
def settings(s3_url: str) -> Settings:
    """Settings whose bucket exists and is empty."""
    settings = settings_for(s3_url)
    s3_client(settings).create_bucket(Bucket=settings.s3_bucket)
    return settings


@pytest.fixture
def s3(settings: Settings) -> Any:
    return s3_client(settings)
