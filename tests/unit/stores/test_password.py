"""The database password's sources and the connection hook, against a real PostgreSQL (a
private cluster of this module, initialised from POSTGRES_PASSWORD_FILE as the native runtime
does) and Secrets Manager on moto.

What is proven here: a file is read again for every new connection; a secret is kept for its
time, and read again at once when PostgreSQL refuses the password; a rotation in either order
(database first or source first) succeeds within the retries; the hook reaches plain engines,
MLflow's own engines (its tracking store's engine factory and its basic-auth user store) and
processes forked after it is installed, and leaves alone engines to other servers or with a
password of their own; direct psycopg2 connections and the libpq environment of subprocesses
get the current password.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy
from moto import mock_aws

from mlflow_stack.errors import StackError
from mlflow_stack.native.postgres import PostgresService
from mlflow_stack.native.processes import record_of, spawn, stop
from mlflow_stack.native.service import Layout
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores import password
from mlflow_stack.stores.database import connect, libpq_environment
from mlflow_stack.stores.password import (
    FilePassword,
    PasswordUnavailableError,
    SecretsManagerPassword,
    StaticPassword,
    open_with_password,
)
from mlflow_stack.waiting import wait_for
from tests.conftest import WITH_S3, distinct_free_ports

REGION = "eu-west-1"


def new_password() -> str:
    return secrets.token_urlsafe(24)


def replace_file(path: Path, value: str) -> None:
    """As an operator rotates it: a new file moved over the old one (atomic)."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(value + "\n")
    partial.replace(path)


@dataclass
class Cluster:
    settings: Settings
    password_file: Path
    bin_dir: Path

    def alter_password(self, value: str) -> None:
        """ALTER ROLE through a connection opened with the file's current password."""
        conn = connect(self.settings, "postgres")
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"ALTER ROLE {self.settings.postgres_user} PASSWORD %s",
                    (value,),
                )
        finally:
            conn.close()

    def rotate(self, value: str) -> None:
        self.alter_password(value)
        replace_file(self.password_file, value)

    def login_works(self, value: str) -> bool:
        """A psycopg2 login with ``value``, bypassing every source and hook."""
        import psycopg2

        try:
            psycopg2.connect(
                host="127.0.0.1",
                port=self.settings.postgres_port,
                user=self.settings.postgres_user,
                dbname="postgres",
                password=value,
                connect_timeout=5,
            ).close()
        except psycopg2.OperationalError as error:
            assert "password authentication failed" in str(error)
            return False
        return True

    def uri(self, database: str = "postgres") -> str:
        """As the server's URIs: no password in it."""
        user, port = self.settings.postgres_user, self.settings.postgres_port
        return f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-password-"))
    root.chmod(0o755)  # PostgreSQL runs as its own account when we are root
    (port,) = distinct_free_ports(1)
    password_file = root / "pg-password"
    replace_file(password_file, new_password())
    environ = {
        **WITH_S3,
        "POSTGRES_PASSWORD": "",
        "POSTGRES_PASSWORD_FILE": str(password_file),
        "POSTGRES_PORT": str(port),
    }
    settings = Settings.from_env(environ)
    layout = Layout(root / "data")
    layout.create()
    service = PostgresService(settings, layout)
    service.prepare()  # initdb, with the password read from the file
    proc = spawn(
        service.command(),
        env=service.environment(),
        cwd=service.workdir,
        log_path=layout.log("postgres"),
        user=service.user,
    )
    record = record_of(proc)
    try:
        wait_for("the test's PostgreSQL", service.check, timeout=60)
        yield Cluster(settings, password_file, service.bin_dir)
    finally:
        stop(record, sig=signal.SIGINT, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hook(cluster: Cluster) -> Iterator[password.PasswordSource]:
    source = password.install(cluster.settings)
    try:
        yield source
    finally:
        password.uninstall()


def query(engine: sqlalchemy.Engine, statement: str = "SELECT current_user") -> Any:
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text(statement)).scalar()


