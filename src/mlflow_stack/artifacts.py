"""MLflow's S3 artifact repository, registered for ``s3://`` through MLflow's
``mlflow.artifact_repository`` entry point, with one change: a missing object raises MLflow's
RESOURCE_DOES_NOT_EXIST.

MLflow 3.17 lets botocore's 404 escape the artifact download route as a 500, and its client
retries a 500 with exponential backoff for minutes. Loading ``runs:/<run>/model`` always hits
this, because the loader tries the run's artifact path first and falls back to the logged
model only after that download fails; with a 404 it falls back at once.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository as MlflowS3Repository

MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3ArtifactRepository(MlflowS3Repository):
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
