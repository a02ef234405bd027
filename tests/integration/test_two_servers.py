"""Two `mlflow-stack serve` processes on one PostgreSQL and one bucket behave as one server.

This is what several stateless servers behind a load balancer need. On the session stack's
PostgreSQL and S3 server, with databases and a bucket that do not exist yet, servers A and B
(the same settings but the port; one worker each, as test_upgrade's targets) start at the same
moment: both create the databases and the bucket and migrate the schemas at once, which the
migration lock serialises. Then everything written through one server is read back through the
other: runs, artifacts, the registry, users, passwords and permissions, and one metric history
written through both at once.

A server that exits while starting fails the start-up test and is started once more, as its
supervisor would start it, so that the other tests still compare two servers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from mlflow_stack.server.authstore import KEPT_FOR
from mlflow_stack.stores.upgrade import schemas
from tests.conftest import LiveStack, distinct_free_ports
from tests.integration.test_upgrade import Target, stop, wait_healthy

#: Seconds a worker remembers a verified password: how late a password change may reach the
#: other server. Short here so that the test can wait it out.
AUTH_CACHE_TTL = 2
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
#: What the logs of a clean start never contain.
FAILURES = ("Traceback", "error:", "ERROR", "already exists", "migration failed", "Duplicate")


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def wait_healthy(self) -> None:
        assert self.process and self.log
        wait_healthy(self.port, self.process, self.log, timeout=120)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def auth(self) -> Any:
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=self.uri)

    def status(self, path: str, auth: tuple[str, str], **kwargs: Any) -> int:
        """The status of one request on a new connection (so any worker may answer it)."""
        method = "POST" if "json" in kwargs else "GET"
        return requests.request(
            method, self.uri + path, auth=auth, timeout=30, **kwargs
        ).status_code


@dataclass
class Pair:
    target: Target  # the databases and bucket both servers use
    a: Server
    b: Server
    started_in: float  # seconds from starting both to both healthy
    heads: dict[str, str]  # the installed MLflow's schema heads: tracking, auth
    start_logs: dict[str, str]  # each server's output up to healthy, of its first start
    start_failures: dict[str, str]  # the servers that exited while starting: why


def remove(target: Target) -> None:
    """Drop the target's databases and bucket, whatever the servers got to create."""
    admin = target.stack.pg("postgres")
    try:
        with admin.cursor() as cursor:
            for name in target.databases():
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
    s3 = target.stack.s3()
    if target.bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=target.bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=target.bucket)


@pytest.fixture(scope="module")
def pair(stack: LiveStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    target = Target(stack, uuid.uuid4().hex[:10])
    assert target.databases() == []  # nothing exists yet: both servers race to create it
    logs = tmp_path_factory.mktemp("two-servers")
    servers = []
    for name, port in zip("AB", distinct_free_ports(2), strict=True):
        env = target.serve_env(port)  # the same settings but the port
        env["MLFLOW_STACK_AUTH_CACHE_TTL"] = str(AUTH_CACHE_TTL)
        servers.append(Server(name, port, [*target.serve_command(), "serve"], env))
    failures: dict[str, str] = {}
    try:
        began = time.monotonic()
        for server in servers:  # at the same moment
            server.start(logs / f"serve-{server.name}.log")
        # Meanwhile (its imports take seconds): the schema revisions both should migrate to.
        heads = {schema.label: schema.head for schema in schemas(stack.settings)}
        for server in servers:
            try:
                server.wait_healthy()
            except pytest.fail.Exception as failure:
                assert server.process and server.process.poll() is not None, failure
                # It exited while starting: the start-up test fails on that. Started again,
                # as its supervisor would (native, compose, systemd on EC2), so that the
                # other tests still have two servers to compare.
                failures[server.name] = str(failure)
                server.start(logs / f"serve-{server.name}-again.log")
                server.wait_healthy()
        started_in = time.monotonic() - began
        print(f"both servers healthy {started_in:.1f} s after starting them together")
        start_logs = {s.name: (logs / f"serve-{s.name}.log").read_text() for s in servers}
        yield Pair(target, servers[0], servers[1], started_in, heads, start_logs, failures)
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(stop, [s.process for s in servers if s.process]))
        remove(target)


