"""The database password: where it comes from, and the hook that gives every new connection
the current one, so that the password can rotate under a running server.

Three sources (exactly one is set, :data:`~mlflow_stack.settings.contract.PASSWORD_SOURCES`):

- ``POSTGRES_PASSWORD``: the value itself, read once at start (:class:`StaticPassword`);
- ``POSTGRES_PASSWORD_FILE``: a file, read again for every new connection
  (:class:`FilePassword`), so that replacing the file rotates the password;
- ``POSTGRES_PASSWORD_SECRET_ARN``: the ``password`` of a Secrets Manager secret's JSON, read
  through the default AWS credential chain and kept for :data:`SECRET_TTL` seconds
  (:class:`SecretsManagerPassword`).

A rotation changes the database and the source one after the other, in either order. When
PostgreSQL refuses a password (SQLSTATE 28P01), :func:`open_with_password` reads the source
again at once and tries again, then waits :data:`RETRY_DELAYS` between further tries, so that a
connection opened between the two steps still succeeds. Connections already open are not
affected by a password change: PostgreSQL checks the password only at login.

:func:`install` registers one SQLAlchemy ``do_connect`` listener on the ``Engine`` class: it
reaches every engine of the process, MLflow's own included (tracking store, model registry,
the basic-auth user store), and only connections to the configured server as the configured
role. The password never appears in a URI, an argument or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings

log = logging.getLogger(__name__)

#: Seconds a password read from Secrets Manager is used before it is read again.
SECRET_TTL = 60.0
#: Seconds between the tries of a connection whose password PostgreSQL refuses, while the
#: source still gives the refused one (a rotation between its two steps).
RETRY_DELAYS = (0.5, 1.0, 2.0)
#: Seconds within which a refresh of the secret returns the value just read, so that many
#: connections refused at once ask Secrets Manager once.
MIN_REFRESH_INTERVAL = 0.25

T = TypeVar("T")


class PasswordUnavailableError(StackError):
    """The source cannot give a password now (file missing or empty, secret unreadable)."""


class PasswordSource(Protocol):
    #: The setting it comes from, for messages (never the password).
    setting: str
    #: Whether reading it again can give another password.
    changes: bool

    def current(self) -> str:
        """The password to open a connection with."""
        ...

    def refresh(self) -> str:
        """The password read again now (after PostgreSQL refused the current one)."""
        ...


@dataclass(frozen=True)
class StaticPassword:
    value: str
    setting: str = "POSTGRES_PASSWORD"
    changes: bool = False

    def current(self) -> str:
        return self.value

    def refresh(self) -> str:
        return self.value


@dataclass(frozen=True)
class FilePassword:
    """The file's first line, read for every connection (as the official postgres image reads
    ``POSTGRES_PASSWORD_FILE``, trailing newlines dropped). Replace it atomically (write a new
    file, then ``mv`` it over the old one) so that no connection reads half a password."""

    path: Path
    setting: str = "POSTGRES_PASSWORD_FILE"
    changes: bool = True

    def current(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise PasswordUnavailableError(
                f"cannot read POSTGRES_PASSWORD_FILE={self.path}: {reason}"
            ) from None
        password = text.rstrip("\r\n")
        if not password or "\n" in password:
            raise PasswordUnavailableError(
                f"POSTGRES_PASSWORD_FILE={self.path} must hold the password on one line"
            )
        return password

    def refresh(self) -> str:
        return self.current()


class SecretsManagerPassword:
    """The ``password`` of a Secrets Manager secret's JSON (the layout of RDS's secrets and of
    the Terraform database module's), kept for ``ttl`` seconds. Thread-safe; a forked process
    makes its own client (a boto3 client's connections must not be shared across a fork)."""

    setting = "POSTGRES_PASSWORD_SECRET_ARN"
    changes = True

    def __init__(
        self,
        arn: str,
        *,
        ttl: float = SECRET_TTL,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.arn = arn
        self.region = arn.split(":")[3]
        self.ttl = ttl
        self.clock = clock
        self._client_factory = client_factory or _secretsmanager_client
        self._value: str | None = None
        self._read_at = 0.0
        self.reads = 0  # how many times Secrets Manager was asked
        self._after_fork()
        _FORK_AWARE.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None

    def current(self) -> str:
        return self._kept_for(self.ttl)

    def refresh(self) -> str:
        return self._kept_for(MIN_REFRESH_INTERVAL)

    def _kept_for(self, seconds: float) -> str:
        with self._lock:
            if self._value is not None and self.clock() - self._read_at < seconds:
                return self._value
            return self._read()

    def _read(self) -> str:
        if self._client is None:
            self._client = self._client_factory(self.region)
        self.reads += 1
        try:
            answer = self._client.get_secret_value(SecretId=self.arn)
        except Exception as error:  # noqa: BLE001 - botocore's errors, each named in one line
            raise PasswordUnavailableError(
                f"cannot read POSTGRES_PASSWORD_SECRET_ARN={self.arn}: {_first_line(error)}"
            ) from None
        try:
            password = json.loads(answer.get("SecretString") or "")["password"]
        except (ValueError, TypeError, KeyError):
            password = None
        if not isinstance(password, str) or not password:
            raise PasswordUnavailableError(
                f'the secret POSTGRES_PASSWORD_SECRET_ARN={self.arn} has no "password" in its JSON'
            )
        self._value, self._read_at = password, self.clock()
        return password


def _secretsmanager_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})
    return boto3.session.Session().client("secretsmanager", region_name=region, config=config)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


