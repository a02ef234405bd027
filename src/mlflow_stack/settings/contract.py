"""Every environment variable the stack reads: name, default, check and a one-line doc.

This module is the single source of truth for the stack's configuration contract.
``.env.example`` and ``docs/configuration.md`` are rendered from it (:mod:`.render`);
``docker-compose.yml``, the native runtime and the EC2 user data name exactly these variables,
and tests keep them in agreement. The value checks live in :mod:`.checks`. A missing or invalid
value stops start-up with one line per problem naming the variable
(:class:`~mlflow_stack.errors.ConfigError`).
"""

from __future__ import annotations

import difflib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings import checks

SECTIONS = {
    "postgres": "PostgreSQL (backend store: experiments, runs, metrics, registry, users)",
    "s3": "S3 (artifact store, reached only by the server: clients never hold these keys)",
    "server": "MLflow server",
    "auth": "Authentication (MLflow basic-auth; login is always required)",
    "sso": "Single sign-on (MLFLOW_STACK_AUTH_MODE=oidc: the team's OpenID provider)",
}

#: The runtimes that read the contract (each passes every setting of :class:`Settings` to
#: `mlflow-stack serve`), and where each takes a value from unless it sets the value itself
#: (:attr:`Setting.fixed_by`).
RUNTIMES = {
    "native": ("native (`mlflow-stack up`)", "`.env`"),
    "compose": ("docker compose", "`.env`"),
    "ec2": ("AWS (EC2 user data)", "Terraform's `settings`"),
}