def test_both_start_together_on_nothing_and_migrate_once(pair: Pair) -> None:
    target = pair.target
    for server in (pair.a, pair.b):
        answer = requests.get(server.uri + "/health", timeout=10)
        assert answer.status_code == 200, (server.name, answer.text)
        assert server.process and server.process.poll() is None

    # Both databases and nothing else (no copy: nothing was behind), each schema at the head
    # with one alembic row, one admin, the database defaults set, the bucket there.
    assert target.databases() == sorted([target.db, target.auth_db])
    heads = pair.heads
    version = "SELECT version_num FROM alembic_version"
    assert target.query(target.db, version) == [(heads["tracking"],)]
    auth_version = "SELECT version_num FROM alembic_version_auth"
    assert target.query(target.auth_db, auth_version) == [(heads["auth"],)]
    admin = target.stack.settings.admin_username
    assert target.query(target.auth_db, "SELECT username, is_admin FROM users") == [(admin, True)]
    assert target.query(
        "postgres",
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d"
        " ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
        target.db,
    ) == [(["work_mem=32MB"],)]
    target.stack.s3().head_bucket(Bucket=target.bucket)

    logs = pair.start_logs
    for name, text in logs.items():
        print(f"--- server {name} started with:")
        print("\n".join(line for line in text.splitlines() if "mlflow-stack:" in line))
    # One server created each database and the tracking schema, and made the admin.
    both = "".join(logs.values())
    for line in (
        f"created database {target.db}\n",
        f"created database {target.auth_db}\n",
        f"creating the tracking schema in {target.db}\n",
        f"Created admin user '{admin}'",
    ):
        assert both.count(line) == 1, (line, logs)
    # Neither failed on the way, nor logged an error.
    assert not pair.start_failures, f"a server exited while starting: {pair.start_failures}"
    for name, text in logs.items():
        found = [word for word in FAILURES if word in text]
        assert not found, f"server {name} logged {found}:\n{text[-4000:]}"


