"""MLflow's S3 artifact repository, registered for ``s3://`` through MLflow's
``mlflow.artifact_repository`` entry point, with two additions.

Missing objects raise MLflow's RESOURCE_DOES_NOT_EXIST. MLflow 3.17 lets botocore's 404 escape
the artifact download route as a 500, and its client retries a 500 with exponential backoff
for minutes. Loading ``runs:/<run>/model`` always hits this, because the loader tries the
run's artifact path first and falls back to the logged model only after that download fails;
with a 404 it falls back at once.

Proxied uploads stream. MLflow's upload route hands the request body to repositories that
implement its ``StreamUploadMixin``; for any other repository it first writes the whole body
to a temporary file (one thread hop per network chunk) and only then uploads the file, so the
client waits for both copies in turn. Here the body goes to S3 as a multipart upload while it
is still arriving: a few parts in flight, memory bounded by them, and an aborted upload (client
gone, S3 error) leaves neither an object nor a dangling multipart upload behind. The route
answers 200 only once the stored object has been checked to hold every byte received; if it
does not, it is deleted and the client gets a 500 saying so, which MLflow's client retries.

Proxied downloads stream too (:mod:`mlflow_stack.server.downloads`): :meth:`open_object` opens
the stored object for reading, one request to S3, so its bytes can go to the client while they
arrive rather than after a copy to a temporary file.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository as MlflowS3Repository

from mlflow_stack.server.multipart import MultipartUpload, UploadIntegrityError

MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass
class StoredObject:
    """An object opened for reading: its size and its bytes, read as they arrive."""

    size: int
    body: Any  # botocore's StreamingBody
    etag: str = ""  # as S3 gives it, quoted
    last_modified: datetime | None = None

    def chunks(self, size: int) -> Iterator[bytes]:
        """The bytes in pieces of at most ``size``; closes the body at the end or on error.
        A body shorter than the stored size raises (botocore checks the length)."""
        try:
            yield from self.body.iter_chunks(size)
        finally:
            self.body.close()


def directory_error(artifact_path: str) -> MlflowException:
    """MLflow's answer for a download of a directory (its local-file branch says this)."""
    return MlflowException.invalid_parameter_value(
        f"Artifact path refers to a directory, not a file: '{artifact_path}'"
    )


class S3ArtifactRepository(MlflowS3Repository, StreamUploadMixin):
    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        from botocore.exceptions import ClientError

        try:
            super()._download_file(remote_file_path, local_path)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in MISSING:
                raise MlflowException(
                    f"No artifact at {remote_file_path!r}", error_code=RESOURCE_DOES_NOT_EXIST
                ) from None
            raise

    def open_object(self, artifact_path: str) -> StoredObject:
        """Open the artifact at ``artifact_path`` (relative to this repository) for reading.

        A missing object is MLflow's RESOURCE_DOES_NOT_EXIST, unless objects exist below it as
        a directory: then it is MLflow's INVALID_PARAMETER_VALUE for a directory."""
        from botocore.exceptions import ClientError

        bucket, root = self.parse_s3_compliant_uri(self.artifact_uri)
        key = posixpath.join(root, artifact_path)
        client = self._get_s3_client()
        try:
            found = client.get_object(Bucket=bucket, Key=key, **self._bucket_owner_params)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in MISSING:
                raise
            below = client.list_objects_v2(
                Bucket=bucket,
                Prefix=key.rstrip("/") + "/",
                MaxKeys=1,
                **self._bucket_owner_params,
            )
            if below.get("KeyCount", 0):
                raise directory_error(artifact_path) from None
            raise MlflowException(  # MLflow's download_artifacts words it so
                "The following failures occurred while downloading one or more artifacts from "
                f"{self.artifact_uri}:\n##### File {artifact_path} #####\n"
                f"No artifact at {artifact_path!r}",
                error_code=RESOURCE_DOES_NOT_EXIST,
            ) from None
        return StoredObject(
            size=found["ContentLength"],
            body=found["Body"],
            etag=found.get("ETag", ""),
            last_modified=found.get("LastModified"),
        )

    def _destination(self, file_name: str, artifact_path: str | None) -> tuple[str, str]:
        bucket, key = self.parse_s3_compliant_uri(self.artifact_uri)
        if artifact_path:
            key = posixpath.join(key, artifact_path)
        return bucket, posixpath.join(key, posixpath.basename(file_name))

    def _object_args(self, file_name: str) -> dict[str, Any]:
        """What MLflow's own upload sets: content type and encoding, owner, env extras."""
        args: dict[str, Any] = {}
        content_type, encoding = mimetypes.guess_type(file_name)
        if content_type is not None:
            args["ContentType"] = content_type
        if encoding is not None:
            args["ContentEncoding"] = encoding
        args.update(self._bucket_owner_params)
        args.update(self.get_s3_file_upload_extra_args() or {})
        return args

    def log_artifact_from_stream(
        self, stream: BinaryIO, artifact_file_name: str, artifact_path: str | None = None
    ) -> None:
        bucket, key = self._destination(artifact_file_name, artifact_path)
        self._get_s3_client().upload_fileobj(
            stream, bucket, key, ExtraArgs=self._object_args(artifact_file_name)
        )

    async def log_artifact_from_async_stream(
        self,
        chunks: AsyncIterable[bytes],
        artifact_file_name: str,
        artifact_path: str | None = None,
    ) -> None:
        bucket, key = self._destination(artifact_file_name, artifact_path)
        upload = MultipartUpload(
            self._get_s3_client(),
            bucket,
            key,
            self._object_args(artifact_file_name),
            self._bucket_owner_params,
        )
        from botocore.exceptions import ConnectionError as S3Unreachable
        from botocore.exceptions import HTTPClientError

        try:
            await upload.run(chunks)
        except UploadIntegrityError as error:  # a 500 that says why, rather than a bare one
            raise MlflowException(f"The upload was not stored whole: {error}") from error
        except (S3Unreachable, HTTPClientError) as error:
            # The artifact store did not answer (down, restarting, cut off): MLflow's 503,
            # which its client retries, in MLflow's JSON, where MLflow's route would let the
            # error out as a bare "Internal Server Error". S3's own answers pass unchanged.
            raise MlflowException(
                f"The artifact store did not answer: {error}", TEMPORARILY_UNAVAILABLE
            ) from error
