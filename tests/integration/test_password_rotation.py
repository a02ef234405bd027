"""The database password rotates under a running native stack started with
POSTGRES_PASSWORD_FILE, while clients keep logging and reading runs through the server.

A stack of its own (module scope): `mlflow-stack up` writes its `.env` with the file setting
and no generated password, and the native PostgreSQL is initialised from the file. Twice, in
both orders an operator may take (the role first and then the file, and the reverse), the
role's password is changed with ALTER ROLE and the file replaced atomically; then every
backend of the mlflow role is ended with pg_terminate_backend, so that the server must open
new connections, with the new password. The server keeps serving: only requests in flight
at a termination may fail (a bounded number, soon after it); the old password no longer logs
in while the server opens new connections; every acknowledged write is read back.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from mlflow_stack.settings.envfile import read_env_file
from tests.conftest import LiveStack

CLIENTS = 4
PAUSE = 0.05  # between one client's requests
#: Requests that may fail per termination: one in flight per client, and one per pool that
#: meets a connection ended under it (two workers, three stores each).
FAILURES_PER_TERMINATION = CLIENTS + 2 * 3
#: A failure counts as one at a termination if it began within this many seconds after it.
SETTLE = 3.0


def new_password() -> str:
    return secrets.token_urlsafe(24)


def replace_file(path: Path, value: str) -> None:
    partial = path.with_name(path.name + ".new")
    partial.write_text(value + "\n")
    partial.chmod(0o600)
    partial.replace(path)


@dataclass
class Failure:
    began: float
    what: str


@dataclass(eq=False)  # threads are hashed (threading's bookkeeping)
class Client(threading.Thread):
    """Logs a metric and a param, then reads its run back, in a loop; no retries."""

    index: int
    base: str
    auth: tuple[str, str]
    experiment_id: str
    stop: threading.Event
    run_id: str = ""
    metrics: dict[int, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(name=f"client-{self.index}", daemon=True)
        self.session = requests.Session()
        self.session.auth = self.auth

    def call(self, method: str, path: str, **kwargs: object) -> dict:
        response = self.session.request(method, self.base + path, timeout=(5, 60), **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:160]}")
        return response.json()

    def create_run(self) -> None:
        body = {"experiment_id": self.experiment_id, "start_time": int(time.time() * 1000)}
        self.run_id = self.call("POST", "/api/2.0/mlflow/runs/create", json=body)["run"]["info"][
            "run_id"
        ]

    def step(self, i: int) -> None:
        value = i + self.index / 10
        metric = {"run_id": self.run_id, "key": "m", "value": value, "step": i,
                  "timestamp": int(time.time() * 1000)}  # fmt: skip
        self.call("POST", "/api/2.0/mlflow/runs/log-metric", json=metric)
        self.metrics[i] = value
        key, text = f"p{i}", secrets.token_hex(6)
        self.call("POST", "/api/2.0/mlflow/runs/log-parameter",
                  json={"run_id": self.run_id, "key": key, "value": text})  # fmt: skip
        self.params[key] = text
        run = self.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": self.run_id})
        assert run["run"]["info"]["run_id"] == self.run_id

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.step(i)
            except Exception as error:  # noqa: BLE001 - every failure is recorded and judged
                self.failures.append(Failure(began, f"#{i}: {error}"))
            else:
                self.acked_at.append(time.monotonic())
            i += 1
            self.stop.wait(PAUSE)


@dataclass
class Rotated:
    order: str
    old: str
    new: str
    terminated_at: float
    terminated: int
    wall_clock: float  # time.time() of the termination, for pg_stat_activity


@pytest.fixture(scope="module")
def rotating_stack() -> Iterator[tuple[LiveStack, Path]]:
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-rotation-"))
    root.chmod(0o755)
    password_file = root / "pg-password"
    replace_file(password_file, new_password())
    live = LiveStack.on_free_ports(root)
    live.env["POSTGRES_PASSWORD_FILE"] = str(password_file)
    live.env.pop("POSTGRES_PASSWORD", None)
    try:
        live.up()  # fails the test with the logs' last lines
    except BaseException:
        live.cli("down")
        shutil.rmtree(root, ignore_errors=True)
        raise
    live.load_settings()
    try:
        yield live, password_file
    finally:
        result = live.cli("down")
        shutil.rmtree(root, ignore_errors=True)
        assert result.returncode == 0, result.stderr


def login_works(stack: LiveStack, password: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(
            host="127.0.0.1", port=stack.settings.postgres_port, dbname="postgres",
            user=stack.settings.postgres_user, password=password, connect_timeout=5,
        ).close()  # fmt: skip
    except psycopg2.OperationalError as error:
        assert "password authentication failed" in str(error)
        return False
    return True


def alter_role(stack: LiveStack, login: str, password: str) -> None:
    """As an operator would: logged in with the password the role has now (``login``)."""
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=stack.settings.postgres_port, dbname="postgres",
        user=stack.settings.postgres_user, password=login, connect_timeout=5,
    )  # fmt: skip
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"ALTER ROLE {stack.settings.postgres_user} PASSWORD %s", (password,))
    finally:
        conn.close()


def terminate_the_servers_connections(stack: LiveStack) -> int:
    conn = stack.pg("postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = %s AND pid <> pg_backend_pid()",
                (stack.settings.postgres_user,),
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def rotate(stack: LiveStack, password_file: Path, order: str) -> Rotated:
    old, new = password_file.read_text().strip(), new_password()
    if order == "role first":
        alter_role(stack, old, new)
        time.sleep(0.5)  # new connections meanwhile are refused, then retried
        replace_file(password_file, new)
    else:
        replace_file(password_file, new)
        time.sleep(0.5)
        alter_role(stack, old, new)  # the server's new connections meanwhile: refused, retried
    wall_clock, at = time.time(), time.monotonic()
    terminated = terminate_the_servers_connections(stack)
    return Rotated(order, old, new, at, terminated, wall_clock)


def near(rotation: Rotated, failure: Failure) -> bool:
    """Whether a failed request was in flight at the termination, or met a connection it ended
    (the first use of each pooled connection afterwards)."""
    return rotation.terminated_at - 1 <= failure.began < rotation.terminated_at + SETTLE


def server_backends_since(stack: LiveStack, wall_clock: float) -> int:
    conn = stack.pg("postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND pid <>"
                " pg_backend_pid() AND application_name <> 'mlflow-stack'"
                " AND backend_start > to_timestamp(%s)",
                (stack.settings.postgres_user, wall_clock),
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def test_the_password_rotates_under_load_and_nothing_acknowledged_is_lost(
    rotating_stack: tuple[LiveStack, Path],
) -> None:
    stack, password_file = rotating_stack
    written = read_env_file(stack.env_file)
    assert written["POSTGRES_PASSWORD"] == ""  # none generated: the file is the source
    assert written["POSTGRES_PASSWORD_FILE"] == str(password_file)
    first = password_file.read_text().strip()
    assert login_works(stack, first)  # native initdb took the file's password

    session = requests.Session()
    session.auth = stack.admin
    experiment = session.post(
        stack.tracking_uri + "/api/2.0/mlflow/experiments/create",
        json={"name": f"rotation-{uuid.uuid4().hex[:8]}"},
        timeout=30,
    ).json()["experiment_id"]
    stop = threading.Event()
    clients = [Client(i, stack.tracking_uri, stack.admin, experiment, stop) for i in range(CLIENTS)]
    for client in clients:
        client.create_run()
        client.start()
    rotations: list[Rotated] = []
    try:
        time.sleep(3)  # traffic before
        for order in ("role first", "file first"):
            rotations.append(rotate(stack, password_file, order))
            time.sleep(4)  # traffic after
    finally:
        stop.set()
        for client in clients:
            client.join(60)

    failures = [failure for client in clients for failure in client.failures]
    for rotation in rotations:
        assert rotation.terminated > 0, f"{rotation.order}: the server held no connection"
        assert not login_works(stack, rotation.old), f"{rotation.order}: old password works"
        after = [
            at
            for client in clients
            for at in client.acked_at
            if rotation.terminated_at + SETTLE < at < rotation.terminated_at + SETTLE + 1.0
        ]
        assert after, f"{rotation.order}: nothing acknowledged after the termination"
        at_it = [f for f in failures if near(rotation, f)]
        assert len(at_it) <= FAILURES_PER_TERMINATION, [f.what for f in at_it]
    assert login_works(stack, rotations[-1].new)
    # The server opened connections after the last termination, so with the new password.
    assert server_backends_since(stack, rotations[-1].wall_clock) > 0
    judged = [f for f in failures if not any(near(rotation, f) for rotation in rotations)]
    assert not judged, f"failures away from a termination: {[f.what for f in judged]}"

    # Nothing acknowledged is lost: read back through the server.
    for client in clients:
        assert len(client.acked_at) > 20, f"client {client.index} made little progress"
        history = session.get(
            stack.tracking_uri + "/api/2.0/mlflow/metrics/get-history",
            params={"run_id": client.run_id, "metric_key": "m", "max_results": 25000},
            timeout=60,
        ).json()["metrics"]
        stored = {int(m["step"]): m["value"] for m in history}
        missing = {s: v for s, v in client.metrics.items() if stored.get(s) != v}
        assert not missing, f"client {client.index}: acknowledged metrics lost: {missing}"
        run = session.get(
            stack.tracking_uri + "/api/2.0/mlflow/runs/get",
            params={"run_id": client.run_id},
            timeout=60,
        ).json()["run"]
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        lost = {k: v for k, v in client.params.items() if params.get(k) != v}
        assert not lost, f"client {client.index}: acknowledged params lost: {lost}"
    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    print(
        f"\nrotation: {sum(len(c.acked_at) for c in clients)} steps acknowledged, "
        f"{len(failures)} failed, terminated {[r.terminated for r in rotations]} backends: "
        + "; ".join(f.what[:100] for f in failures)
    )
