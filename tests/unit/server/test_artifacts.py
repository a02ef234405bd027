"""The stack's S3 artifact repository against a real S3 on a loopback socket (moto's server):
a missing object is MLflow's 404 rather than a 500, uploads stream into S3 as MLflow's own
upload would store them, and an upload that fails or is not stored whole leaves nothing.

Failures a real S3 rarely shows (a stored size that differs) use test_multipart's fake S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from mlflow_stack.server import multipart
from mlflow_stack.server.artifacts import S3ArtifactRepository
from tests.unit.server.test_multipart import (
    FakeS3,
    S3Error,
    assert_nothing_left,
    pattern,
    stream,
)

ROOT = "1/0123456789abcdef/artifacts"  # an artifact root below the bucket, as MLflow makes them
PART = 64 * 1024  # the part size in these tests, to keep them fast


@dataclass
class Store:
    repository: S3ArtifactRepository
    s3: Any  # a client of our own, to look at what the repository stored
    bucket: str

    def key(self, path: str) -> str:
        return f"{ROOT}/{path}"

    def read(self, path: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=self.key(path))["Body"].read()

    def head(self, path: str) -> dict[str, Any]:
        return self.s3.head_object(Bucket=self.bucket, Key=self.key(path))

    def keys(self) -> list[str]:
        """Every key with a version or a delete marker: what the bucket keeps, if anything."""
        listed = self.s3.list_object_versions(Bucket=self.bucket)
        return sorted(
            item["Key"] for item in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        )

    def unfinished_uploads(self) -> list[dict[str, Any]]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])


@pytest.fixture
def store(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The repository on a fresh bucket, configured through the environment as the server is."""
    for name, value in {
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": "access-key-1",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-key-123456",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("MLFLOW_S3_UPLOAD_EXTRA_ARGS", "MLFLOW_S3_EXPECTED_BUCKET_OWNER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="access-key-1",
        aws_secret_access_key="s3-secret-key-123456",
    )
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    # Versioned, as Terraform makes the bucket on AWS. (moto answers an unversioned multipart
    # completion with VersionId "null", then refuses HEAD ?versionId=null, which AWS accepts.)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return Store(S3ArtifactRepository(f"s3://{bucket}/{ROOT}"), s3, bucket)


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of PART bytes, and a moto that accepts them (S3 wants 5 MiB but the last)."""
    import moto.s3.models

    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART)


def test_mlflow_uses_this_repository_for_s3_and_streams_uploads_into_it() -> None:
    # The entry point in pyproject.toml; the upload route streams only to a StreamUploadMixin.
    repository = get_artifact_repository("s3://bucket/1/run/artifacts")
    assert type(repository) is S3ArtifactRepository
    assert isinstance(repository, StreamUploadMixin)


# --- downloads ---


def test_a_missing_artifact_is_resource_does_not_exist_a_404(store: Store, tmp_path: Path) -> None:
    # What the download route calls; it answers with the exception's HTTP status.
    with pytest.raises(MlflowException) as raised:
        store.repository.download_artifacts("model/MLmodel", str(tmp_path))
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert raised.value.get_http_status_code() == 404
    assert "model/MLmodel" in raised.value.message


def test_the_missing_file_itself_raises_the_404_naming_it(store: Store, tmp_path: Path) -> None:
    with pytest.raises(MlflowException, match=r"No artifact at 'model/MLmodel'") as raised:
        store.repository._download_file("model/MLmodel", str(tmp_path / "MLmodel"))
    assert raised.value.get_http_status_code() == 404
    assert raised.value.__cause__ is None  # botocore's error is not chained into the answer
    assert not (tmp_path / "MLmodel").exists()


def test_an_existing_artifact_downloads_unchanged(store: Store, tmp_path: Path) -> None:
    body = pattern(70_001)
    store.s3.put_object(Bucket=store.bucket, Key=store.key("model/model.pkl"), Body=body)
    local = store.repository.download_artifacts("model/model.pkl", str(tmp_path))
    assert Path(local).read_bytes() == body


def test_other_s3_errors_are_not_turned_into_a_404(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    store.s3.put_object(Bucket=store.bucket, Key=store.key("model.pkl"), Body=b"x")
    # From now on moto checks credentials: the repository's key is not one it knows.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(ClientError) as raised:
        store.repository._download_file("model.pkl", str(tmp_path / "model.pkl"))
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# --- uploads ---


def test_a_streamed_upload_stores_the_bytes_as_mlflows_own_upload_would(store: Store) -> None:
    body = pattern(123_457)
    store.repository.log_artifact_from_stream(io.BytesIO(body), "metrics.json", "eval/run-1")
    assert store.read("eval/run-1/metrics.json") == body
    assert store.head("eval/run-1/metrics.json")["ContentType"] == "application/json"


def test_an_upload_without_artifact_path_lands_in_the_root_under_the_base_name(
    store: Store,
) -> None:
    store.repository.log_artifact_from_stream(io.BytesIO(b"a,b\n"), "some/dir/table.csv.gz")
    head = store.head("table.csv.gz")
    assert (head["ContentType"], head["ContentEncoding"]) == ("text/csv", "gzip")
    assert store.keys() == [store.key("table.csv.gz")]


@pytest.mark.usefixtures("small_parts")
def test_an_async_upload_larger_than_a_part_is_stored_whole_as_a_multipart_upload(
    store: Store,
) -> None:
    body = pattern(2 * PART + 3)  # three parts, the last of 3 bytes

    asyncio.run(
        store.repository.log_artifact_from_async_stream(stream(body, 4099), "model.bin", "m")
    )

    stored = store.read("m/model.bin")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()
    head = store.head("m/model.bin")
    assert head["ETag"].endswith('-3"')  # S3 assembled it from three parts
    assert head["ContentType"] == "application/octet-stream"
    assert store.unfinished_uploads() == []


def test_a_small_async_upload_is_one_put(store: Store) -> None:
    asyncio.run(
        store.repository.log_artifact_from_async_stream(stream(b"hello", 2), "notes.txt", "docs")
    )
    assert store.read("docs/notes.txt") == b"hello"
    head = store.head("docs/notes.txt")
    assert "-" not in head["ETag"]  # a single PUT's ETag is the MD5, no part count
    assert head["ContentType"] == "text/plain"


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize("size", [100, 3 * PART], ids=["single PUT", "multipart"])
def test_uploads_carry_mlflows_extra_upload_arguments(
    store: Store, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", json.dumps({"Metadata": {"team": "a"}}))

    asyncio.run(store.repository.log_artifact_from_async_stream(stream(pattern(size), 4099), "x"))
    store.repository.log_artifact_from_stream(io.BytesIO(b"y"), "y")

    assert store.head("x")["Metadata"] == {"team": "a"}
    assert store.head("y")["Metadata"] == {"team": "a"}


@pytest.mark.usefixtures("small_parts")
def test_an_upload_cut_off_midway_leaves_no_object_and_no_unfinished_upload(store: Store) -> None:
    async def cut_off() -> AsyncIterator[bytes]:  # 2.5 parts, then the client is gone
        received = 0
        async for piece in stream(pattern(5 * PART), 4099):
            yield piece
            received += len(piece)
            if received > 2.5 * PART:
                raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        asyncio.run(store.repository.log_artifact_from_async_stream(cut_off(), "model.bin"))

    assert store.keys() == []
    assert store.unfinished_uploads() == []


def test_the_upload_route_answers_500_when_the_object_is_not_stored_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What MLflow's upload route calls; it turns an MlflowException into its HTTP status, and
    # MLflow's client retries a 500.
    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    s3 = FakeS3(size_error=-1)
    repository = S3ArtifactRepository("s3://bucket/run/artifacts")
    monkeypatch.setattr(repository, "_get_s3_client", lambda: s3)

    with pytest.raises(MlflowException, match="not stored whole") as raised:
        asyncio.run(repository.log_artifact_from_async_stream(stream(pattern(3 * PART), 4099), "m"))

    assert raised.value.get_http_status_code() == 500
    assert_nothing_left(s3)


def test_an_s3_failure_during_the_upload_propagates_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the integrity check gets the explanatory MlflowException; S3's own errors reach
    # MLflow's route unchanged.
    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    s3 = FakeS3(fail_part=2)
    repository = S3ArtifactRepository("s3://bucket/run/artifacts")
    monkeypatch.setattr(repository, "_get_s3_client", lambda: s3)

    with pytest.raises(S3Error, match="InternalError"):
        asyncio.run(repository.log_artifact_from_async_stream(stream(pattern(3 * PART), 4099), "m"))

    assert_nothing_left(s3)


def test_an_artifact_store_that_does_not_answer_is_mlflows_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 down or restarting (no connection): MLflow's 503 in its JSON, which its client
    retries, rather than the bare 500 MLflow's route would let out."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    repository = S3ArtifactRepository("s3://bucket/run/artifacts")
    monkeypatch.setattr(repository, "_get_s3_client", lambda: client)

    with pytest.raises(MlflowException, match="The artifact store did not answer") as raised:
        asyncio.run(repository.log_artifact_from_async_stream(stream(pattern(1000), 100), "m"))

    assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert raised.value.get_http_status_code() == 503
