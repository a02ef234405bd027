"""Upgrading from the previous MLflow: data written by MLflow 3.16.1 (tests/integration/
mlflow-previous.in) through its own server is read back through `mlflow-stack serve` on the
pinned MLflow, which copies the database before migrating it.

The older MLflow lives in a venv cached under ~/.cache/mlflow-stack/venvs/, built once from the
pinned lock with uv and rebuilt when the lock changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import merged_environment
from mlflow_stack.stores.database import libpq_environment, migrate
from mlflow_stack.stores.upgrade import schemas
from tests.conftest import LiveStack, which_or_fail

LOCK = Path(__file__).with_name("mlflow-previous.txt")
PREVIOUS_VERSION = "3.16.1"
#: The schema heads of MLflow 3.16.1 (see mlflow-previous.in).
PREVIOUS_TRACKING_HEAD = "b7e2c1a4d9f3"
PREVIOUS_AUTH_HEAD = "f1a2b3c4d5e6"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def previous_python() -> Path:
    """The older MLflow's venv interpreter: reused while the lock is unchanged, else rebuilt
    beside the old one and swapped in whole, so an interrupted build is never used."""
    venv = cache_home() / "mlflow-stack" / "venvs" / f"mlflow-{PREVIOUS_VERSION}"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    stamp = venv / "lock.sha256"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    uv = which_or_fail("uv")
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(building)],
        [uv, "pip", "sync", "--quiet", "--python", str(building / "bin" / "python"), str(LOCK)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.fail(f"{' '.join(command)} failed:\n{result.stderr}")
    (building / "lock.sha256").write_text(digest)
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)  # `python -m ...` finds its packages by path, so the venv may move
    return python


@pytest.fixture(scope="module")
def previous() -> Path:
    began = time.monotonic()
    python = previous_python()
    version = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == PREVIOUS_VERSION
    print(f"previous MLflow venv ready in {time.monotonic() - began:.1f} s")
    return python


@dataclass
class Target:
    """Fresh databases and a bucket of the session stack's services, for one upgrade."""

    stack: LiveStack
    tag: str

    @property
    def db(self) -> str:
        return f"upgrade_{self.tag}"

    @property
    def auth_db(self) -> str:
        return f"upgrade_{self.tag}_auth"

    @property
    def bucket(self) -> str:
        return f"upgrade-{self.tag}"

    def query(self, dbname: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.stack.pg(dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, args)
                return cursor.fetchall()
        finally:
            conn.close()

    def databases(self) -> list[str]:
        rows = self.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            f"upgrade\\_{self.tag}%",
        )
        return [name for (name,) in rows]

    def copies(self) -> list[str]:
        return [name for name in self.databases() if "_before_" in name]

    def revision(self, dbname: str, table: str = "alembic_version") -> str:
        return self.query(dbname, f"SELECT version_num FROM {table}")[0][0]  # noqa: S608

    def serve_env(self, port: int) -> dict[str, str]:
        env = dict(self.stack.env)
        env.update(
            POSTGRES_DB=self.db,
            MLFLOW_STACK_AUTH_DB=self.auth_db,
            MLFLOW_STACK_S3_BUCKET=self.bucket,
            MLFLOW_STACK_PORT=str(port),
            MLFLOW_STACK_WORKERS="1",
        )
        return env

    def serve_command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow_stack", "--env-file", str(self.stack.env_file)]


