"""`mlflow-stack backup` and `restore` between two real native stacks.

Stack A is populated (experiments, runs with params, tags and metric histories, a deleted run,
artifacts up to a 20 MB random file, a registered model with two versions, tags and an alias, a
second user with permissions), backed up through the CLI, stopped and deleted. Stack B is
new, in another directory, with its own fresh secrets; its server is stopped, the backup
restored, the server started again. Everything is then read back through the API (as A's
users) and compared with what A answered, artifacts downloaded through the server and compared
by sha256; the refusals (server running, target not empty, a damaged backup) change nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LiveStack

BIG = 20 * 2**20


@dataclass
class Scenario:
    source_answers: dict[str, Any]  # what stack A answered through the API before the backup
    source_objects: dict[str, str]  # A's bucket: key -> sha256, read with boto3
    target: LiveStack  # stack B, restored and running
    backup: Path
    admin: tuple[str, str]  # A's admin
    analyst: tuple[str, str]  # A's second user
    target_admin_password: str  # what B's own .env says (unused after the restore)
    restore_output: str


def _new_root(prefix: str) -> Path:
    # Not below pytest's 0700 basetemp: PostgreSQL runs as another account when we are root.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _started(root: Path) -> LiveStack:
    live = LiveStack.on_free_ports(root)
    live.up()
    live.load_settings()
    return live


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def populate(live: LiveStack, workdir: Path) -> tuple[str, str]:
    """Fill stack A; returns the analyst's credentials."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.server import get_app_client

    client = MlflowClient(live.tracking_uri)
    suffix = uuid.uuid4().hex[:6]
    first = client.create_experiment(f"backup-first-{suffix}", tags={"team": "forecasting"})
    second = client.create_experiment(f"backup-second-{suffix}")
    client.set_experiment_tag(second, "purpose", "restore test")

    files = workdir / "artifacts"
    (files / "plots").mkdir(parents=True)
    (files / "notes.txt").write_text("trained on january\n")
    (files / "plots" / "curve.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (files / "plots" / "big.bin").write_bytes(os.urandom(BIG))
    model_dir = workdir / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")

    run_ids = []
    for index, experiment in enumerate([first, first, second, first]):
        run = client.create_run(experiment, run_name=f"run-{index}", tags={"developer": "ada"})
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step)
                     for step in range(60)],
            params=[Param("model", "ridge"), Param("alpha", str(0.1 * (index + 1)))],
            tags=[RunTag("stage", "train"), RunTag("index", str(index))],
        )  # fmt: skip
        for step in range(5):
            client.log_metric(run_id, "accuracy", 0.5 + step / 10, step=step)
        client.log_metric(run_id, "accuracy", 0.95, step=2)  # two values at one step
        client.log_artifact(run_id, str(model_dir))
        client.log_artifact(run_id, str(files / "notes.txt"))
        if index == 0:
            client.log_artifacts(run_id, str(files / "plots"), "plots")
        client.set_terminated(run_id, "FINISHED" if index != 2 else "FAILED")
        run_ids.append(run_id)
    client.delete_run(run_ids[3])

    name = f"backup-model-{suffix}"
    client.create_registered_model(name, tags={"owner": "ada"}, description="duration model")
    for run_id in run_ids[:2]:
        version = client.create_model_version(
            name, f"runs:/{run_id}/model", run_id=run_id, tags={"from": run_id[:8]}
        )
    client.set_registered_model_alias(name, "champion", version.version)
    client.set_model_version_tag(name, version.version, "validation", "passed")

    analyst = (f"analyst-{suffix}", "analyst-password-123456")
    auth = get_app_client("basic-auth", tracking_uri=live.tracking_uri)
    auth.create_user(*analyst)
    auth.grant_user_permission(analyst[0], "experiment", first, "EDIT")
    auth.grant_user_permission(analyst[0], "registered_model", name, "MANAGE")
    return analyst


