"""What docs/security.md says a registered model's permission grants, checked on the live stack.

In MLflow 3.17's permission design, the files of a registered model's versions belong to the
registered model: a user who may read the model (every user, at the default READ) downloads them
through `/model-versions/get-artifact` even when the source run's experiment is denied to them,
while MLflow's client, which downloads through the artifact proxy, is refused. A DENY grant on
the registered model closes the route; NO_PERMISSIONS is refused as a grant. When MLflow changes
any of this, this test fails and the page must change with it.
"""

from __future__ import annotations

import time
import uuid

import mlflow
import pytest
import requests

from mlflow_stack.server.authstore import KEPT_FOR
from tests.conftest import LiveStack, log_small_model


@pytest.mark.stack
def test_a_readable_registered_model_serves_its_files_to_a_user_denied_the_experiment(
    stack: LiveStack, experiment_id: str
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    with mlflow.start_run(experiment_id=experiment_id):
        info = log_small_model()
    name = f"claims-{uuid.uuid4().hex[:8]}"
    version = mlflow.register_model(info.model_uri, name).version

    auth = get_app_client("basic-auth", tracking_uri=stack.tracking_uri)
    user = (f"denied-{uuid.uuid4().hex[:6]}", "denied-password-123")
    auth.create_user(*user)
    auth.grant_user_permission(user[0], "experiment", experiment_id, "DENY")
    api = stack.tracking_uri + "/api/2.0/mlflow"

    def model_file() -> requests.Response:
        return requests.get(
            stack.tracking_uri + "/model-versions/get-artifact",
            params={"name": name, "version": version, "path": "MLmodel"},
            auth=user,
            timeout=30,
        )

    denied = requests.get(
        f"{api}/experiments/get", params={"experiment_id": experiment_id}, auth=user, timeout=30
    )
    assert denied.status_code == 403

    # the registered model, at the default READ, hands out its version's files...
    leaked = model_file()
    assert leaked.status_code == 200
    assert "artifact_path" in leaked.text  # the model's MLmodel file

    # ...while MLflow's client, which downloads through the artifact proxy, is refused
    location = requests.get(
        f"{api}/model-versions/get-download-uri",
        params={"name": name, "version": version},
        auth=user,
        timeout=30,
    ).json()["artifact_uri"]
    assert location.startswith(f"mlflow-artifacts:/{experiment_id}/")
    proxied = requests.get(
        stack.tracking_uri + "/api/2.0/mlflow-artifacts/artifacts",
        params={"path": location.removeprefix("mlflow-artifacts:/")},
        auth=user,
        timeout=30,
    )
    assert proxied.status_code == 403

    # NO_PERMISSIONS is no grant in MLflow 3.17; DENY on the registered model closes the route
    with pytest.raises(MlflowException, match="NO_PERMISSIONS"):
        auth.grant_user_permission(user[0], "registered_model", name, "NO_PERMISSIONS")
    auth.grant_user_permission(user[0], "registered_model", name, "DENY")
    # at once in the worker that made the grant, within KEPT_FOR s in the other (security.md)
    deadline = time.monotonic() + KEPT_FOR + 1
    while (status := model_file().status_code) != 403 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 403