def test_runs_artifacts_and_registry_written_through_one_read_through_the_other(
    pair: Pair, tmp_path: Path
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    a, b = pair.a.client(), pair.b.client()
    experiment_id = a.create_experiment(f"two-{uuid.uuid4().hex[:8]}", tags={"team": "taxi"})
    assert b.get_experiment(experiment_id).tags["team"] == "taxi"

    # A run written through A reads back through B.
    run_id = a.create_run(experiment_id, run_name="through-a", tags={"server": "A"}).info.run_id
    a.log_batch(
        run_id,
        metrics=[Metric("rmse", 10.0 / (step + 1), 1_700_000_000_000 + step, step)
                 for step in range(20)],
        params=[Param("alpha", "0.5"), Param("model", "ridge")],
        tags=[RunTag("stage", "train")],
    )  # fmt: skip
    a.log_metric(run_id, "accuracy", 0.91, step=3)
    a.set_tag(run_id, "developer", "ada")
    a.set_terminated(run_id)
    seen = b.get_run(run_id)
    assert seen.info.status == "FINISHED" and seen.info.run_name == "through-a"
    assert seen.data.params == {"alpha": "0.5", "model": "ridge"}
    assert {k: seen.data.tags[k] for k in ("server", "stage", "developer")} == {
        "server": "A",
        "stage": "train",
        "developer": "ada",
    }
    assert seen.data.metrics == {"rmse": 10.0 / 20, "accuracy": 0.91}
    history = b.get_metric_history(run_id, "rmse")
    assert [(m.step, m.value) for m in history] == [(s, 10.0 / (s + 1)) for s in range(20)]

    # A run created through B reads back through A, next to the first.
    other = b.create_run(experiment_id, run_name="through-b").info.run_id
    b.log_param(other, "alpha", "0.7")
    assert a.get_run(other).data.params == {"alpha": "0.7"}
    found = a.search_runs([experiment_id], order_by=["attributes.run_name ASC"])
    assert [r.info.run_id for r in found] == [run_id, other]

    # An artifact uploaded through A (into the bucket) downloads byte-identical through B.
    payload = os.urandom(3 * 2**20 + 17)
    source = tmp_path / "up" / "weights.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    a.log_artifact(run_id, str(source), "model")
    assert [f.path for f in b.list_artifacts(run_id, "model")] == ["model/weights.bin"]
    downloaded = Path(b.download_artifacts(run_id, "model/weights.bin", str(tmp_path)))
    assert hashlib.sha256(downloaded.read_bytes()).digest() == hashlib.sha256(payload).digest()
    keys = [
        item["Key"]
        for item in pair.target.stack.s3().list_objects_v2(Bucket=pair.target.bucket)["Contents"]
    ]
    assert [key for key in keys if key.endswith(f"{run_id}/artifacts/model/weights.bin")], keys

    # A model version and alias set through B resolve through A.
    name = f"two-model-{uuid.uuid4().hex[:8]}"
    b.create_registered_model(name, tags={"owner": "ada"})
    version = b.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    b.set_registered_model_alias(name, "champion", version.version)
    champion = a.get_model_version_by_alias(name, "champion")
    assert (champion.version, champion.run_id) == (version.version, run_id)
    model = a.get_registered_model(name)
    assert model.aliases == {"champion": version.version} and model.tags == {"owner": "ada"}


def test_users_passwords_and_permissions_hold_across_servers(pair: Pair) -> None:
    a, b = pair.a, pair.b
    user = f"ada-{uuid.uuid4().hex[:6]}"
    old, new = "old-password-123456", "new-password-654321"

    # Created through A, logs in on B.
    a.auth().create_user(user, old)
    assert b.status(SEARCH, (user, old)) == 200
    assert b.auth().get_user(user).username == user

    # Permissions granted through A are enforced by B: EDIT on one experiment (READ by
    # default), DENY on another.
    admin_a = a.client()
    editable = admin_a.create_experiment(f"two-edit-{uuid.uuid4().hex[:8]}")
    hidden = admin_a.create_experiment(f"two-hidden-{uuid.uuid4().hex[:8]}")
    get_hidden = f"/api/2.0/mlflow/experiments/get?experiment_id={hidden}"
    tag = "/api/2.0/mlflow/experiments/set-experiment-tag"
    body = {"experiment_id": editable, "key": "by", "value": user}
    assert b.status(tag, (user, old), json=body) == 403
    assert b.status(get_hidden, (user, old)) == 200
    a.auth().grant_user_permission(user, "experiment", editable, "EDIT")
    a.auth().grant_user_permission(user, "experiment", hidden, "DENY")
    granted = time.monotonic()  # B's workers keep what they read for at most KEPT_FOR
    while b.status(get_hidden, (user, old)) != 403:
        assert time.monotonic() - granted < KEPT_FOR + 1, "B still allows past the bound"
        time.sleep(0.05)
    while b.status(tag, (user, old), json=body) != 200:
        assert time.monotonic() - granted < KEPT_FOR + 1, "B still refuses past the bound"
        time.sleep(0.05)
    assert admin_a.get_experiment(editable).tags["by"] == user  # read back through A

    # A password changed through B: A's workers remember the old one for at most the TTL.
    for _ in range(6):  # on new connections, so that A's workers verify and remember it
        assert a.status(SEARCH, (user, old)) == 200
    b.auth().update_user_password(user, new)
    changed = time.monotonic()
    assert a.status(SEARCH, (user, new)) == 200  # never verified on A: read from the database
    assert b.status(SEARCH, (user, new)) == 200
    refused_in = None
    in_a_row = 0
    while time.monotonic() - changed < AUTH_CACHE_TTL + 5:
        if a.status(SEARCH, (user, old)) == 401:
            refused_in = refused_in or time.monotonic() - changed
            in_a_row += 1
            if in_a_row == 6:
                break
        else:
            refused_in, in_a_row = None, 0
        time.sleep(0.05)
    stable_in = time.monotonic() - changed
    first = "never" if refused_in is None else f"{refused_in:.2f} s"
    print(
        f"password changed through B: the old one refused by A first after {first}, "
        f"on 6 new connections in a row after {stable_in:.2f} s (TTL {AUTH_CACHE_TTL} s)"
    )
    assert refused_in is not None and in_a_row == 6, "A still accepts the old password"
    assert stable_in <= AUTH_CACHE_TTL + 1.5
    for server in (a, b):
        assert server.status(SEARCH, (user, old)) == 401
        assert server.status(SEARCH, (user, new)) == 200


def test_writers_on_both_servers_at_once_lose_and_duplicate_nothing(pair: Pair) -> None:
    clients = [pair.a.client(), pair.b.client()]
    experiment_id = clients[0].create_experiment(f"two-writers-{uuid.uuid4().hex[:8]}")
    run_id = clients[1].create_run(experiment_id).info.run_id
    per_writer = 150
    start = threading.Barrier(2)
    base = 1_700_000_000_000

    def point(step: int) -> tuple[int, float, int]:
        return step, step * 0.25, base + step

    def write(writer: int) -> None:
        # Writer w logs steps w, w+2, w+4, ... alternately through both servers, writer 0
        # starting on A and writer 1 on B: the run's first points reach both at once.
        start.wait()
        for index in range(per_writer):
            step, value, timestamp = point(2 * index + writer)
            client = clients[(index + writer) % 2]
            client.log_metric(run_id, "loss", value, timestamp=timestamp, step=step)

    began = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(write, writer) for writer in (0, 1)]:
            done.result()
    print(f"{2 * per_writer} points through both servers in {time.monotonic() - began:.1f} s")

    expected = [point(step) for step in range(2 * per_writer)]
    for client in clients:
        history = client.get_metric_history(run_id, "loss")
        assert sorted((m.step, m.value, m.timestamp) for m in history) == expected
        assert client.get_run(run_id).data.metrics == {"loss": expected[-1][1]}