def answers(uri: str, auth: tuple[str, str], workdir: Path) -> dict[str, Any]:
    """Everything the server says about the stack, in comparable form."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    found: dict[str, Any] = {
        "experiments": sorted(
            (
                e.experiment_id,
                e.name,
                e.lifecycle_stage,
                e.artifact_location,
                sorted(e.tags.items()),
            )
            for e in experiments
        ),
        "runs": {},
        "artifacts": {},
        "models": {},
    }
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
    for run in runs:
        info, data = run.info, run.data
        found["runs"][info.run_id] = {
            "info": (info.experiment_id, info.run_name, info.status, info.lifecycle_stage,
                     info.start_time, info.end_time, info.user_id, info.artifact_uri),
            "params": data.params,
            "tags": data.tags,
            "metrics": data.metrics,
            "histories": {
                key: sorted((m.step, m.timestamp, m.value)
                            for m in client.get_metric_history(info.run_id, key))
                for key in data.metrics
            },
        }  # fmt: skip
        found["artifacts"][info.run_id] = _artifact_digests(client, info.run_id, workdir)
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        found["models"][model.name] = {
            "description": model.description,
            "tags": model.tags,
            "aliases": model.aliases,
            "versions": sorted(
                (v.version, v.source, v.run_id, v.status, sorted(v.tags.items()), v.aliases)
                for v in versions
            ),
        }
    found["users"] = _users(uri, auth)
    return found


def _artifact_digests(client: Any, run_id: str, workdir: Path) -> dict[str, str]:
    digests = {}
    pending = [""]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop() or None):
            if item.is_dir:
                pending.append(item.path)
                continue
            local = Path(client.download_artifacts(run_id, item.path, str(workdir)))
            digests[item.path] = hashlib.sha256(local.read_bytes()).hexdigest()
            local.unlink()
    return digests


def _users(uri: str, auth: tuple[str, str]) -> dict[str, Any]:
    listed = requests.get(f"{uri}/api/2.0/mlflow/users/list", auth=auth, timeout=30)
    assert listed.status_code == 200, listed.text
    users = {}
    for user in listed.json()["users"]:
        name = user["username"]
        permissions = requests.get(
            f"{uri}/api/3.0/mlflow/users/permissions/list",
            params={"username": name},
            auth=auth,
            timeout=30,
        )
        assert permissions.status_code == 200, permissions.text
        users[name] = {"user": user, "permissions": permissions.json()}
    return users


def bucket_digests(live: LiveStack) -> dict[str, str]:
    s3 = live.s3()
    digests = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=live.settings.s3_bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=live.settings.s3_bucket, Key=item["Key"])["Body"].read()
            digests[item["Key"]] = _sha256(body)
    return digests


def as_user(auth: tuple[str, str]) -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_USERNAME", auth[0])
    patch.setenv("MLFLOW_TRACKING_PASSWORD", auth[1])
    return patch


def _set_admin_password(live: LiveStack, password: str) -> None:
    lines = live.env_file.read_text().splitlines()
    lines = [
        f"MLFLOW_AUTH_ADMIN_PASSWORD={password}"
        if line.startswith("MLFLOW_AUTH_ADMIN_PASSWORD=")
        else line
        for line in lines
    ]
    live.env_file.write_text("\n".join(lines) + "\n")
    live.load_settings()


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    roots = [_new_root("mlflow-stack-backup-a-"), _new_root("mlflow-stack-backup-b-")]
    work = Path(tempfile.mkdtemp(prefix="mlflow-stack-backup-work-"))
    started: list[LiveStack] = []
    try:
        source = _started(roots[0])
        started.append(source)
        admin = source.admin
        patch = as_user(admin)
        try:
            analyst = populate(source, work)
            before = answers(source.tracking_uri, admin, work)
        finally:
            patch.undo()
        source_objects = bucket_digests(source)
        backup = work / "backup"
        made = source.cli("backup", str(backup))
        assert made.returncode == 0, made.stderr
        assert source.cli("down").returncode == 0
        shutil.rmtree(roots[0])  # the whole stack A: data dir, .env, logs

        target = _started(roots[1])
        started.append(target)
        target_admin_password = target.settings.admin_password
        stopped = target.cli("down", "mlflow")
        assert stopped.returncode == 0, stopped.stderr
        restored = target.cli("restore", str(backup))
        assert restored.returncode == 0, restored.stderr
        # As restore says: the admin's password is now the backed-up one; `up` logs in with it.
        _set_admin_password(target, admin[1])
        target.up()
        yield Scenario(
            source_answers=before,
            source_objects=source_objects,
            target=target,
            backup=backup,
            admin=admin,
            analyst=analyst,
            target_admin_password=target_admin_password,
            restore_output=restored.stderr,
        )
    finally:
        for live in started:
            if live.root.exists():
                live.cli("down")
        for root in [*roots, work]:
            shutil.rmtree(root, ignore_errors=True)


def test_the_backup_holds_both_dumps_and_every_object_with_its_digest(
    scenario: Scenario,
) -> None:
    manifest = json.loads((scenario.backup / "manifest.json").read_text())
    items = {item["key"]: item["sha256"] for item in manifest["objects"]["items"]}
    assert items == scenario.source_objects
    assert manifest["objects"]["count"] == len(items)
    assert any(item["size"] == BIG for item in manifest["objects"]["items"])
    for key, digest in items.items():
        assert _sha256((scenario.backup / "objects" / key).read_bytes()) == digest
    for role in ("tracking", "auth"):
        database = manifest["databases"][role]
        assert database["alembic_revision"]
        dump = (scenario.backup / database["file"]).read_bytes()
        assert dump.startswith(b"PGDMP")  # pg_dump's custom format
        assert _sha256(dump) == database["sha256"]
    assert not scenario.backup.with_name("backup.partial").exists()
    assert oct(scenario.backup.stat().st_mode & 0o777) == "0o700"


def test_everything_reads_back_the_same_through_the_api(scenario: Scenario, tmp_path) -> None:
    patch = as_user(scenario.admin)
    try:
        after = answers(scenario.target.tracking_uri, scenario.admin, tmp_path)
    finally:
        patch.undo()
    before = scenario.source_answers
    assert after["experiments"] == before["experiments"]
    assert after["runs"] == before["runs"]
    assert after["models"] == before["models"]
    assert after["users"] == before["users"]
    assert after["artifacts"] == before["artifacts"]
    # The comparison is not vacuous: it covers what the scenario created.
    assert len(before["runs"]) == 4
    assert sum(run["info"][3] == "deleted" for run in before["runs"].values()) == 1
    assert len(before["runs"][next(iter(before["runs"]))]["histories"]["loss"]) >= 1
    assert sum(len(digests) for digests in before["artifacts"].values()) == 4 * 2 + 2
    assert any("plots/big.bin" in digests for digests in before["artifacts"].values())
    (model,) = before["models"].values()
    assert len(model["versions"]) == 2 and model["aliases"] == {"champion": "2"}
    assert len(before["users"]) == 2
    assert bucket_digests(scenario.target) == scenario.source_objects


def test_the_backed_up_passwords_log_in_and_the_new_env_admin_password_does_not(
    scenario: Scenario,
) -> None:
    url = scenario.target.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, auth=scenario.analyst, timeout=30).status_code == 200
    assert requests.get(url, auth=scenario.admin, timeout=30).status_code == 200
    stale = (scenario.admin[0], scenario.target_admin_password)
    assert scenario.target_admin_password != scenario.admin[1]
    assert requests.get(url, auth=stale, timeout=30).status_code == 401
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in scenario.restore_output


def _state(live: LiveStack) -> tuple[int, int, int]:
    conn = live.pg()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs")
            runs = cursor.fetchone()[0]
    finally:
        conn.close()
    auth = live.pg(live.settings.auth_db)
    try:
        with auth.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM users")
            users = cursor.fetchone()[0]
    finally:
        auth.close()
    listed = live.s3().list_objects_v2(Bucket=live.settings.s3_bucket)
    return runs, users, listed.get("KeyCount", 0)


def _one_error_line(result: Any) -> str:
    """The one `error:` line of a refusal (progress lines may come before it), no traceback."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def test_restore_is_refused_while_the_server_runs(scenario: Scenario) -> None:
    before = _state(scenario.target)
    line = _one_error_line(scenario.target.cli("restore", str(scenario.backup)))
    assert "databases are in use" in line and "mlflow-stack down mlflow" in line
    assert _state(scenario.target) == before


def test_restore_is_refused_into_a_stack_that_is_not_empty(scenario: Scenario) -> None:
    before = _state(scenario.target)
    assert scenario.target.cli("down", "mlflow").returncode == 0
    try:
        line = _one_error_line(scenario.target.cli("restore", str(scenario.backup)))
    finally:
        scenario.target.up()
    assert "not empty" in line and "4 runs" in line and "users besides the admin" in line
    assert _state(scenario.target) == before


def test_a_damaged_object_in_the_backup_is_refused_naming_its_key(
    scenario: Scenario, tmp_path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(scenario.backup, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    key = next(item["key"] for item in manifest["objects"]["items"] if item["size"] == BIG)
    with (damaged / "objects" / key).open("r+b") as handle:
        handle.seek(BIG // 2)
        byte = handle.read(1)
        handle.seek(BIG // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))  # same size, one bit pattern changed
    before = _state(scenario.target)
    line = _one_error_line(scenario.target.cli("restore", str(damaged)))
    assert f"object {key} does not match its sha256" in line
    assert _state(scenario.target) == before


def test_backup_refuses_a_destination_that_is_not_empty(scenario: Scenario, tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    line = _one_error_line(scenario.target.cli("backup", str(tmp_path)))
    assert "is not empty" in line
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
