"""Login is required, and the Host check lets the compose service name through but no
lookalike of a private address."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import LiveStack

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_api_refuses_anonymous_and_wrong_credentials_and_admits_the_admin(stack: LiveStack) -> None:
    url = stack.tracking_uri + SEARCH
    user, password = stack.admin
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=(user, password + "x"), timeout=10).status_code == 401
    assert requests.get(url, auth=("nobody", password), timeout=10).status_code == 401
    answer = requests.get(url, auth=(user, password), timeout=10)
    assert answer.status_code == 200
    assert "experiments" in answer.json()


def test_writes_need_login_too(stack: LiveStack) -> None:
    answer = requests.post(
        stack.tracking_uri + "/api/2.0/mlflow/experiments/create",
        json={"name": "anonymous-write"},
        timeout=10,
    )
    assert answer.status_code == 401


def test_compose_service_name_passes_the_host_check_and_a_stranger_does_not(
    stack: LiveStack,
) -> None:
    url = stack.tracking_uri + SEARCH
    ok = requests.get(url, auth=stack.admin, headers={"Host": "mlflow:5000"}, timeout=10)
    assert ok.status_code == 200
    refused = requests.get(url, auth=stack.admin, headers={"Host": "evil.example"}, timeout=10)
    assert refused.status_code == 403
    assert "Invalid Host header" in refused.text


LOOKALIKES = [
    "10.evil.example",
    "10.0.0.1.evil.example:5000",
    "192.168.1.attacker.example",
    "172.16.attacker.example",
    "fd00.attacker.example",
    "localhost.attacker.example",
]
LITERALS = ["127.0.0.1", "10.20.30.40:5000", "172.16.0.9", "192.168.1.7:80", "[::1]:5000"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/2.0/mlflow/experiments/search?max_results=1",
        "/ajax-api/2.0/mlflow/experiments/search?max_results=1",
        "/api/2.0/mlflow-artifacts/artifacts?path=0",
        "/",
    ],
    ids=["api", "ajax-api", "artifacts", "ui"],
)
def test_names_that_merely_look_like_private_addresses_are_refused_on_every_route(
    stack: LiveStack, path: str
) -> None:
    url = stack.tracking_uri + path
    for host in LOOKALIKES:
        answer = requests.get(url, auth=stack.admin, headers={"Host": host}, timeout=10)
        assert answer.status_code == 403, host
        assert "Invalid Host header" in answer.text
    for host in LITERALS:
        answer = requests.get(url, auth=stack.admin, headers={"Host": host}, timeout=10)
        assert answer.status_code == 200, host


def test_admin_creates_a_user_who_reads_everything_but_edits_only_their_own(
    stack: LiveStack, client, experiment_id: str
) -> None:
    import uuid

    from mlflow.server import get_app_client

    name, password = f"analyst-{uuid.uuid4().hex[:6]}", "analyst-password-123"
    get_app_client("basic-auth", tracking_uri=stack.tracking_uri).create_user(name, password)
    api = stack.tracking_uri + "/api/2.0/mlflow"
    as_user = (name, password)

    read = requests.get(f"{api}/experiments/get", params={"experiment_id": experiment_id},
                        auth=as_user, timeout=10)  # fmt: skip
    assert read.status_code == 200  # default permission READ
    rename = requests.post(
        f"{api}/experiments/update",
        json={"experiment_id": experiment_id, "new_name": "hijacked"},
        auth=as_user,
        timeout=10,
    )
    assert rename.status_code == 403
    own = requests.post(f"{api}/experiments/create", json={"name": f"{name}-own"},
                        auth=as_user, timeout=10)  # fmt: skip
    assert own.status_code == 200
    assert client.get_experiment(experiment_id).name != "hijacked"


def test_server_advertises_proxied_artifact_transfers_only(stack: LiveStack) -> None:
    """Clients must not be sent to the S3 endpoint, which they may not reach."""
    info = requests.get(stack.tracking_uri + "/api/3.0/mlflow/server-info", timeout=10).json()
    assert info["multipart_uploads_enabled"] is False
    assert info["multipart_downloads_enabled"] is False
    assert info["store_type"] == "SqlStore"