@dataclass(frozen=True)
class Setting:
    """One environment variable of the contract."""

    name: str
    doc: str
    section: str
    default: str | None = None  # None: required, and there is no default
    parse: checks.Parser = checks.text
    secret: bool = False  # never echoed back in messages
    generate: bool = False  # `make up` fills it with a fresh random value in a new .env
    #: Runtimes that set the value themselves (runtime -> what they set), so that a value in
    #: .env does not reach the server there; tests compare this with compose and Terraform.
    fixed_by: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Runtimes that read the variable at all. Every setting `mlflow-stack serve` reads is read by
    #: all of them; one read by fewer configures a runtime's other services (compose's MinIO).
    read_by: frozenset[str] = frozenset(RUNTIMES)

    @property
    def required(self) -> bool:
        return self.default is None

    def value_from(self, environ: Mapping[str, str]) -> Any:
        """The parsed value in ``environ``, else the default (an empty default stays empty, as
        in :meth:`Settings.from_env`); ConfigError naming the variable."""
        raw = environ.get(self.name) or self.default or ""
        return "" if raw == "" else self.checked(raw)

    def checked(self, raw: str) -> Any:
        """``raw`` parsed, or ConfigError with one line naming the variable (and its value,
        unless it is a secret)."""
        try:
            return self.parse(raw)
        except ValueError as error:
            shown = "" if self.secret else f"={raw!r}"
            raise ConfigError([f"{self.name}{shown} {error}"]) from None

    def new_value(self) -> str:
        """A fresh random value for a new .env file (secrets and generated identifiers)."""
        return secrets.token_urlsafe(32) if self.secret else secrets.token_hex(10)


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
        parse=checks.host,
        fixed_by={"compose": "`postgres`, the compose service", "ec2": "the RDS endpoint"},
    )
    postgres_port: int = _setting(
        "POSTGRES_PORT",
        "TCP port of the PostgreSQL server (the native runtime listens on it).",
        "postgres",
        default="5432",
        parse=checks.port,
        fixed_by={"compose": "5432, inside the compose network", "ec2": "the RDS port"},
    )
    postgres_user: str = _setting(
        "POSTGRES_USER",
        "PostgreSQL role the server connects as (created as the superuser by compose and "
        "the native runtime).",
        "postgres",
        default="mlflow",
        parse=checks.identifier,
        fixed_by={"ec2": "Terraform's `db_username`"},
    )
    postgres_password: str = _setting(
        "POSTGRES_PASSWORD",
        "Password of POSTGRES_USER, read once at start. Set exactly one of POSTGRES_PASSWORD, "
        "POSTGRES_PASSWORD_FILE and POSTGRES_PASSWORD_SECRET_ARN; the native runtime generates "
        "this one into a new .env, and compose requires it.",
        "postgres",
        default="",
        parse=checks.secret(12),
        secret=True,
        generate=True,
        fixed_by={"ec2": "empty: POSTGRES_PASSWORD_SECRET_ARN"},
    )
    postgres_password_file: str = _setting(
        "POSTGRES_PASSWORD_FILE",
        "File holding the password of POSTGRES_USER (one line), read again whenever a "
        "connection to PostgreSQL is opened: replace the file (atomically, e.g. with mv) to "
        "rotate the password without a restart.",
        "postgres",
        default="",
        parse=checks.absolute_path,
        fixed_by={"ec2": "empty: POSTGRES_PASSWORD_SECRET_ARN"},
    )
    postgres_password_secret_arn: str = _setting(
        "POSTGRES_PASSWORD_SECRET_ARN",
        "AWS Secrets Manager secret whose JSON has the password of POSTGRES_USER as "
        "`password`, read through the default AWS credential chain (e.g. an EC2 instance role) "
        "when a connection is opened, kept for a minute, and read again at once when "
        "PostgreSQL refuses it, so that a rotation needs no restart.",
        "postgres",
        default="",
        parse=checks.secret_arn,
        fixed_by={"ec2": "the database secret Terraform creates"},
    )
    postgres_db: str = _setting(
        "POSTGRES_DB",
        "Database for experiments, runs and the model registry (created if missing).",
        "postgres",
        default="mlflow",
        parse=checks.identifier,
        fixed_by={"ec2": "Terraform's `db_name`"},
    )
    auth_db: str = _setting(
        "MLFLOW_STACK_AUTH_DB",
        "Database for users and permissions of the basic-auth app (created if missing).",
        "postgres",
        default="mlflow_auth",
        parse=checks.identifier,
    )
    postgres_sslmode: str = _setting(
        "POSTGRES_SSLMODE",
        "libpq sslmode for connections to PostgreSQL (use require or verify-full for a "
        "database across a network).",
        "postgres",
        default="prefer",
        parse=checks.choice("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        fixed_by={"ec2": "`require`"},
    )
    s3_bucket: str = _setting(
        "MLFLOW_STACK_S3_BUCKET",
        "Bucket that holds all artifacts (created if missing).",
        "s3",
        default="mlflow",
        parse=checks.bucket,
        fixed_by={"ec2": "the bucket Terraform creates"},
    )
    s3_endpoint_url: str = _setting(
        "MLFLOW_STACK_S3_ENDPOINT_URL",
        "S3 endpoint; empty means AWS S3. Compose points it at its minio service; the native "
        "runtime runs its own S3 server on this URL's port (http://127.0.0.1:9000 if empty).",
        "s3",
        default="",
        parse=checks.endpoint_url,
        fixed_by={"compose": "`http://minio:9000`", "ec2": "empty: AWS S3"},
    )
    s3_access_key: str = _setting(
        "MLFLOW_STACK_S3_ACCESS_KEY",
        "S3 access key id; empty means the default AWS credential chain (e.g. an EC2 "
        "instance role). Compose and the native runtime require it; in compose it names the "
        "bucket-only MinIO user that minio-init creates.",
        "s3",
        default="",
        parse=checks.access_key,
        generate=True,
        fixed_by={"ec2": "empty: the instance role"},
    )
    s3_secret_key: str = _setting(
        "MLFLOW_STACK_S3_SECRET_KEY",
        "S3 secret access key; set together with MLFLOW_STACK_S3_ACCESS_KEY.",
        "s3",
        default="",
        parse=checks.secret(12),
        secret=True,
        generate=True,
        fixed_by={"ec2": "empty: the instance role"},
    )
    s3_region: str = _setting(
        "MLFLOW_STACK_S3_REGION",
        "S3 region.",
        "s3",
        default="us-east-1",
        parse=checks.region,
        fixed_by={"ec2": "the deployment's region"},
    )
    presigned_urls: bool = _setting(
        "MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS",
        "Let clients move large artifacts straight to and from S3 with presigned URLs. Only "
        "where every client can reach the S3 endpoint (e.g. AWS S3); off: every artifact byte "
        "goes through the server.",
        "s3",
        default="false",
        parse=checks.boolean,
    )
    host: str = _setting(
        "MLFLOW_STACK_HOST",
        "Interface the server binds to (the image sets 0.0.0.0; keep 127.0.0.1 on a shared "
        "machine).",
        "server",
        default="127.0.0.1",
        parse=checks.host,
        fixed_by={
            "compose": "0.0.0.0 in the container; .env's value is the published address",
            "ec2": "0.0.0.0 in the container",
        },
    )
    port: int = _setting(
        "MLFLOW_STACK_PORT",
        "TCP port of the MLflow server (the only port compose publishes).",
        "server",
        default="5000",
        parse=checks.port,
        fixed_by={
            "compose": "5000 in the container; .env's value is the published port",
            "ec2": "5000 in the container, behind the load balancer",
        },
    )
    workers: int = _setting(
        "MLFLOW_STACK_WORKERS",
        "Number of server worker processes.",
        "server",
        default="2",
        parse=checks.int_between(1, 64),
    )
    allowed_hosts: tuple[str, ...] = _setting(
        "MLFLOW_STACK_ALLOWED_HOSTS",
        "Host names clients use to reach the server, besides localhost and private IPs "
        "(always allowed); comma-separated, * wildcards, any port. Add your public DNS name.",
        "server",
        default="mlflow",
        parse=checks.host_patterns,
        fixed_by={"ec2": "`domain_name` and the load balancer's DNS name"},
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "MLFLOW_STACK_TRUSTED_PROXIES",
        "Reverse proxies or load balancers in front of the server (IP addresses or CIDR ranges, "
        "comma-separated) whose X-Forwarded-For header names the real client. Empty: trust "
        "none; the connecting address is the client (failed logins are limited per client).",
        "server",
        default="",
        parse=checks.networks,
        fixed_by={"ec2": "the VPC's CIDR block"},
    )
    wait_timeout: int = _setting(
        "MLFLOW_STACK_WAIT_TIMEOUT",
        "Seconds `serve` waits for PostgreSQL and S3 to answer before giving up.",
        "server",
        default="60",
        parse=checks.int_between(1, 3600),
    )
    job_execution: bool = _setting(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
        "Run MLflow's job runner and huey consumers (GenAI scorer and prompt-optimization "
        "jobs, ~230 MB each); a tracking server does not need them.",
        "server",
        default="false",
        parse=checks.boolean,
    )
    gc_retention_days: int = _setting(
        "MLFLOW_STACK_GC_RETENTION_DAYS",
        "Days a deleted run or experiment stays restorable: the scheduled `mlflow-stack gc` "
        "(compose gc service, EC2 timer, cron) then deletes it and its artifacts for good.",
        "server",
        default="30",
        parse=checks.int_between(0, 36500),
    )
    admin_username: str = _setting(
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "Admin account created on first start (later changes need the update-password API).",
        "auth",
        default="admin",
        parse=checks.username,
    )
    admin_password: str = _setting(
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "Password of the admin account, used when the account is first created.",
        "auth",
        parse=checks.secret(12),
        secret=True,
        generate=True,
        fixed_by={"ec2": "read from Secrets Manager at boot"},
    )
    flask_secret_key: str = _setting(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "Signs the UI's CSRF tokens; every worker and replica must share it.",
        "auth",
        parse=checks.secret(16),
        secret=True,
        generate=True,
        fixed_by={"ec2": "read from Secrets Manager at boot"},
    )
    default_permission: str = _setting(
        "MLFLOW_STACK_AUTH_DEFAULT_PERMISSION",
        "Permission every user has on resources they did not create (basic mode; with "
        "MLFLOW_STACK_AUTH_MODE=oidc the groups' permissions are the only defaults).",
        "auth",
        default="READ",
        parse=checks.choice("READ", "EDIT", "MANAGE", "NO_PERMISSIONS"),
    )
    auth_cache_ttl: int = _setting(
        "MLFLOW_STACK_AUTH_CACHE_TTL",
        "Seconds a worker remembers a verified password (0: verify every request, ~0.1 s of "
        "scrypt each). A password change or user deletion reaches the other workers within it.",
        "auth",
        default="60",
        parse=checks.int_between(0, 3600),
    )

    auth_mode: str = _setting(
        "MLFLOW_STACK_AUTH_MODE",
        "How people and scripts sign in: `basic` (MLflow's users and passwords) or `oidc` "
        "(the team's OpenID provider for the UI, its access tokens for scripts; the admin "
        "account's password keeps working as a break-glass login).",
        "auth",
        default="basic",
        parse=checks.choice("basic", "oidc"),
        fixed_by={"ec2": "`oidc` when Terraform's `oidc_issuer` is set"},
    )
    public_url: str = _setting(
        "MLFLOW_STACK_PUBLIC_URL",
        "URL people open the server at; the provider sends them back to its /auth/callback. "
        "With https:// the session cookie is Secure; its host is answered besides "
        "MLFLOW_STACK_ALLOWED_HOSTS. Required with MLFLOW_STACK_AUTH_MODE=oidc.",
        "sso",
        default="",
        parse=checks.public_url,
        fixed_by={
            "ec2": "https:// and the domain name (or the load balancer's name); empty in basic mode"
        },
    )
    oidc_issuer: str = _setting(
        "MLFLOW_STACK_OIDC_ISSUER",
        "Issuer URL of the OpenID provider (its /.well-known/openid-configuration is read at "
        "start). Required with MLFLOW_STACK_AUTH_MODE=oidc.",
        "sso",
        default="",
        parse=checks.issuer_url,
        fixed_by={"ec2": "Terraform's `oidc_issuer` (empty: basic mode)"},
    )
    oidc_client_id: str = _setting(
        "MLFLOW_STACK_OIDC_CLIENT_ID",
        "Client id of the server's registration at the provider. Required with "
        "MLFLOW_STACK_AUTH_MODE=oidc.",
        "sso",
        default="",
        parse=checks.client_id,
        fixed_by={"ec2": "Terraform's `oidc_client_id` (empty in basic mode)"},
    )
    oidc_client_secret: str = _setting(
        "MLFLOW_STACK_OIDC_CLIENT_SECRET",
        "Client secret of that registration. With MLFLOW_STACK_AUTH_MODE=oidc set exactly one "
        "of it and MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE.",
        "sso",
        default="",
        parse=checks.secret(8),
        secret=True,
        fixed_by={"ec2": "read from Secrets Manager at boot"},
    )
    oidc_client_secret_file: str = _setting(
        "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE",
        "File holding the client secret (one line), e.g. a compose secret under /run/secrets.",
        "sso",
        default="",
        parse=checks.absolute_path,
        fixed_by={"ec2": "empty: MLFLOW_STACK_OIDC_CLIENT_SECRET"},
    )
    oidc_scopes: tuple[str, ...] = _setting(
        "MLFLOW_STACK_OIDC_SCOPES",
        "Scopes asked for at sign-in (space-separated); add the one that brings the group "
        "claim where the provider needs it (Okta: groups).",
        "sso",
        default="openid profile email",
        parse=checks.scopes,
    )
    oidc_username_claim: tuple[str, ...] = _setting(
        "MLFLOW_STACK_OIDC_USERNAME_CLAIM",
        "Claims of ID tokens and access tokens that name the MLflow user, comma-separated: the "
        "first one a token carries wins (e.g. `preferred_username,azp` also names Entra ID's "
        "app-only tokens by their client id).",
        "sso",
        default="preferred_username",
        parse=checks.claims,
    )
    oidc_groups_claim: tuple[str, ...] = _setting(
        "MLFLOW_STACK_OIDC_GROUPS_CLAIM",
        "Claims that list the user's groups (each a list of names, or one name), "
        "comma-separated: their names together count (e.g. `groups,roles` for Entra ID's app "
        "roles).",
        "sso",
        default="groups",
        parse=checks.claims,
    )
    oidc_admin_groups: tuple[str, ...] = _setting(
        "MLFLOW_STACK_OIDC_ADMIN_GROUPS",
        "Groups whose members are MLflow admins (comma-separated).",
        "sso",
        default="",
        parse=checks.names,
    )
    oidc_group_permissions: tuple[tuple[str, str, str], ...] = _setting(
        "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS",
        "Each group's permission on every experiment and registered model, as "
        "GROUP=PERMISSION or GROUP=EXPERIMENTS:MODELS, comma-separated (e.g. "
        "`ml-team=EDIT,analysts=READ:NO_PERMISSIONS`). Someone in none of these groups and "
        "none of MLFLOW_STACK_OIDC_ADMIN_GROUPS is refused.",
        "sso",
        default="",
        parse=checks.group_permissions,
    )
    oidc_audience: str = _setting(
        "MLFLOW_STACK_OIDC_AUDIENCE",
        "Audience (aud) an access token must carry to be accepted as MLFLOW_TRACKING_TOKEN "
        "(empty: the client id).",
        "sso",
        default="",
        parse=checks.text,
    )
    oidc_session_ttl: int = _setting(
        "MLFLOW_STACK_OIDC_SESSION_TTL",
        "Seconds a UI sign-in lasts; then the provider is asked again, so a group change "
        "reaches the UI within it (an access token's groups last as long as the token).",
        "sso",
        default="3600",
        parse=checks.int_between(5, 86400),
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
                values[attribute] = setting.checked(raw)
            except ConfigError as error:
                problems.extend(error.problems)
        problems.extend(_password_source_problems(environ))
        problems.extend(_sso_problems(environ))
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
    def host_names(self) -> tuple[str, ...]:
        """The Host names the server answers: MLFLOW_STACK_ALLOWED_HOSTS, and with single
        sign-on the host of MLFLOW_STACK_PUBLIC_URL, where the provider sends browsers back."""
        from urllib.parse import urlsplit

        public = urlsplit(self.public_url).hostname if self.auth_mode == "oidc" else None
        if not public or public in self.allowed_hosts:
            return self.allowed_hosts
        return (*self.allowed_hosts, public)

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.s3_bucket}"

    @property
    def tracking_uri(self) -> str:
        wildcard = {"0.0.0.0", "::"}  # noqa: S104 - recognising it, not binding
        host = "127.0.0.1" if self.host in wildcard else self.host
        return f"http://{host}:{self.port}"


#: Where the database password may come from; exactly one of them is set.
PASSWORD_SOURCES = ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_PASSWORD_SECRET_ARN")


def _password_source_problems(environ: Mapping[str, str]) -> list[str]:
    """One line when none or several of :data:`PASSWORD_SOURCES` are set (empty is unset)."""
    given = [name for name in PASSWORD_SOURCES if environ.get(name, "")]
    if len(given) == 1:
        return []
    choices = f"{', '.join(PASSWORD_SOURCES[:-1])} or {PASSWORD_SOURCES[-1]}"
    if not given:
        return [f"POSTGRES_PASSWORD is not set: set exactly one of {choices}"]
    are = "are both set" if len(given) == 2 else "are all set"
    return [f"{' and '.join(given)} {are}: set exactly one of {choices}"]


#: What MLFLOW_STACK_AUTH_MODE=oidc needs besides a client secret.
SSO_REQUIRED = (
    "MLFLOW_STACK_PUBLIC_URL",
    "MLFLOW_STACK_OIDC_ISSUER",
    "MLFLOW_STACK_OIDC_CLIENT_ID",
)
CLIENT_SECRET_SOURCES = (
    "MLFLOW_STACK_OIDC_CLIENT_SECRET",
    "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE",
)


def _sso_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per setting single sign-on lacks, when MLFLOW_STACK_AUTH_MODE is oidc."""
    if environ.get("MLFLOW_STACK_AUTH_MODE", "") != "oidc":
        return []
    problems = [
        f"{name} is not set: MLFLOW_STACK_AUTH_MODE=oidc needs it"
        for name in SSO_REQUIRED
        if not environ.get(name, "")
    ]
    given = [name for name in CLIENT_SECRET_SOURCES if environ.get(name, "")]
    if len(given) != 1:
        which = "is not set" if not given else "and its _FILE are both set"
        problems.append(
            f"MLFLOW_STACK_OIDC_CLIENT_SECRET {which}: with MLFLOW_STACK_AUTH_MODE=oidc set "
            "exactly one of it and MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE"
        )
    if not environ.get("MLFLOW_STACK_OIDC_ADMIN_GROUPS", "") and not environ.get(
        "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS", ""
    ):
        problems.append(
            "MLFLOW_STACK_OIDC_GROUP_PERMISSIONS is not set: with MLFLOW_STACK_AUTH_MODE=oidc "
            "name the groups that may sign in (or MLFLOW_STACK_OIDC_ADMIN_GROUPS)"
        )
    return problems


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

#: Settings that `mlflow-stack serve` never reads: compose gives them to its minio and
#: minio-init services only (minio/provision.sh). Not fields of :class:`Settings`.
COMPOSE_ONLY: tuple[Setting, ...] = (
    Setting(
        "MINIO_ROOT_USER",
        "Root user of compose's MinIO. Only the one-shot minio-init service signs with it, to "
        "create the bucket and the bucket-only user MLFLOW_STACK_S3_ACCESS_KEY that the server "
        "uses. Must differ from MLFLOW_STACK_S3_ACCESS_KEY. Compose requires it.",
        "s3",
        default="",
        parse=checks.access_key,
        generate=True,
        read_by=frozenset({"compose"}),
    ),
    Setting(
        "MINIO_ROOT_PASSWORD",
        "Password of MINIO_ROOT_USER. Compose requires it.",
        "s3",
        default="",
        parse=checks.secret(12),
        secret=True,
        generate=True,
        read_by=frozenset({"compose"}),
    ),
)


def compose_only_problems(environ: Mapping[str, str]) -> list[str]:
    """One line per invalid value of a :data:`COMPOSE_ONLY` setting that ``environ`` sets
    (`mlflow-stack config check` reports them; `serve` never reads them)."""
    problems = []
    for setting in COMPOSE_ONLY:
        raw = environ.get(setting.name, "")
        if raw:
            try:
                setting.checked(raw)
            except ConfigError as error:
                problems.extend(error.problems)
    user, server_key = environ.get("MINIO_ROOT_USER"), environ.get("MLFLOW_STACK_S3_ACCESS_KEY")
    if user and user == server_key:
        problems.append(
            "MINIO_ROOT_USER must differ from MLFLOW_STACK_S3_ACCESS_KEY: in compose the server "
            "gets a bucket-only user of its own"
        )
    return problems


#: The settings `mlflow-stack serve` reads: every runtime passes these, and only these, to it.
SERVE_SETTINGS: tuple[Setting, ...] = tuple(setting for _, setting in _FIELDS)
SERVE_SETTING_NAMES: frozenset[str] = frozenset(setting.name for setting in SERVE_SETTINGS)
#: Every setting, in the order they appear in .env.example (by section).
SETTINGS: tuple[Setting, ...] = tuple(
    sorted(
        (*SERVE_SETTINGS, *COMPOSE_ONLY), key=lambda setting: list(SECTIONS).index(setting.section)
    )
)
SETTING_NAMES: frozenset[str] = frozenset(setting.name for setting in SETTINGS)
_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def setting(name: str) -> Setting:
    """The setting called ``name`` (KeyError for a name that is not one)."""
    return _BY_NAME[name]


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


def new_env_values() -> dict[str, str]:
    """Fresh random values for every setting that a new .env gets generated."""
    return {s.name: s.new_value() for s in SETTINGS if s.generate}