# --- the sources ---


def test_a_file_is_read_again_for_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    replace_file(path, "first-password-123")
    source = FilePassword(path)
    assert source.current() == "first-password-123"  # the trailing newline dropped
    replace_file(path, "second-password-456")
    assert source.current() == source.refresh() == "second-password-456"
    path.write_text("third-password-789\r\n")
    assert source.current() == "third-password-789"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read POSTGRES_PASSWORD_FILE={path}: No such file or directory"),
        ("", "POSTGRES_PASSWORD_FILE={path} must hold the password on one line"),
        ("two\nlines\n", "POSTGRES_PASSWORD_FILE={path} must hold the password on one line"),
    ],
)
def test_a_file_without_a_password_is_one_line_naming_it(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PasswordUnavailableError) as caught:
        FilePassword(path).current()
    assert str(caught.value) == problem.format(path=path)
    assert isinstance(caught.value, StackError)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Secrets Manager on moto, reached through boto3's default credential chain."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def database_secret(aws: Any, value: str) -> str:
    """A secret in the Terraform database module's layout (RDS's own)."""
    body = {"engine": "postgres", "username": "mlflow", "password": value, "port": 5432}
    return aws.create_secret(
        Name=f"test/database-{secrets.token_hex(4)}", SecretString=json.dumps(body)
    )["ARN"]


def put(aws: Any, arn: str, value: str) -> None:
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({"password": value}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_secret_is_kept_for_its_time_and_read_again_after(aws: Any) -> None:
    arn = database_secret(aws, "first-password-123")
    clock = Clock()
    source = SecretsManagerPassword(arn, ttl=60, clock=clock)
    assert source.region == REGION
    assert source.current() == "first-password-123"
    put(aws, arn, "second-password-456")
    clock.now += 59
    assert source.current() == "first-password-123"  # kept
    assert source.reads == 1
    clock.now += 1
    assert source.current() == "second-password-456"
    assert source.reads == 2


def test_a_refresh_reads_the_secret_at_once(aws: Any) -> None:
    arn = database_secret(aws, "first-password-123")
    clock = Clock()
    source = SecretsManagerPassword(arn, clock=clock)
    assert source.current() == "first-password-123"
    put(aws, arn, "second-password-456")
    clock.now += 1
    assert source.refresh() == "second-password-456"
    assert source.current() == "second-password-456"  # and kept from now on
    assert source.reads == 2
    assert source.refresh() == "second-password-456"  # within MIN_REFRESH_INTERVAL: kept
    assert source.reads == 2


def test_an_unreadable_secret_or_one_without_a_password_is_one_line(aws: Any) -> None:
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:not-there-AbCdEf"
    with pytest.raises(PasswordUnavailableError) as caught:
        SecretsManagerPassword(missing).current()
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"cannot read POSTGRES_PASSWORD_SECRET_ARN={missing}: ")
    assert "ResourceNotFoundException" in line
    arn = aws.create_secret(Name="no-password", SecretString=json.dumps({"user": "x"}))["ARN"]
    with pytest.raises(PasswordUnavailableError) as caught:
        SecretsManagerPassword(arn).current()
    assert str(caught.value) == (
        f'the secret POSTGRES_PASSWORD_SECRET_ARN={arn} has no "password" in its JSON'
    )


def test_one_source_per_setting_value_is_shared_by_the_process(tmp_path: Path) -> None:
    environ = {**WITH_S3, "POSTGRES_PASSWORD": "", "POSTGRES_PASSWORD_FILE": str(tmp_path / "pw")}
    first = password.source_for(Settings.from_env(environ))
    assert first is password.source_for(Settings.from_env(environ))
    assert isinstance(first, FilePassword) and first.path == tmp_path / "pw"
    static = password.source_for(Settings.from_env(WITH_S3))
    assert static == StaticPassword(WITH_S3["POSTGRES_PASSWORD"])
    assert not static.changes