_FORK_AWARE: weakref.WeakSet[SecretsManagerPassword] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [source._after_fork() for source in _FORK_AWARE])

_SOURCES: dict[tuple[str, str], PasswordSource] = {}
_SOURCES_LOCK = threading.Lock()


def source_for(settings: Settings) -> PasswordSource:
    """The settings' password source; one per process and value, so that a secret's cached
    password is shared by every connection."""
    if settings.postgres_password_secret_arn:
        key = ("secret", settings.postgres_password_secret_arn)
    elif settings.postgres_password_file:
        key = ("file", settings.postgres_password_file)
    else:
        key = ("static", settings.postgres_password)
    with _SOURCES_LOCK:
        if key not in _SOURCES:
            kind, value = key
            if kind == "secret":
                _SOURCES[key] = SecretsManagerPassword(value)
            elif kind == "file":
                _SOURCES[key] = FilePassword(Path(value))
            else:
                _SOURCES[key] = StaticPassword(value)
        return _SOURCES[key]


def current_password(settings: Settings) -> str:
    """The password to use now (PasswordUnavailableError saying why there is none)."""
    return source_for(settings).current()


def is_refused(error: BaseException) -> bool:
    """Whether PostgreSQL refused the password (SQLSTATE 28P01). libpq reports a failed login
    without a SQLSTATE, so its message is read too."""
    if getattr(error, "pgcode", None) == "28P01" or getattr(error, "sqlstate", None) == "28P01":
        return True
    return "password authentication failed" in str(error).lower()


def open_with_password(
    source: PasswordSource,
    open_: Callable[[str], T],
    *,
    delays: tuple[float, ...] = RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``open_(password)`` with the source's password; when PostgreSQL refuses it, again with
    the password read anew: at once if that differs, else after the next of ``delays``. A
    source that cannot change is tried once."""
    password = source.current()
    for delay in delays if source.changes else ():
        try:
            return open_(password)
        except Exception as error:
            if not is_refused(error):
                raise
        fresh = source.refresh()
        if fresh == password:  # the source has not changed (yet): give the rotation time
            sleep(delay)
            fresh = source.refresh()
        log.info(
            "PostgreSQL refused the password from %s; trying again with the one read %s",
            source.setting,
            "now (it changed)" if fresh != password else "again",
        )
        password = fresh
    return open_(password)


@dataclass(frozen=True)
class _Hook:
    host: str
    port: int
    user: str
    source: PasswordSource

    def applies_to(self, cparams: dict[str, Any]) -> bool:
        host = str(cparams.get("host", "")).strip("[]")
        port = str(cparams.get("port", 5432))
        return (host, port, cparams.get("user")) == (self.host, str(self.port), self.user)


_HOOK: list[_Hook] = []  # the installed hook, if any (a list: no global statement needed)


def install(settings: Settings) -> PasswordSource:
    """Give every SQLAlchemy engine of this process (and of processes forked from it) the
    current password when it opens a connection to the settings' server as their role.
    Idempotent; a second call replaces the settings."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    source = source_for(settings)
    hook = _Hook(settings.postgres_host, settings.postgres_port, settings.postgres_user, source)
    _HOOK[:] = [hook]
    if not event.contains(Engine, "do_connect", _supply_password):
        event.listen(Engine, "do_connect", _supply_password)
    return source


def uninstall() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _HOOK.clear()
    if event.contains(Engine, "do_connect", _supply_password):
        event.remove(Engine, "do_connect", _supply_password)


def _supply_password(
    dialect: Any, record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    """SQLAlchemy's ``do_connect``: the DBAPI connection, opened with the current password (the
    engine's own parameters are left without it), or None to let SQLAlchemy connect as usual."""
    if not _HOOK or dialect.name != "postgresql" or "password" in cparams:
        return None  # not PostgreSQL, or a URL that carries its own password
    if not _HOOK[0].applies_to(cparams):
        return None
    source = _HOOK[0].source

    def open_(password: str) -> Any:
        return dialect.connect(*cargs, **{**cparams, "password": password})

    try:
        return open_with_password(source, open_)
    except PasswordUnavailableError as error:
        # As a DBAPI error, so that SQLAlchemy and MLflow treat it as the database unavailable.
        raise dialect.loaded_dbapi.OperationalError(str(error)) from None
