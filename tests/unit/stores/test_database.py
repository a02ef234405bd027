"""connect() and wait_for_postgres() through real libpq and real sockets: what each failure
becomes (a one-line StackError, NotReady to retry, or DatabaseMissingError), and which
connection options reach the server.

The server is a fake that speaks just enough of PostgreSQL's wire protocol to accept a login or
to answer with the ErrorResponse a real server sends; schema work needs a real PostgreSQL and
is covered by tests/integration.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.database import (
    DatabaseMissingError,
    connect,
    libpq_environment,
    libpq_options,
    wait_for_postgres,
)
from mlflow_stack.stores.password import RETRY_DELAYS
from mlflow_stack.waiting import NotReady
from tests.conftest import REQUIRED, make_settings

PASSWORD = REQUIRED["POSTGRES_PASSWORD"]
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104

#: What a real PostgreSQL answers (SQLSTATE, message) in the cases connect() tells apart.
WRONG_PASSWORD = ("28P01", 'password authentication failed for user "mlflow"')
NO_SUCH_ROLE = ("28000", 'role "mlflow" does not exist')
STARTING_UP = ("57P03", "the database system is starting up")
TOO_MANY = ("53300", "sorry, too many clients already")


def missing(database: str) -> tuple[str, str]:
    return ("3D000", f'database "{database}" does not exist')


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", 4 + len(payload)) + payload


@dataclass
class FakePostgres:
    """A listening socket on 127.0.0.1 that answers libpq as PostgreSQL would.

    ``errors`` maps a database name to the error a login to it gets; the first ``busy``
    logins get STARTING_UP; ``raw`` replaces the whole exchange with bytes sent after the first
    message (b"" closes the connection at once). Otherwise a login is asked for its password
    in clear text and accepted.
    """

    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    busy: int = 0
    raw: bytes | None = None
    startups: list[dict[str, str]] = field(default_factory=list)
    passwords: list[str] = field(default_factory=list)
    encryption_requests: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()

    def settings(self, **overrides: str) -> Settings:
        return make_settings(POSTGRES_PORT=str(self.port), **overrides)

    @property
    def databases(self) -> list[str]:
        return [startup["database"] for startup in self.startups]

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError, struct.error):  # the client went away
                    self._session(conn)

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = conn.recv(size - len(data))
            if not piece:
                raise OSError("closed")
            data += piece
        return data

    def _session(self, conn: socket.socket) -> None:
        while True:  # encryption requests first (declined), then the startup message
            (length,) = struct.unpack("!i", self._read(conn, 4))
            body = self._read(conn, length - 4)
            if self.raw is not None:
                if self.raw:
                    conn.sendall(self.raw)
                return
            (code,) = struct.unpack("!i", body[:4])
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                break
            self.encryption_requests += 1
            conn.sendall(b"N")
        words = body[4:].split(b"\0")
        startup = {
            k.decode(): v.decode() for k, v in zip(words[::2], words[1::2], strict=False) if k
        }
        startup.setdefault("database", startup["user"])
        self.startups.append(startup)
        error = self.errors.get(startup["database"])
        if self.busy:
            self.busy -= 1
            error = STARTING_UP
        if error:
            code, text = error
            fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0"
            conn.sendall(message(b"E", fields))
            return
        conn.sendall(message(b"R", struct.pack("!i", 3)))  # a clear-text password, please
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        if kind != b"p":
            return
        self.passwords.append(self._read(conn, length - 4).rstrip(b"\0").decode())
        parameters = {
            "server_version": "17.0",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
        }
        conn.sendall(
            message(b"R", struct.pack("!i", 0))
            + b"".join(
                message(b"S", name.encode() + b"\0" + value.encode() + b"\0")
                for name, value in parameters.items()
            )
            + message(b"K", struct.pack("!ii", 4242, 77))
            + message(b"Z", b"I")
        )
        while self._read(conn, 1) != b"X":  # until the client says goodbye
            (length,) = struct.unpack("!i", self._read(conn, 4))
            self._read(conn, length - 4)


@pytest.fixture
def fake_postgres() -> Iterator[Callable[..., FakePostgres]]:
    """Start fakes with ``fake_postgres(**options)``; each is stopped at the end of the test."""
    started: list[FakePostgres] = []

    def start(**options: Any) -> FakePostgres:
        started.append(FakePostgres(**options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def postgres(fake_postgres: Callable[..., FakePostgres]) -> FakePostgres:
    """A fake that accepts every login."""
    return fake_postgres()


# --- the options that reach libpq ---


def test_the_password_and_sslmode_travel_as_options_and_as_libpq_environment() -> None:
    settings = make_settings(POSTGRES_SSLMODE="verify-full")
    assert libpq_options(settings) == {"password": PASSWORD, "sslmode": "verify-full"}
    assert libpq_environment(settings) == {"PGPASSWORD": PASSWORD, "PGSSLMODE": "verify-full"}


def test_connect_logs_in_with_the_settings_and_answers_in_autocommit(
    postgres: FakePostgres,
) -> None:
    settings = postgres.settings(POSTGRES_USER="tracker")
    conn = connect(settings, "runs")
    try:
        assert conn.autocommit is True
        assert conn.info.dbname == "runs"
    finally:
        conn.close()
    (startup,) = postgres.startups
    assert startup["user"] == "tracker"
    assert startup["database"] == "runs"
    assert startup["application_name"] == "mlflow-stack"  # how the upgrade names sessions
    assert postgres.passwords == [PASSWORD]  # from the options, never from the URI
    assert postgres.encryption_requests >= 1  # sslmode=prefer asks for TLS first


def test_sslmode_disable_reaches_libpq(postgres: FakePostgres) -> None:
    connect(postgres.settings(POSTGRES_SSLMODE="disable"), "mlflow").close()
    assert postgres.encryption_requests == 0
    assert postgres.passwords == [PASSWORD]


def test_the_libpq_environment_is_what_a_started_process_needs(
    postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process we start (pg_dump, the auth migrations' engine) gets no password option: libpq
    # reads it from the environment.
    import psycopg2

    settings = postgres.settings(POSTGRES_SSLMODE="disable")
    for name, value in libpq_environment(settings).items():
        monkeypatch.setenv(name, value)
    psycopg2.connect(host="127.0.0.1", port=postgres.port, user="mlflow", dbname="x").close()
    assert postgres.passwords == [PASSWORD]
    assert postgres.encryption_requests == 0


# --- what each failure becomes ---


def failure(server: FakePostgres, dbname: str = "mlflow", **overrides: str) -> Exception:
    with pytest.raises((StackError, NotReady, DatabaseMissingError)) as raised:
        connect(server.settings(**overrides), dbname).close()
    error = raised.value
    assert "\n" not in str(error)  # one line, whatever libpq said
    assert PASSWORD not in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no psycopg2 traceback
    return error


def test_a_wrong_password_is_a_stack_error_naming_the_user(
    fake_postgres: Callable[..., FakePostgres],
) -> None:
    server = fake_postgres(errors={"mlflow": WRONG_PASSWORD})
    error = failure(server)
    assert type(error) is StackError
    assert str(error) == (
        f"PostgreSQL at 127.0.0.1:{server.port} rejected POSTGRES_USER='mlflow' with the given "
        "POSTGRES_PASSWORD (password authentication failed)"
    )


def test_a_password_from_a_file_that_stays_refused_names_the_file_setting(
    fake_postgres: Callable[..., FakePostgres], tmp_path: Path
) -> None:
    """Refused on every try (the source is read again between them): the line names the
    setting the password came from."""
    path = tmp_path / "pg-password"
    path.write_text(PASSWORD + "\n")
    server = fake_postgres(errors={"mlflow": WRONG_PASSWORD})
    error = failure(server, POSTGRES_PASSWORD="", POSTGRES_PASSWORD_FILE=str(path))
    assert str(error) == (
        f"PostgreSQL at 127.0.0.1:{server.port} rejected POSTGRES_USER='mlflow' with the given "
        "POSTGRES_PASSWORD_FILE (password authentication failed)"
    )
    assert len(server.startups) == len(RETRY_DELAYS) + 1  # tried, then tried again


def test_a_role_that_does_not_exist_is_a_stack_error(
    fake_postgres: Callable[..., FakePostgres],
) -> None:
    server = fake_postgres(errors={"mlflow": NO_SUCH_ROLE})
    error = failure(server)
    assert type(error) is StackError
    assert (
        str(error)
        == f"POSTGRES_USER='mlflow' does not exist on PostgreSQL at 127.0.0.1:{server.port}"
    )


def test_a_missing_database_is_database_missing_error(
    fake_postgres: Callable[..., FakePostgres],
) -> None:
    server = fake_postgres(errors={"runs": missing("runs")})
    error = failure(server, "runs")
    assert type(error) is DatabaseMissingError
    assert error.args == ("runs",)


def test_a_server_without_tls_when_tls_is_required_is_a_stack_error(
    postgres: FakePostgres,
) -> None:
    error = failure(postgres, POSTGRES_SSLMODE="require")
    assert type(error) is StackError
    assert str(error).startswith("POSTGRES_SSLMODE='require': ")
    assert "server does not support SSL, but SSL was required" in str(error)
    assert postgres.startups == []  # it never got as far as a login


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"errors": {"mlflow": STARTING_UP}}, "the database system is starting up"),
        ({"errors": {"mlflow": TOO_MANY}}, "sorry, too many clients already"),
        ({"raw": b""}, "server closed the connection unexpectedly"),
        ({"raw": b"HTTP/1.1 400 Bad Request\r\n\r\n"}, "invalid response to SSL negotiation"),
    ],
    ids=["starting up", "too many clients", "connection closed", "not PostgreSQL"],
)
def test_transient_failures_are_not_ready_with_libpqs_first_line(
    fake_postgres: Callable[..., FakePostgres], options: dict[str, object], reason: str
) -> None:
    server = fake_postgres(**options)
    error = failure(server)
    assert type(error) is NotReady
    assert str(error).startswith(f'connection to server at "127.0.0.1", port {server.port} failed')
    assert reason in str(error)


def test_nothing_listening_is_not_ready() -> None:
    port = free_port()
    with pytest.raises(NotReady, match="Connection refused") as raised:
        connect(make_settings(POSTGRES_PORT=str(port)), "mlflow")
    assert "\n" not in str(raised.value)  # libpq's second line (a hint) is left out


# --- wait_for_postgres ---


def test_waiting_connects_to_the_maintenance_database(postgres: FakePostgres) -> None:
    conn = wait_for_postgres(postgres.settings())
    try:
        assert conn.info.dbname == "postgres"
    finally:
        conn.close()
    assert postgres.databases == ["postgres"]  # POSTGRES_DB is not asked for before it exists


def test_without_a_maintenance_database_it_connects_to_postgres_db(
    fake_postgres: Callable[..., FakePostgres],
) -> None:
    server = fake_postgres(errors={"postgres": missing("postgres")})
    conn = wait_for_postgres(server.settings(POSTGRES_DB="runs", MLFLOW_STACK_AUTH_DB="users"))
    try:
        assert conn.info.dbname == "runs"
    finally:
        conn.close()
    assert server.databases == ["postgres", "runs"]


def test_without_either_database_it_says_what_to_create_and_does_not_retry(
    fake_postgres: Callable[..., FakePostgres],
) -> None:
    server = fake_postgres(errors={"postgres": missing("postgres"), "mlflow": missing("mlflow")})
    with pytest.raises(StackError) as raised:
        wait_for_postgres(server.settings())
    assert str(raised.value) == (
        "neither POSTGRES_DB='mlflow' nor the maintenance database 'postgres' exists on "
        f"PostgreSQL at 127.0.0.1:{server.port}; create 'mlflow'"
    )
    assert server.databases == ["postgres", "mlflow"]


def test_a_wrong_password_ends_the_wait_at_once(fake_postgres: Callable[..., FakePostgres]) -> None:
    server = fake_postgres(errors={"postgres": WRONG_PASSWORD})
    with pytest.raises(StackError, match="rejected POSTGRES_USER='mlflow'"):
        wait_for_postgres(server.settings(MLFLOW_STACK_WAIT_TIMEOUT="30"))
    assert len(server.startups) == 1


def test_a_starting_server_is_waited_for(fake_postgres: Callable[..., FakePostgres]) -> None:
    server = fake_postgres(busy=1)
    conn = wait_for_postgres(server.settings())
    conn.close()
    assert server.databases == ["postgres", "postgres"]  # refused once, then logged in
    assert server.passwords == [PASSWORD]


def test_nothing_listening_ends_the_wait_after_the_timeout_with_a_hint() -> None:
    port = free_port()
    began = time.monotonic()
    with pytest.raises(StackError) as raised:
        wait_for_postgres(make_settings(POSTGRES_PORT=str(port), MLFLOW_STACK_WAIT_TIMEOUT="1"))
    assert time.monotonic() - began < 3
    text = str(raised.value)
    assert text.startswith(f"PostgreSQL at 127.0.0.1:{port} did not become ready within 1 s: ")
    assert "Connection refused" in text
    assert text.endswith(
        "(check POSTGRES_HOST and POSTGRES_PORT, or raise MLFLOW_STACK_WAIT_TIMEOUT)"
    )