# --- retries on a refused password, against the real server ---


def test_native_initdb_took_the_password_from_the_file(cluster: Cluster) -> None:
    assert cluster.login_works(FilePassword(cluster.password_file).current())
    assert not cluster.login_works("not-the-password-123")


def test_a_direct_connection_uses_the_file_as_it_is_now(cluster: Cluster) -> None:
    old, new = FilePassword(cluster.password_file).current(), new_password()
    cluster.rotate(new)
    assert not cluster.login_works(old)
    conn = connect(cluster.settings, "postgres")
    with conn.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone() == (cluster.settings.postgres_user,)
    conn.close()
    assert libpq_environment(cluster.settings)["PGPASSWORD"] == new


def test_subprocesses_get_the_current_password_in_their_environment(cluster: Cluster) -> None:
    cluster.rotate(new_password())
    env = {"PATH": os.environ["PATH"], **libpq_environment(cluster.settings)}
    result = subprocess.run(
        [str(cluster.bin_dir / "psql"), "--no-password", "--host", "127.0.0.1",
         "--port", str(cluster.settings.postgres_port), "--username",
         cluster.settings.postgres_user, "--dbname", "postgres", "-Atc", "SELECT current_user"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == cluster.settings.postgres_user


def test_the_database_changed_first_the_file_a_moment_later(cluster: Cluster) -> None:
    """ALTER ROLE, then the file 0.7 s later: the connection in between is refused, waits and
    reads the file again, and succeeds."""
    new = new_password()
    cluster.alter_password(new)
    later = threading.Timer(0.7, replace_file, (cluster.password_file, new))
    began = time.monotonic()
    later.start()
    try:
        conn = connect(cluster.settings, "postgres")
    finally:
        later.join()
    took = time.monotonic() - began
    conn.close()
    assert 0.7 <= took < 0.7 + sum(password.RETRY_DELAYS)
    assert FilePassword(cluster.password_file).current() == new


def test_a_password_that_stays_refused_fails_after_the_retries(cluster: Cluster) -> None:
    source = FilePassword(cluster.password_file)
    tried: list[str] = []
    slept: list[float] = []

    def open_(value: str) -> Any:
        tried.append(value)
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=cluster.settings.postgres_port, dbname="postgres",
            user=cluster.settings.postgres_user, password=value + "-wrong", connect_timeout=5,
        )  # fmt: skip

    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        open_with_password(source, open_, sleep=slept.append)
    assert len(tried) == len(password.RETRY_DELAYS) + 1
    assert slept == list(password.RETRY_DELAYS)
    # A static password cannot change: one try, no waiting.
    tried.clear()
    with pytest.raises(psycopg2.OperationalError):
        open_with_password(StaticPassword("static-password-1"), open_, sleep=slept.append)
    assert tried == ["static-password-1"]


# --- the hook on SQLAlchemy engines ---


def test_the_hook_gives_a_new_connection_the_password_of_the_moment(
    cluster: Cluster, hook: Any
) -> None:
    engine = sqlalchemy.create_engine(cluster.uri())
    try:
        assert query(engine) == cluster.settings.postgres_user
        old, new = FilePassword(cluster.password_file).current(), new_password()
        cluster.rotate(new)
        assert query(engine) == cluster.settings.postgres_user  # the pooled connection
        engine.dispose()  # every connection from now on is new
        assert query(engine) == cluster.settings.postgres_user
        assert not cluster.login_works(old)
        assert "password" not in engine.url.render_as_string(hide_password=False)
    finally:
        engine.dispose()


def test_the_hook_reaches_mlflows_own_engines(cluster: Cluster, hook: Any) -> None:
    """MLflow's engine factory (its tracking and registry stores) and its basic-auth user store,
    which builds its engine itself; after a rotation both open new connections."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.db.utils import create_sqlalchemy_engine

    database = f"auth_{secrets.token_hex(4)}"
    conn = connect(cluster.settings, "postgres")
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {database}")
    conn.close()
    tracking = create_sqlalchemy_engine(cluster.uri())
    auth = AuthStore()
    auth.init_db(cluster.uri(database))  # runs MLflow's auth migrations through its own engine
    try:
        auth.create_user("ada", "a-long-password-1")
        cluster.rotate(new_password())
        tracking.dispose()
        auth.engine.dispose()
        assert query(tracking) == cluster.settings.postgres_user
        assert auth.get_user("ada").username == "ada"  # read back on a new connection
        assert auth.authenticate_user("ada", "a-long-password-1")
    finally:
        tracking.dispose()
        auth.engine.dispose()


def test_a_forked_process_inherits_the_hook(cluster: Cluster, hook: Any) -> None:
    cluster.rotate(new_password())
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            engine = sqlalchemy.create_engine(cluster.uri())
            answer = str(query(engine))
        except BaseException as error:  # noqa: BLE001
            answer = f"error: {error}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    assert answer == cluster.settings.postgres_user


def test_the_hook_leaves_other_servers_and_explicit_passwords_alone(
    cluster: Cluster, hook: Any
) -> None:
    import psycopg2

    port = cluster.settings.postgres_port
    user = cluster.settings.postgres_user
    explicit = sqlalchemy.create_engine(
        f"postgresql+psycopg2://{user}:not-the-password@127.0.0.1:{port}/postgres"
    )
    other_role = sqlalchemy.create_engine(f"postgresql+psycopg2://someone@127.0.0.1:{port}/db")
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
            query(explicit)
        assert "password authentication failed" in str(caught.value)
        with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
            query(other_role)  # no password given to it: libpq asks for one
        assert isinstance(caught.value.orig, psycopg2.OperationalError)
        assert "no password supplied" in str(caught.value)
    finally:
        explicit.dispose()
        other_role.dispose()


def test_an_unreadable_file_is_a_database_error_for_sqlalchemy(cluster: Cluster, hook: Any) -> None:
    saved = cluster.password_file.read_text()
    cluster.password_file.unlink()
    engine = sqlalchemy.create_engine(cluster.uri())
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
            query(engine)
        assert f"cannot read POSTGRES_PASSWORD_FILE={cluster.password_file}" in str(caught.value)
    finally:
        engine.dispose()
        replace_file(cluster.password_file, saved.strip())
    assert query(engine) == cluster.settings.postgres_user


def test_a_secret_is_read_again_when_postgresql_refuses_it(cluster: Cluster, aws: Any) -> None:
    """A rotation as Terraform does it: the database first, then the secret (here, as the
    refused connection waits); the kept password is refused, the secret read again and the
    connection retried."""
    current = FilePassword(cluster.password_file).current()
    arn = database_secret(aws, current)
    environ = {
        **WITH_S3,
        "POSTGRES_PASSWORD": "",
        "POSTGRES_PASSWORD_SECRET_ARN": arn,
        "POSTGRES_PORT": str(cluster.settings.postgres_port),
    }
    settings = Settings.from_env(environ)
    source = password.install(settings)
    engine = sqlalchemy.create_engine(cluster.uri())
    try:
        assert isinstance(source, SecretsManagerPassword)
        assert query(engine) == settings.postgres_user
        assert source.reads == 1
        new = new_password()
        cluster.rotate(new)  # ALTER ROLE (and the file this module's other tests use)
        engine.dispose()
        put(aws, arn, new)  # the secret now: the cached password is refused once
        assert query(engine) == settings.postgres_user
        assert source.current() == new
        assert source.reads == 2
        # The database again, and the secret 0.6 s later: retried with backoff.
        newer = new_password()
        cluster.rotate(newer)
        engine.dispose()
        later = threading.Timer(0.6, put, (aws, arn, newer))
        later.start()
        try:
            assert query(engine) == settings.postgres_user
        finally:
            later.join()
        assert source.current() == newer
        assert not cluster.login_works(new)
    finally:
        engine.dispose()
        password.uninstall()