@pytest.fixture
def target(stack: LiveStack) -> Iterator[Target]:
    found = Target(stack, uuid.uuid4().hex[:10])
    admin = stack.pg("postgres")
    try:
        with admin.cursor() as cursor:
            for name in (found.db, found.auth_db):
                cursor.execute(f'CREATE DATABASE "{name}"')
        stack.s3().create_bucket(Bucket=found.bucket)
        yield found
    finally:
        with admin.cursor() as cursor:
            for name in found.databases():
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        s3 = stack.s3()
        listed = s3.list_objects_v2(Bucket=found.bucket).get("Contents", [])
        for item in listed:
            s3.delete_object(Bucket=found.bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=found.bucket)
        assert not found.databases()


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no healthy server on port {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    wait_healthy(port, process, log, timeout=120)
    return process


# What a team on the previous MLflow did: logged through its server like any client.
WRITE_WITH_PREVIOUS = textwrap.dedent(
    """
    import json, pathlib, sys, tempfile
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    uri = sys.argv[1]
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("upgrade-experiment", tags={"team": "taxi"})
    run = client.create_run(experiment_id, run_name="before-upgrade", tags={"stage": "old"})
    run_id = run.info.run_id
    client.log_param(run_id, "alpha", "0.5")
    for step, value in enumerate([3.0, 2.0, 1.5]):
        client.log_metric(run_id, "rmse", value, step=step)
    folder = pathlib.Path(tempfile.mkdtemp())
    (folder / "notes.txt").write_text("written by MLflow 3.16.1")
    client.log_artifact(run_id, str(folder / "notes.txt"), "docs")
    client.set_terminated(run_id)
    client.create_registered_model("upgrade-model")
    version = client.create_model_version(
        "upgrade-model",
        f"runs:/{run_id}/docs",
        run_id=run_id,
        tags={"origin": "3.16"},
        await_creation_for=0,
    )
    client.set_registered_model_alias("upgrade-model", "champion", version.version)
    auth = get_app_client("basic-auth", tracking_uri=uri)
    auth.create_user("ada", "ada-password-123456")
    auth.grant_user_permission("ada", "experiment", experiment_id, "EDIT")
    print(json.dumps({"experiment_id": experiment_id, "run_id": run_id,
                      "version": version.version}))
    """
)


def write_with_previous(target: Target, python: Path, log: Path) -> dict[str, str]:
    """Start the previous MLflow's own server (basic-auth, artifacts proxied to the bucket) on
    the fresh databases, log through it, stop it."""
    settings = target.stack.settings
    port = free_port()
    config = log.with_name("previous_basic_auth.ini")
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {settings._database_uri(target.auth_db)}\n"
        f"admin_username = {settings.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PGPASSWORD": settings.postgres_password,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path",
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.flask_secret_key,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # Only tracking data is written: no job runner and its seven huey consumers.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        str(python), "-m", "mlflow", "server",
        "--app-name", "basic-auth",
        "--backend-store-uri", settings._database_uri(target.db),
        "--serve-artifacts", "--artifacts-destination", f"s3://{target.bucket}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = start(command, env, port, log)
    try:
        client_env = {
            **env,
            "MLFLOW_TRACKING_USERNAME": settings.admin_username,
            "MLFLOW_TRACKING_PASSWORD": settings.admin_password,
        }
        result = subprocess.run(
            [str(python), "-c", WRITE_WITH_PREVIOUS, f"http://127.0.0.1:{port}"],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        stop(server)


def test_serve_upgrades_a_database_of_the_previous_mlflow(
    stack: LiveStack, target: Target, previous: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    heads = {schema.label: schema.head for schema in schemas(stack.settings)}
    assert heads["tracking"] != PREVIOUS_TRACKING_HEAD  # else this test proves nothing

    began = time.monotonic()
    written = write_with_previous(target, previous, tmp_path / "previous.log")
    wrote = time.monotonic() - began
    assert target.revision(target.db) == PREVIOUS_TRACKING_HEAD
    assert target.revision(target.auth_db, "alembic_version_auth") == PREVIOUS_AUTH_HEAD
    assert heads["auth"] == PREVIOUS_AUTH_HEAD  # so only the tracking database is copied

    port = free_port()
    env = target.serve_env(port)

    # Another server still connected: no copy, no migration, one line saying what to do.
    holder = stack.pg(target.db)
    try:
        refused = subprocess.run(
            [*target.serve_command(), "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        holder.close()
    assert refused.returncode == 1, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: database '{target.db}' needs a tracking schema upgrade"), last
    assert "other sessions are connected to it" in last and "stop every other server" in last
    assert "Traceback" not in refused.stderr
    print(f"refused: {last}")
    assert target.copies() == []
    assert target.revision(target.db) == PREVIOUS_TRACKING_HEAD

    log = tmp_path / "serve.log"
    began = time.monotonic()
    server = start([*target.serve_command(), "serve"], env, port, log)
    upgraded_in = time.monotonic() - began
    try:
        # The schemas are at the installed MLflow's heads.
        assert target.revision(target.db) == heads["tracking"]
        assert target.revision(target.auth_db, "alembic_version_auth") == heads["auth"]

        # One copy, of the tracking database only, as it was before: old revision, old data.
        copies = target.copies()
        assert len(copies) == 1, copies
        (copy,) = copies
        assert copy.startswith(f"{target.db}_before_{PREVIOUS_TRACKING_HEAD}_")
        assert target.revision(copy) == PREVIOUS_TRACKING_HEAD
        assert target.query(
            copy, "SELECT name FROM experiments WHERE experiment_id = %s", written["experiment_id"]
        ) == [("upgrade-experiment",)]
        assert target.query(
            copy, "SELECT key, value FROM params WHERE run_uuid = %s", written["run_id"]
        ) == [("alpha", "0.5")]
        text = log.read_text()
        assert f"copied database {target.db} to {copy}" in text
        assert f"ALTER DATABASE {copy} RENAME TO {target.db}" in text

        # Everything the previous MLflow wrote reads back through the upgraded server.
        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("upgrade-experiment")
        assert experiment.experiment_id == written["experiment_id"]
        assert experiment.tags["team"] == "taxi"
        run = client.get_run(written["run_id"])
        assert run.info.status == "FINISHED" and run.info.run_name == "before-upgrade"
        assert run.data.params == {"alpha": "0.5"} and run.data.tags["stage"] == "old"
        history = client.get_metric_history(written["run_id"], "rmse")
        assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.5)]
        [artifact] = client.list_artifacts(written["run_id"], "docs")
        assert artifact.path == "docs/notes.txt"
        downloaded = Path(client.download_artifacts(written["run_id"], "docs/notes.txt", tmp_path))
        assert downloaded.read_text() == "written by MLflow 3.16.1"
        champion = client.get_model_version_by_alias("upgrade-model", "champion")
        assert champion.version == written["version"] and champion.tags == {"origin": "3.16"}
        assert champion.run_id == written["run_id"]
        auth = get_app_client("basic-auth", tracking_uri=uri)
        assert auth.get_user("ada").username == "ada"
        permission = auth.get_user_permission("ada", "experiment", written["experiment_id"])
        assert permission.permission == "EDIT"
        # ada's password survived: she can log in and write to her experiment.
        os.environ.update(MLFLOW_TRACKING_USERNAME="ada")
        os.environ.update(MLFLOW_TRACKING_PASSWORD="ada-password-123456")
        try:
            client.set_experiment_tag(written["experiment_id"], "after", "upgrade")
        finally:
            os.environ.update(
                MLFLOW_TRACKING_USERNAME=stack.settings.admin_username,
                MLFLOW_TRACKING_PASSWORD=stack.settings.admin_password,
            )
        assert client.get_experiment(written["experiment_id"]).tags["after"] == "upgrade"
    finally:
        stop(server)

    # A restart with nothing pending copies nothing.
    began = time.monotonic()
    server = start([*target.serve_command(), "serve"], env, port, log)
    restarted_in = time.monotonic() - began
    stop(server)
    assert target.copies() == [copy]
    print(
        f"previous MLflow wrote in {wrote:.1f} s; serve upgraded and was healthy in "
        f"{upgraded_in:.1f} s; restarted in {restarted_in:.1f} s"
    )


def target_settings(target: Target) -> Settings:
    return Settings.from_env(
        merged_environment(target.stack.env_file, target.serve_env(target.stack.settings.port))
    )


MIGRATE = textwrap.dedent(
    """
    import json, os, pathlib, sys
    from mlflow_stack.stores.database import migrate
    from mlflow_stack.settings.envfile import merged_environment
    from mlflow_stack.settings.contract import Settings

    environment = merged_environment(pathlib.Path(sys.argv[1]), os.environ)
    print(json.dumps(migrate(Settings.from_env(environment))))
    """
)


def test_migrate_copies_an_auth_database_behind_and_not_a_new_tracking_one(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The auth schema has not changed since 3.15, so MLflow's own migrations make an older
    one: 2ed73881770d, before permissions moved to roles (e5f6a7b8c9d0)."""
    import sqlalchemy
    from mlflow.server.auth.db import utils as auth_db
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    settings = target_settings(target)
    # As in `serve` (migrate sets them too): MLflow's auth code builds engines from bare URIs.
    for name, value in libpq_environment(settings).items():
        monkeypatch.setenv(name, value)
    old = "2ed73881770d"
    engine = sqlalchemy.create_engine(settings.auth_database_uri)
    try:
        auth_db.migrate(engine, old)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO users VALUES (7, 'bob', 'hash', false)"))
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO experiment_permissions (experiment_id, user_id, permission)"
                    " VALUES ('42', 7, 'EDIT')"
                )
            )
    finally:
        engine.dispose()

    # Two servers starting together: they take turns, and only the first one copies.
    together = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, str(target.stack.env_file)],
            env=target.serve_env(target.stack.settings.port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [process.communicate(timeout=180) for process in together]
    assert [process.returncode for process in together] == [0, 0], results
    made = sorted((json.loads(out.splitlines()[-1]) for out, _ in results), key=len)
    assert made[0] == [] and len(made[1]) == 1, made
    copies = made[1]

    assert copies == target.copies()
    (copy,) = copies
    assert copy.startswith(f"{target.auth_db}_before_{old}_")
    assert target.revision(copy, "alembic_version_auth") == old
    assert target.query(copy, "SELECT username FROM users") == [("bob",)]
    heads = {schema.label: schema.head for schema in schemas(settings)}
    assert target.revision(target.auth_db, "alembic_version_auth") == heads["auth"]
    assert target.revision(target.db) == heads["tracking"]  # created, nothing to copy
    store = SqlAlchemyStore()
    store.init_db(settings.auth_database_uri)
    try:
        assert store.get_experiment_permission("42", "bob").permission == "EDIT"
    finally:
        store.engine.dispose()

    assert migrate(settings) == []
    assert target.copies() == [copy]


def test_migrate_refuses_a_schema_from_a_newer_mlflow(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    with target.stack.pg(target.db) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE experiments (experiment_id integer)")
        cursor.execute("CREATE TABLE alembic_version (version_num varchar(32))")
        cursor.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    settings = target_settings(target)
    for name, value in libpq_environment(settings).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StackError) as raised:
        migrate(settings)
    assert str(raised.value).startswith(
        f"database '{target.db}' holds tracking schema revision 0123456789ab, which the "
        "installed MLflow does not know"
    )
    assert target.copies() == []
    assert target.revision(target.db) == "0123456789ab"
