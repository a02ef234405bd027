"""A user denied an experiment cannot reach its artifacts by registering a model version that
points into the bucket, or anywhere else the server would read with its own credentials."""

from __future__ import annotations

import uuid
from typing import Any

import mlflow
import pytest
import requests

from tests.conftest import LiveStack, log_small_model

SECRET = "only the owners of this experiment may read this"


@pytest.fixture
def outsider(stack: LiveStack, experiment_id: str) -> tuple[str, str]:
    """A user explicitly denied the experiment (DENY: MLflow 3.17's resource-level grant for
    "no permissions"; it refuses NO_PERMISSIONS as a grant)."""
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=stack.tracking_uri)
    name, password = f"outsider-{uuid.uuid4().hex[:6]}", "outsider-password-123"
    auth.create_user(name, password)
    auth.grant_user_permission(name, "experiment", experiment_id, "DENY")
    return name, password


def test_a_denied_user_cannot_register_the_experiments_artifacts_and_download_them(
    stack: LiveStack, client: Any, experiment_id: str, outsider: tuple[str, str]
) -> None:
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, SECRET, "model/secret.txt")
    run_id = run.info.run_id
    api = stack.tracking_uri + "/api/2.0/mlflow"

    assert requests.get(f"{api}/experiments/get", params={"experiment_id": experiment_id},
                        auth=outsider, timeout=30).status_code == 403  # fmt: skip
    model = f"borrowed-{uuid.uuid4().hex[:6]}"
    created = requests.post(f"{api}/registered-models/create", json={"name": model},
                            auth=outsider, timeout=30)  # fmt: skip
    assert created.status_code == 200

    bucket = stack.settings.s3_bucket
    attempts = [
        ({"source": f"s3://{bucket}/{experiment_id}/{run_id}/artifacts/model"}, 403),
        ({"source": f"S3://{bucket}/{experiment_id}/{run_id}/artifacts/model"}, 403),
        ({"source": f"{stack.settings.s3_endpoint_url}/{bucket}/{experiment_id}/{run_id}"}, 403),
        ({"source": "http://169.254.169.254/latest/meta-data/"}, 403),
        ({"source": "file:///etc"}, 403),
        # the schemes MLflow itself checks: the run must be named, and readable
        ({"source": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model",
          "run_id": run_id}, 403),
        ({"source": f"runs:/{run_id}/model", "run_id": run_id}, 403),
        ({"source": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"}, 400),
    ]  # fmt: skip
    for body, status in attempts:
        answer = requests.post(f"{api}/model-versions/create", json={"name": model, **body},
                               auth=outsider, timeout=30)  # fmt: skip
        assert answer.status_code == status, (body, answer.text)
    for version in range(1, 4):
        leaked = requests.get(
            stack.tracking_uri + "/model-versions/get-artifact",
            params={"name": model, "version": str(version), "path": "secret.txt"},
            auth=outsider,
            timeout=30,
        )
        assert SECRET not in leaked.text
    assert client.search_model_versions(f"name = '{model}'") == []


def test_the_owner_still_registers_and_loads_models_from_runs(
    client: Any, experiment_id: str
) -> None:

    with mlflow.start_run(experiment_id=experiment_id):
        info = log_small_model()
    name = f"owned-{uuid.uuid4().hex[:6]}"
    version = mlflow.register_model(info.model_uri, name)
    assert version.source.startswith(("models:/", "mlflow-artifacts:", "runs:/"))
    copy = client.copy_model_version(f"models:/{name}/{version.version}", f"{name}-copy")
    assert copy.version == "1"


def test_experiments_cannot_point_their_artifacts_into_the_bucket(stack: LiveStack) -> None:
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(stack.tracking_uri)
    bucket = stack.settings.s3_bucket
    with pytest.raises(MlflowException, match="artifact_location") as refused:
        client.create_experiment(
            f"inside-{uuid.uuid4().hex[:6]}", artifact_location=f"s3://{bucket}/0"
        )
    assert refused.value.error_code == "PERMISSION_DENIED"
    allowed = client.create_experiment(
        f"proxied-{uuid.uuid4().hex[:6]}", artifact_location="mlflow-artifacts:/elsewhere"
    )
    assert client.get_experiment(allowed).artifact_location == "mlflow-artifacts:/elsewhere"


def test_a_denied_user_cannot_download_the_experiments_artifacts_through_the_proxy(
    stack: LiveStack, client: Any, experiment_id: str, outsider: tuple[str, str]
) -> None:
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, SECRET, "model/secret.txt")
    path = f"{experiment_id}/{run.info.run_id}/artifacts/model/secret.txt"
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        url = f"{stack.tracking_uri}{prefix}/mlflow-artifacts/artifacts/{path}"
        denied = requests.get(url, auth=outsider, timeout=30)
        assert denied.status_code == 403, denied.text
        assert SECRET not in denied.text
        allowed = requests.get(url, auth=stack.admin, timeout=30)
        assert (allowed.status_code, allowed.text) == (200, SECRET)
