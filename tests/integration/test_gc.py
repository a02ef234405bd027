"""`mlflow-stack gc` on the live stack, run as a user runs it: a subprocess with only the client
variables (no database or storage credentials). Exactly the runs and experiments deleted more
than N days ago lose their rows and their objects; everything else stays, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from mlflow_stack.gc import ENDPOINT
from tests.conftest import LiveStack

LONG_AGO_MS = 30 * 86_400_000  # a month back: older than --older-than 7
PROXIED = "mlflow-artifacts:/"


@dataclass
class Scene:
    """What the tests create: ``gone`` must be collected, ``kept`` must survive."""

    gone_runs: list[str] = field(default_factory=list)
    kept_runs: list[str] = field(default_factory=list)
    gone_experiments: list[str] = field(default_factory=list)
    kept_experiments: list[str] = field(default_factory=list)
    gone_prefixes: list[str] = field(default_factory=list)
    kept_prefixes: list[str] = field(default_factory=list)


def key_prefix(artifact_uri: str) -> str:
    assert artifact_uri.startswith(PROXIED), artifact_uri
    return artifact_uri[len(PROXIED) :].strip("/") + "/"


def run_with_artifacts(client: MlflowClient, experiment_id: str) -> Any:
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_param(run_id, "alpha", "0.5")
    client.log_metric(run_id, "loss", 0.25)
    client.set_tag(run_id, "team", "gc")
    client.log_text(run_id, f"notes of {run_id}\n", "notes.txt")
    client.log_dict(run_id, {"run": run_id}, "model/config.json")
    client.set_terminated(run_id)
    return run


def backdate(stack: LiveStack, *, runs: list[str] = (), experiments: list[str] = ()) -> None:
    connection = stack.pg()
    try:
        with connection, connection.cursor() as cursor:
            for run_id in runs:
                cursor.execute(
                    "UPDATE runs SET deleted_time = deleted_time - %s WHERE run_uuid = %s",
                    (LONG_AGO_MS, run_id),
                )
            for experiment_id in experiments:
                cursor.execute(
                    "UPDATE experiments SET last_update_time = last_update_time - %s "
                    "WHERE experiment_id = %s",
                    (LONG_AGO_MS, int(experiment_id)),
                )
    finally:
        connection.close()


@pytest.fixture(scope="module")
def scene(stack: LiveStack) -> Scene:
    client = MlflowClient(stack.tracking_uri)
    tag = uuid.uuid4().hex[:8]
    scene = Scene()

    # A live experiment: a run deleted long ago, one deleted just now, one alive.
    live = client.create_experiment(f"gc-live-{tag}")
    old, recent, alive = (run_with_artifacts(client, live) for _ in range(3))
    client.delete_run(old.info.run_id)
    client.delete_run(recent.info.run_id)
    backdate(stack, runs=[old.info.run_id])
    scene.gone_runs.append(old.info.run_id)
    scene.gone_prefixes.append(key_prefix(old.info.artifact_uri))
    scene.kept_runs += [recent.info.run_id, alive.info.run_id]
    scene.kept_prefixes += [
        key_prefix(recent.info.artifact_uri),
        key_prefix(alive.info.artifact_uri),
    ]
    scene.kept_experiments.append(live)

    # An experiment deleted long ago, with two runs (and objects outside any run).
    doomed = client.create_experiment(f"gc-doomed-{tag}")
    doomed_runs = [run_with_artifacts(client, doomed) for _ in range(2)]
    doomed_location = client.get_experiment(doomed).artifact_location
    stray = key_prefix(doomed_location) + "models/m-1/artifacts/"
    stack.s3().put_object(Bucket=stack.settings.s3_bucket, Key=stray + "MLmodel", Body=b"x" * 10)
    client.delete_experiment(doomed)
    backdate(stack, runs=[r.info.run_id for r in doomed_runs], experiments=[doomed])
    scene.gone_experiments.append(doomed)
    scene.gone_runs += [r.info.run_id for r in doomed_runs]
    scene.gone_prefixes += [key_prefix(doomed_location)]

    # Its neighbour whose location shares the id's characters but not the directory.
    sibling = client.create_experiment(
        f"gc-sibling-{tag}", artifact_location=doomed_location.rstrip("/") + "-sibling"
    )
    sibling_run = run_with_artifacts(client, sibling)
    scene.kept_experiments.append(sibling)
    scene.kept_runs.append(sibling_run.info.run_id)
    scene.kept_prefixes.append(key_prefix(sibling_run.info.artifact_uri))

    # An experiment deleted just now.
    fresh = client.create_experiment(f"gc-fresh-{tag}")
    fresh_run = run_with_artifacts(client, fresh)
    client.delete_experiment(fresh)
    scene.kept_experiments.append(fresh)
    scene.kept_runs.append(fresh_run.info.run_id)
    scene.kept_prefixes.append(key_prefix(fresh_run.info.artifact_uri))

    # Two experiments created on the same location; the one deleted long ago goes, but only
    # its own run's objects: the other's stay.
    shared_location = f"{PROXIED}gc-shared-{tag}"
    shared_gone = client.create_experiment(f"gc-shared-a-{tag}", artifact_location=shared_location)
    shared_kept = client.create_experiment(f"gc-shared-b-{tag}", artifact_location=shared_location)
    shared_gone_run = run_with_artifacts(client, shared_gone)
    shared_kept_run = run_with_artifacts(client, shared_kept)
    client.delete_experiment(shared_gone)
    backdate(stack, runs=[shared_gone_run.info.run_id], experiments=[shared_gone])
    scene.gone_experiments.append(shared_gone)
    scene.gone_runs.append(shared_gone_run.info.run_id)
    scene.gone_prefixes.append(key_prefix(shared_gone_run.info.artifact_uri))
    scene.kept_experiments.append(shared_kept)
    scene.kept_runs.append(shared_kept_run.info.run_id)
    scene.kept_prefixes.append(key_prefix(shared_kept_run.info.artifact_uri))
    return scene


def client_environment(stack: LiveStack, username: str, password: str) -> dict[str, str]:
    """What a user's shell gives the command: the client variables, nothing of the server's."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": username,
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def gc(
    stack: LiveStack, tmp_path: Path, *args: str, login: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = client_environment(stack, *(login or stack.admin))
    assert not any(name.startswith(("AWS_", "POSTGRES_", "MLFLOW_STACK_")) for name in env)
    return subprocess.run(
        [sys.executable, "-m", "mlflow_stack", "gc", *args],
        env=env,
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rows(stack: LiveStack, scene: Scene) -> dict[str, set[str]]:
    """Which of the scene's runs and experiments have rows, and which runs have child rows."""
    runs = scene.gone_runs + scene.kept_runs
    experiments = [int(e) for e in scene.gone_experiments + scene.kept_experiments]
    connection = stack.pg()
    try:
        with connection.cursor() as cursor:
            found: dict[str, set[str]] = {}
            cursor.execute("SELECT run_uuid FROM runs WHERE run_uuid = ANY(%s)", (runs,))
            found["runs"] = {r for (r,) in cursor.fetchall()}
            for table in ("metrics", "latest_metrics", "params", "tags"):
                cursor.execute(
                    f"SELECT DISTINCT run_uuid FROM {table} WHERE run_uuid = ANY(%s)",  # noqa: S608
                    (runs,),
                )
                found[table] = {r for (r,) in cursor.fetchall()}
            cursor.execute(
                "SELECT experiment_id FROM experiments WHERE experiment_id = ANY(%s)",
                (experiments,),
            )
            found["experiments"] = {str(e) for (e,) in cursor.fetchall()}
            return found
    finally:
        connection.close()


def objects(stack: LiveStack, prefix: str) -> dict[str, str]:
    """Key -> ETag of every object under ``prefix``."""
    s3 = stack.s3()
    found = {}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.settings.s3_bucket, Prefix=prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            found[item["Key"]] = item["ETag"]
    return found


def snapshot(stack: LiveStack, scene: Scene) -> dict[str, Any]:
    return {
        "rows": rows(stack, scene),
        "objects": {p: objects(stack, p) for p in scene.gone_prefixes + scene.kept_prefixes},
    }


@pytest.fixture(scope="module")
def before(stack: LiveStack, scene: Scene) -> dict[str, Any]:
    state = snapshot(stack, scene)
    assert state["rows"]["runs"] == set(scene.gone_runs + scene.kept_runs)
    for table in ("metrics", "latest_metrics", "params", "tags"):
        assert state["rows"][table] == set(scene.gone_runs + scene.kept_runs), table
    for prefix in scene.gone_prefixes + scene.kept_prefixes:
        assert state["objects"][prefix], f"the scene left nothing under {prefix}"
    return state


@pytest.fixture
def analyst(stack: LiveStack) -> Iterator[tuple[str, str]]:
    from mlflow.server import get_app_client

    name, password = f"gc-analyst-{uuid.uuid4().hex[:8]}", "analyst-password-123456"
    auth = get_app_client("basic-auth", tracking_uri=stack.tracking_uri)
    auth.create_user(name, password)
    yield name, password
    auth.delete_user(name)


def test_a_user_who_is_not_an_admin_is_refused_and_nothing_changes(
    stack: LiveStack, scene: Scene, before: dict[str, Any], analyst: tuple[str, str], tmp_path: Path
) -> None:
    result = gc(stack, tmp_path, "--older-than", "7", login=analyst)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {stack.tracking_uri} refused gc: only an admin may run gc ({analyst[0]!r} is not)"
    )
    assert snapshot(stack, scene) == before


def test_a_wrong_password_gets_one_line_and_nothing_changes(
    stack: LiveStack, scene: Scene, before: dict[str, Any], tmp_path: Path
) -> None:
    user, password = stack.admin
    result = gc(stack, tmp_path, "--older-than", "7", login=(user, password + "x"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {stack.tracking_uri} refused the login of {user!r}: wrong password? "
        "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
    ]
    assert snapshot(stack, scene) == before


def test_bad_input_to_the_endpoint_gets_400_in_mlflow_shape(stack: LiveStack) -> None:
    url = stack.tracking_uri + ENDPOINT
    answer = requests.post(url, json={"older_than_days": -1}, auth=stack.admin, timeout=30)
    assert answer.status_code == 400
    assert answer.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "older_than_days must be between 0 and 36500",
    }
    answer = requests.post(url, json={"older_than_days": 7}, timeout=30)
    assert answer.status_code == 401


def test_dry_run_reports_what_would_go_and_deletes_nothing(
    stack: LiveStack, scene: Scene, before: dict[str, Any], tmp_path: Path
) -> None:
    result = gc(stack, tmp_path, "--older-than", "7", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    assert set(scene.gone_runs) <= set(summary["runs"])
    assert set(scene.gone_experiments) <= set(summary["experiments"])
    assert not set(scene.kept_runs) & set(summary["runs"])
    assert not set(scene.kept_experiments) & set(summary["experiments"])
    expected = sum(len(before["objects"][p]) for p in scene.gone_prefixes)
    assert summary["objects"] >= expected
    assert snapshot(stack, scene) == before


def test_batches_of_one_with_page_tokens_add_up_to_the_whole(
    stack: LiveStack, scene: Scene, before: dict[str, Any]
) -> None:
    url = stack.tracking_uri + ENDPOINT
    whole = requests.post(
        url, json={"older_than_days": 7, "dry_run": True}, auth=stack.admin, timeout=60
    ).json()
    assert whole["next_page_token"] is None
    runs, experiments, objects, token, batches = [], [], 0, None, 0
    while True:
        document = {"older_than_days": 7, "dry_run": True, "max_items": 1}
        if token:
            document["page_token"] = token
        answer = requests.post(url, json=document, auth=stack.admin, timeout=60)
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        assert len(batch["runs"]) + len(batch["experiments"]) <= 3  # one run, or one experiment
        runs += batch["runs"]
        experiments += batch["experiments"]
        objects += batch["objects"]
        batches += 1
        token = batch["next_page_token"]
        if not token:
            break
    assert batches >= len(scene.gone_experiments) + 1
    assert sorted(runs) == sorted(whole["runs"])
    assert sorted(experiments) == sorted(whole["experiments"])
    assert objects == whole["objects"]
    assert snapshot(stack, scene) == before


def test_a_second_gc_while_one_runs_gets_409_and_changes_nothing(
    stack: LiveStack, scene: Scene, before: dict[str, Any]
) -> None:
    from mlflow_stack.gc.collector import LOCK_KEY

    holder = stack.pg()  # stands for a gc running in another worker or replica
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        answer = requests.post(
            stack.tracking_uri + ENDPOINT, json={"older_than_days": 7}, auth=stack.admin, timeout=60
        )
    finally:
        holder.close()
    assert answer.status_code == 409
    assert answer.json()["error_code"] == "RESOURCE_CONFLICT"
    assert snapshot(stack, scene) == before


def test_gc_deletes_exactly_the_old_deleted_runs_and_experiments_with_their_objects(
    stack: LiveStack, scene: Scene, before: dict[str, Any], tmp_path: Path
) -> None:
    result = gc(stack, tmp_path, "--older-than", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gc deleted ")
    server_log = (stack.data_dir / "logs" / "mlflow.log").read_text()
    assert (
        f"mlflow_stack.gc: {result.stdout.strip().rstrip('.')} (by {stack.admin[0]})" in server_log
    )

    after = snapshot(stack, scene)
    assert after["rows"]["runs"] == set(scene.kept_runs)
    for table in ("metrics", "latest_metrics", "params", "tags"):
        assert after["rows"][table] == set(scene.kept_runs), table
    assert after["rows"]["experiments"] == set(scene.kept_experiments)
    for prefix in scene.gone_prefixes:
        assert after["objects"][prefix] == {}, prefix
    for prefix in scene.kept_prefixes:
        assert after["objects"][prefix] == before["objects"][prefix], prefix

    client = MlflowClient(stack.tracking_uri)
    for run_id in scene.kept_runs:  # still served, artifacts and all
        assert client.get_run(run_id).data.params == {"alpha": "0.5"}
        assert client.download_artifacts(run_id, "notes.txt", str(tmp_path))

    again = gc(stack, tmp_path, "--older-than", "7", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert not set(scene.gone_runs) & set(summary["runs"])  # nothing left of them to collect
    assert snapshot(stack, scene) == after
