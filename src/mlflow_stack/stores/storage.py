"""The S3 artifact store for ``serve``: a client, and the bucket created if missing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.waiting import NotReady, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def s3_environment(settings: Settings) -> dict[str, str]:
    """What the MLflow server process needs to reach the bucket (empty values: unset)."""
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        # Path-style requests: S3-compatible servers have no per-bucket DNS names.
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path" if settings.s3_endpoint_url else "auto",
    }


def s3_client(
    settings: Settings,
    *,
    timeout: float = 5,
    read_timeout: float | None = None,
    attempts: int = 1,
    connections: int = 10,
) -> S3Client:
    """A boto3 S3 client for the stack's bucket; ``read_timeout`` defaults to ``timeout``;
    ``attempts`` counts every request of a call, the first one included."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            connect_timeout=timeout,
            read_timeout=timeout if read_timeout is None else read_timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
            max_pool_connections=connections,
        ),
    )


def _where(settings: Settings) -> str:
    return f"S3 at {settings.s3_endpoint_url or 'AWS'}"


def ensure_bucket(settings: Settings) -> bool:
    """Wait for S3 to accept our credentials; create the bucket if missing (True if created)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        NoCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    client = s3_client(settings)
    bucket = settings.s3_bucket

    def attempt() -> bool:
        try:
            client.head_bucket(Bucket=bucket)
            return False
        # HTTPClientError: a read timeout, or a connection closed before an HTTP answer (a
        # forwarder in front of an S3 server that is still starting).
        except (EndpointConnectionError, BotoConnectionError, HTTPClientError) as error:
            raise NotReady(str(error)) from None
        except NoCredentialsError:
            raise StackError(
                "no S3 credentials: set MLFLOW_STACK_S3_ACCESS_KEY and "
                "MLFLOW_STACK_S3_SECRET_KEY, or run with an instance role"
            ) from None
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 404:
                return _create_bucket(client, settings)
            if status in (401, 403):
                raise StackError(
                    f"{_where(settings)} refused MLFLOW_STACK_S3_ACCESS_KEY/"
                    f"MLFLOW_STACK_S3_SECRET_KEY for bucket {bucket!r} (HTTP {status})"
                ) from None
            raise NotReady(f"HTTP {status} from HEAD bucket {bucket!r}") from None

    return wait_for(
        _where(settings),
        attempt,
        timeout=settings.wait_timeout,
        hint="check MLFLOW_STACK_S3_ENDPOINT_URL, or raise MLFLOW_STACK_WAIT_TIMEOUT",
    )


def _create_bucket(client: S3Client, settings: Settings) -> bool:
    from botocore.exceptions import ClientError

    options = {}
    if not settings.s3_endpoint_url and settings.s3_region != "us-east-1":
        options["CreateBucketConfiguration"] = {"LocationConstraint": settings.s3_region}
    try:
        client.create_bucket(Bucket=settings.s3_bucket, **options)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "BucketAlreadyOwnedByYou":
            return False
        raise StackError(
            f"cannot create bucket MLFLOW_STACK_S3_BUCKET={settings.s3_bucket!r} on "
            f"{_where(settings)}: {code or error}"
        ) from None
    log.info("created bucket %s", settings.s3_bucket)
    return True
