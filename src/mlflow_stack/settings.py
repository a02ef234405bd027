"""Every environment variable the stack reads: name, default, check and a one-line doc.

This module is the single source of truth for the stack's configuration contract.
``.env.example`` is rendered from it (``mlflow-stack config example``); ``docker-compose.yml``,
the native runtime and the EC2 user data name exactly these variables, and tests keep them in
agreement. A missing or invalid value stops start-up with one line per problem naming the
variable (:class:`~mlflow_stack.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import secrets
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, urlsplit

from mlflow_stack.errors import ConfigError

Parser = Callable[[str], Any]

SECTIONS = {
    "postgres": "PostgreSQL (backend store: experiments, runs, metrics, registry, users)",
    "s3": "S3 (artifact store, reached only by the server: clients never hold these keys)",
    "server": "MLflow server",
    "auth": "Authentication (MLflow basic-auth; login is always required)",
}

# Characters that break .env parsing or compose interpolation when unquoted.
_UNSAFE_IN_ENV = re.compile(r"[\s'\"$#\\`]")


@dataclass(frozen=True)
class Setting:
    """One environment variable of the contract."""

    name: str
    doc: str
    section: str
    default: str | None = None  # None: required, and there is no default
    parse: Parser = str
    secret: bool = False  # never echoed back in messages
    generate: bool = False  # `make up` fills it with a fresh random value in a new .env

    @property
    def required(self) -> bool:
        return self.default is None

    def new_value(self) -> str:
        """A fresh random value for a new .env file (secrets and generated identifiers)."""
        return secrets.token_urlsafe(32) if self.secret else secrets.token_hex(10)


# --- value checks: each returns the parsed value or raises ValueError("what is wrong") ---


def _text(value: str) -> str:
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a TCP port number between 1 and 65535")
    return int(value)


def _int_between(low: int, high: int) -> Parser:
    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return int(value)

    return parse


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _choice(*options: str) -> Parser:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in value.split(".")):
        raise ValueError("must be a host name or IP address (no scheme, port or path)")
    return value


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError("must start with a letter or _ and contain only letters, digits and _")
    return value


def _secret(min_length: int) -> Parser:
    def parse(value: str) -> str:
        if len(value) < min_length:
            raise ValueError(f"must be at least {min_length} characters long")
        if _UNSAFE_IN_ENV.search(value):
            raise ValueError("must not contain whitespace, quotes, $, #, ` or \\")
        return value

    return parse


def _access_key(value: str) -> str:
    if len(value) < 3 or _UNSAFE_IN_ENV.search(value):
        raise ValueError("must be at least 3 characters, without whitespace, quotes, $ or #")
    return value


_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError("must be 1-64 letters, digits or . _ @ + -")
    return value


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _bucket(value: str) -> str:
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError("must be a valid S3 bucket name (3-63 lowercase letters, digits, . or -)")
    return value


def _endpoint_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:9000")
    if parts.path not in {"", "/"} or parts.query:
        raise ValueError("must not have a path or query (the bucket is set separately)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value.rstrip("/")


_REGION = re.compile(r"^[a-z0-9-]{2,32}$")


def _region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError("must be a region name such as us-east-1")
    return value


_HOST_PATTERN = re.compile(r"^[A-Za-z0-9.*:\-\[\]]+$")


def _host_patterns(value: str) -> tuple[str, ...]:
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    for pattern in patterns:
        if not _HOST_PATTERN.match(pattern):
            raise ValueError(
                f"{pattern!r} is not a host name or pattern (letters, digits, . - : and * only)"
            )
    return patterns


def _networks(value: str) -> tuple[str, ...]:
    networks = tuple(item.strip() for item in value.split(",") if item.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(
                f"{network!r} is not an IP address or CIDR range such as 10.0.0.0/16"
            ) from None
    return networks


# --- the contract ---


def _setting(name: str, doc: str, section: str, **options: Any) -> Any:
    return field(metadata={"setting": Setting(name, doc, section, **options)})


@dataclass(frozen=True)
class Settings:
    """The validated configuration. Build it with :meth:`from_env`."""

    postgres_host: str = _setting(
        "POSTGRES_HOST",
        "Host of the PostgreSQL server (compose uses its postgres service, the native runtime "
        "its own server on 127.0.0.1, AWS the RDS endpoint).",
        "postgres",
        default="127.0.0.1",
        parse=_host,
    )
    postgres_port: int = _setting(
        "POSTGRES_PORT",
        "TCP port of the PostgreSQL server (the native runtime listens on it).",
        "postgres",
        default="5432",
        parse=_port,
    )
    postgres_user: str = _setting(
        "POSTGRES_USER",
        "PostgreSQL role the server connects as (created as the superuser by compose and "
        "the native runtime).",
        "postgres",
        default="mlflow",
        parse=_identifier,
    )
    postgres_password: str = _setting(
        "POSTGRES_PASSWORD",
        "Password of POSTGRES_USER.",
        "postgres",
        parse=_secret(12),
        secret=True,
        generate=True,
    )
    postgres_db: str = _setting(
        "POSTGRES_DB",
        "Database for experiments, runs and the model registry (created if missing).",
        "postgres",
        default="mlflow",
        parse=_identifier,
    )
    auth_db: str = _setting(
        "MLFLOW_STACK_AUTH_DB",
        "Database for users and permissions of the basic-auth app (created if missing).",
        "postgres",
        default="mlflow_auth",
        parse=_identifier,
    )
    postgres_sslmode: str = _setting(
        "POSTGRES_SSLMODE",
        "libpq sslmode for connections to PostgreSQL (use require or verify-full for a "
        "database across a network).",
        "postgres",
        default="prefer",
        parse=_choice("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    )
    s3_bucket: str = _setting(
        "MLFLOW_STACK_S3_BUCKET",
        "Bucket that holds all artifacts (created if missing).",
        "s3",
        default="mlflow",
        parse=_bucket,
    )
    s3_endpoint_url: str = _setting(
        "MLFLOW_STACK_S3_ENDPOINT_URL",
        "S3 endpoint; empty means AWS S3. Compose points it at its minio service; the native "
        "runtime runs its own S3 server on this URL's port (http://127.0.0.1:9000 if empty).",
        "s3",
        default="",
        parse=_endpoint_url,
    )
    s3_access_key: str = _setting(
        "MLFLOW_STACK_S3_ACCESS_KEY",
        "S3 access key id; empty means the default AWS credential chain (e.g. an EC2 "
        "instance role). Compose and the native runtime require it.",
        "s3",
        default="",
        parse=_access_key,
        generate=True,
    )
    s3_secret_key: str = _setting(
        "MLFLOW_STACK_S3_SECRET_KEY",
        "S3 secret access key; set together with MLFLOW_STACK_S3_ACCESS_KEY.",
        "s3",
        default="",
        parse=_secret(12),
        secret=True,
        generate=True,
    )
    s3_region: str = _setting(
        "MLFLOW_STACK_S3_REGION",
        "S3 region.",
        "s3",
        default="us-east-1",
        parse=_region,
    )
    presigned_urls: bool = _setting(
        "MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS",
        "Let clients move large artifacts straight to and from S3 with presigned URLs. Only "
        "where every client can reach the S3 endpoint (e.g. AWS S3); off: every artifact byte "
        "goes through the server.",
        "s3",
        default="false",
        parse=_boolean,
    )
    host: str = _setting(
        "MLFLOW_STACK_HOST",
        "Interface the server binds to (the image sets 0.0.0.0; keep 127.0.0.1 on a shared "
        "machine).",
        "server",
        default="127.0.0.1",
        parse=_host,
    )
    port: int = _setting(
        "MLFLOW_STACK_PORT",
        "TCP port of the MLflow server (the only port compose publishes).",
        "server",
        default="5000",
        parse=_port,
    )
    workers: int = _setting(
        "MLFLOW_STACK_WORKERS",
        "Number of server worker processes.",
        "server",
        default="2",
        parse=_int_between(1, 64),
    )
    allowed_hosts: tuple[str, ...] = _setting(
        "MLFLOW_STACK_ALLOWED_HOSTS",
        "Host names clients use to reach the server, besides localhost and private IPs "
        "(always allowed); comma-separated, * wildcards, any port. Add your public DNS name.",
        "server",
        default="mlflow",
        parse=_host_patterns,
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "MLFLOW_STACK_TRUSTED_PROXIES",
        "Reverse proxies or load balancers in front of the server (IP addresses or CIDR ranges, "
        "comma-separated) whose X-Forwarded-For header names the real client. Empty: trust "
        "none; the connecting address is the client (failed logins are limited per client).",
        "server",
        default="",
        parse=_networks,
    )
    wait_timeout: int = _setting(
        "MLFLOW_STACK_WAIT_TIMEOUT",
        "Seconds `serve` waits for PostgreSQL and S3 to answer before giving up.",
        "server",
        default="60",
        parse=_int_between(1, 3600),
    )
    job_execution: bool = _setting(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
        "Run MLflow's job runner and huey consumers (GenAI scorer and prompt-optimization "
        "jobs, ~230 MB each); a tracking server does not need them.",
        "server",
        default="false",
        parse=_boolean,
    )
    gc_retention_days: int = _setting(
        "MLFLOW_STACK_GC_RETENTION_DAYS",
        "Days a deleted run or experiment stays restorable: the scheduled `mlflow-stack gc` "
        "(compose gc service, EC2 timer, cron) then deletes it and its artifacts for good.",
        "server",
        default="30",
        parse=_int_between(0, 36500),
    )
    admin_username: str = _setting(
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "Admin account created on first start (later changes need the update-password API).",
        "auth",
        default="admin",
        parse=_username,
    )
    admin_password: str = _setting(
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "Password of the admin account, used when the account is first created.",
        "auth",
        parse=_secret(12),
        secret=True,
        generate=True,
    )
    flask_secret_key: str = _setting(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "Signs the UI's CSRF tokens; every worker and replica must share it.",
        "auth",
        parse=_secret(16),
        secret=True,
        generate=True,
    )
    default_permission: str = _setting(
        "MLFLOW_STACK_AUTH_DEFAULT_PERMISSION",
        "Permission every user has on resources they did not create.",
        "auth",
        default="READ",
        parse=_choice("READ", "EDIT", "MANAGE", "NO_PERMISSIONS"),
    )
    auth_cache_ttl: int = _setting(
        "MLFLOW_STACK_AUTH_CACHE_TTL",
        "Seconds a worker remembers a verified password (0: verify every request, ~0.1 s of "
        "scrypt each). A password change or user deletion reaches the other workers within it.",
        "auth",
        default="60",
        parse=_int_between(0, 3600),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate every setting; raise ConfigError listing every problem."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        for attribute, setting in _FIELDS:
            raw = environ.get(setting.name, "")
            if raw == "":
                if setting.required:
                    problems.append(f"{setting.name} is not set: it is required and has no default")
                    continue
                raw = setting.default or ""
                if raw == "":
                    values[attribute] = ""
                    continue
            try:
                values[attribute] = setting.parse(raw)
            except ValueError as error:
                shown = "" if setting.secret else f"={raw!r}"
                problems.append(f"{setting.name}{shown} {error}")
        if not problems:
            problems.extend(_cross_checks(values))
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    # --- derived values ---

    @property
    def backend_store_uri(self) -> str:
        """SQLAlchemy URI of the tracking database; the password travels in PGPASSWORD."""
        return self._database_uri(self.postgres_db)

    @property
    def auth_database_uri(self) -> str:
        return self._database_uri(self.auth_db)

    def _database_uri(self, database: str) -> str:
        host = f"[{self.postgres_host}]" if ":" in self.postgres_host else self.postgres_host
        user = quote(self.postgres_user, safe="")
        return f"postgresql+psycopg2://{user}@{host}:{self.postgres_port}/{database}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.s3_bucket}"

    @property
    def tracking_uri(self) -> str:
        wildcard = {"0.0.0.0", "::"}  # noqa: S104 - recognising it, not binding
        host = "127.0.0.1" if self.host in wildcard else self.host
        return f"http://{host}:{self.port}"


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    problems = []
    if values["auth_db"] == values["postgres_db"]:
        problems.append("MLFLOW_STACK_AUTH_DB must differ from POSTGRES_DB")
    if bool(values["s3_access_key"]) != bool(values["s3_secret_key"]):
        problems.append(
            "MLFLOW_STACK_S3_ACCESS_KEY and MLFLOW_STACK_S3_SECRET_KEY must be set together "
            "(or both left empty to use the AWS credential chain)"
        )
    return problems


_FIELDS: tuple[tuple[str, Setting], ...] = tuple(
    (f.name, f.metadata["setting"]) for f in fields(Settings)
)

#: Every setting, in the order they appear in .env.example.
SETTINGS: tuple[Setting, ...] = tuple(setting for _, setting in _FIELDS)
SETTING_NAMES: frozenset[str] = frozenset(setting.name for setting in SETTINGS)


def unknown_names(names: Iterable[str]) -> list[str]:
    """Warnings for names that look like stack settings but are not (likely typos)."""
    warnings = []
    prefixes = ("MLFLOW_STACK_", "POSTGRES_")
    for name in names:
        if name.startswith(prefixes) and name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting of mlflow-stack{hint}")
    return warnings


def render_env_file(values: Mapping[str, str] | None = None) -> str:
    """The text of an env file listing every setting with its doc.

    Without ``values`` this is ``.env.example``: secrets left empty, defaults filled in.
    """
    values = values or {}
    lines = [
        "# mlflow-stack settings. Copy to .env and fill in every empty value, or run `make up`,",
        "# which writes .env with fresh random secrets when there is none. docker compose, the",
        "# native runtime and the EC2 user data all read these same names; the process",
        "# environment overrides this file. Generated by `mlflow-stack config example`.",
    ]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# --- {SECTIONS[section]} ---"]
        doc = setting.doc + (" Required." if setting.required else "")
        lines += textwrap.wrap(doc, width=98, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"{setting.name}={values.get(setting.name, setting.default or '')}")
    return "\n".join(lines) + "\n"


def new_env_values() -> dict[str, str]:
    """Fresh random values for every setting that a new .env gets generated."""
    return {s.name: s.new_value() for s in SETTINGS if s.generate}
