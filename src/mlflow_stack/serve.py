"""``mlflow-stack serve``: the one server entrypoint of the image, the native runtime and EC2.

It waits for PostgreSQL and S3 (bounded), creates the databases and the bucket when missing,
migrates both schemas, then serves MLflow: PostgreSQL backend store, artifacts proxied to S3
(clients never see storage credentials), the basic-auth app with its user store in PostgreSQL,
and the allowed Host headers from the settings.

This process then becomes the server's master (:mod:`mlflow_stack.server.launcher`): it sets
the environment ``mlflow server`` would give its workers (:func:`mlflow_environment`, kept equal
to MLflow's by a test), imports MLflow once and forks the workers, so the same pid receives the
signals and no idle launcher holds a second copy of MLflow. With MLflow's job runner enabled
(MLFLOW_SERVER_ENABLE_JOB_EXECUTION) MLflow's own ``mlflow server`` runs instead, in this process:
it starts the runner beside its workers.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from mlflow_stack.errors import StackError
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores import password
from mlflow_stack.stores.database import (
    apply_database_defaults,
    ensure_databases,
    libpq_environment,
    migrate,
    one_server_at_a_time,
    wait_for_postgres,
)
from mlflow_stack.stores.storage import ensure_bucket, s3_environment

log = logging.getLogger(__name__)

_HAS_PORT = re.compile(r":(\d+|\*)$")
POOL_DEFAULTS = {
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "12",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "3",
}


def allowed_hosts(settings: Settings) -> str:
    """MLflow's own defaults (localhost and private IPs, any port) plus the configured names.

    Passing ``--allowed-hosts`` replaces MLflow's defaults, so they are repeated here; each
    configured name is accepted with or without a port.
    """
    if "*" in settings.host_names:
        return "*"
    from mlflow.server.security_utils import get_default_allowed_hosts

    patterns = list(get_default_allowed_hosts())
    for host in settings.host_names:
        patterns.append(host)
        if not _HAS_PORT.search(host):
            patterns.append(f"{host}:*")
    return ",".join(dict.fromkeys(patterns))


def write_auth_config(settings: Settings, directory: Path) -> Path:
    """The basic-auth ini: user store in PostgreSQL. It holds no secret (the password hook
    of mlflow_stack.stores.password, or PGPASSWORD, gives it)."""
    path = directory / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission(settings)}\n"
        f"database_uri = {settings.auth_database_uri}\n"
        f"admin_username = {settings.admin_username}\n"
        # MLflow's basic-auth check, in turns per credential (mlflow_stack.server.login)
        "authorization_function = mlflow_stack.server.login:authenticate_request\n"
        f"auth_cache_ttl_seconds = {settings.auth_cache_ttl}\n"
    )
    return path


def default_permission(settings: Settings) -> str:
    """MLflow's permission for users on what nobody granted them. With single sign-on the
    groups' permissions are the defaults (:mod:`mlflow_stack.sso.roles`): nothing beyond them."""
    return "NO_PERMISSIONS" if settings.auth_mode == "oidc" else settings.default_permission


def server_arguments(settings: Settings) -> list[str]:
    """The arguments of `mlflow server`."""
    return [
        "server",
        "--backend-store-uri", settings.backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination", settings.artifacts_destination,
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
        "--app-name", "mlflow-stack",  # basic-auth, proxy-only artifacts (mlflow_stack.server.app)
        "--allowed-hosts", allowed_hosts(settings),
        "--uvicorn-opts", uvicorn_options(settings),
    ]  # fmt: skip


def uvicorn_options(settings: Settings) -> str:
    """Whose X-Forwarded-For to believe. uvicorn believes 127.0.0.1's by default, so any local
    user could pose as any client; only the configured proxies are believed here."""
    if not settings.trusted_proxies:
        return "--no-proxy-headers"
    return "--proxy-headers --forwarded-allow-ips " + ",".join(settings.trusted_proxies)


def server_environment(
    settings: Settings, auth_config: Path, base: Mapping[str, str]
) -> dict[str, str]:
    env = dict(base)
    if password.source_for(settings).changes and not settings.job_execution:
        # The password hook gives every connection the current password (serve installs it
        # before it forks the workers): none in the environment, where it would go stale.
        # MLflow's job runner starts processes of its own, which get the one of this start.
        env.pop("PGPASSWORD", None)
        env["PGSSLMODE"] = settings.postgres_sslmode
    else:
        env.update(libpq_environment(settings))
    for name, value in s3_environment(settings).items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)  # let boto3 use its default chain (e.g. an instance role)
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_config),
        MLFLOW_AUTH_ADMIN_USERNAME=settings.admin_username,
        MLFLOW_AUTH_ADMIN_PASSWORD=settings.admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=settings.flask_secret_key,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true" if settings.job_execution else "false",
        # Refuse (400) params and tags over MLflow's limits instead of storing them cut short.
        MLFLOW_TRUNCATE_LONG_VALUES="false",
        MLFLOW_STACK_ARTIFACT_PRESIGNED_URLS="true" if settings.presigned_urls else "false",
        PYTHONUNBUFFERED="1",
    )
    # Each of a worker's three stores (tracking, registry, users) may hold 15 connections, as
    # with SQLAlchemy's default 5 + 10 overflow, but keeps 12 of them: an overflow connection
    # is closed when returned and opened again for the next burst (a PostgreSQL backend forked
    # per request under load). Same ceiling (2 workers x 3 x 15 = 90 of PostgreSQL's 100; MLflow
    # ignores a max_overflow of 0); an operator's values win.
    for name, value in POOL_DEFAULTS.items():
        env.setdefault(name, value)
    # No usage telemetry from the server, nor from the UI it serves (its ui-telemetry config
    # then says disabled). An operator may opt in by setting both to false.
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    return env


def mlflow_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """What ``mlflow server`` with :func:`server_arguments` puts in its workers' environment
    (its CLI in ``os.environ``, ``_run_server`` in the workers'), for the workers forked here;
    ``tests/unit/test_serve.py`` compares it with MLflow's own. Its options' defaults are read
    from its click command, so they follow MLflow."""
    from mlflow.environment_variables import (
        _MLFLOW_IN_JOB_EXECUTOR,
        _MLFLOW_SERVER_BOOT_ID,
        _MLFLOW_SGI_NAME,
        MLFLOW_ENABLE_WORKSPACES,
    )
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
        SECRETS_CACHE_MAX_SIZE_ENV_VAR,
        SECRETS_CACHE_TTL_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    frame_options = "MLFLOW_SERVER_X_FRAME_OPTIONS"  # the option's envvar: the CLI keeps it
    return {
        frame_options: environ.get(frame_options) or _server_option_default("x_frame_options"),
        SECRETS_CACHE_TTL_ENV_VAR: str(_server_option_default("secrets_cache_ttl")),
        SECRETS_CACHE_MAX_SIZE_ENV_VAR: str(_server_option_default("secrets_cache_max_size")),
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts(settings),
        MLFLOW_ENABLE_WORKSPACES.name: "false",
        BACKEND_STORE_URI_ENV_VAR: settings.backend_store_uri,
        REGISTRY_STORE_URI_ENV_VAR: settings.backend_store_uri,
        ARTIFACT_ROOT_ENV_VAR: resolve_default_artifact_root(True, "", settings.backend_store_uri),
        SERVE_ARTIFACTS_ENV_VAR: "true",
        ARTIFACTS_DESTINATION_ENV_VAR: settings.artifacts_destination,
        _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,  # one per start, shared by the workers
        _MLFLOW_IN_JOB_EXECUTOR.name: "false",
        _MLFLOW_SGI_NAME.name: "uvicorn",  # the auth app then wraps itself in FastAPI
    }


def _server_option_default(name: str) -> object:
    from mlflow.cli import cli as mlflow_cli

    server = mlflow_cli.commands["server"]
    return next(option.default for option in server.params if option.name == name)


def prepare(settings: Settings) -> None:
    """Everything the server needs before it starts; safe to repeat."""
    conn = wait_for_postgres(settings)
    try:
        # Several servers may start together on one database (the AWS Auto Scaling group).
        with one_server_at_a_time(conn):
            ensure_databases(conn, settings)
            apply_database_defaults(conn, settings)
    finally:
        conn.close()
    ensure_bucket(settings)
    migrate(settings, then=lambda: bootstrap_admin(settings))


def bootstrap_admin(settings: Settings) -> None:
    """Create the admin once, before any worker starts (MLflow's launcher does this only for
    its own app name); the workers then find it and skip the race. With single sign-on, make
    the groups' roles match MLFLOW_STACK_OIDC_GROUP_PERMISSIONS too (under the same lock)."""
    from mlflow.server.auth import bootstrap_admin_user, get_flask_server_secret_key, store

    get_flask_server_secret_key()
    bootstrap_admin_user()
    if settings.auth_mode == "oidc":
        from mlflow_stack.sso.config import grants_of
        from mlflow_stack.sso.roles import ensure_roles

        ensure_roles(store, grants_of(settings))


def serve(settings: Settings, environ: Mapping[str, str]) -> NoReturn:
    config_dir = Path(tempfile.mkdtemp(prefix="mlflow-stack-"))  # private (0700), per start
    atexit.register(shutil.rmtree, config_dir, ignore_errors=True)  # not left per restart
    auth_config = write_auth_config(settings, config_dir)
    # Before anything imports mlflow.server.auth: it reads its configuration at import time.
    os.environ.clear()
    os.environ.update(server_environment(settings, auth_config, environ))
    # Every engine of this process and of the workers it forks (MLflow's tracking, registry
    # and user stores) opens its connections with the password current at that moment.
    password.install(settings)
    from mlflow_stack.server import MULTIPROC_DIR_VARIABLE

    # Every worker's request counts, summed by whichever worker answers a scrape; removed
    # with config_dir, so a restart starts the counters from zero (Prometheus expects that).
    # Set before prometheus_client is imported (the preload): it chooses its values then.
    metrics_dir = config_dir / "metrics"
    metrics_dir.mkdir()
    os.environ[MULTIPROC_DIR_VARIABLE] = str(metrics_dir)
    prepare(settings)
    log.info(
        "starting MLflow on %s:%s with %s workers (artifacts: %s)",
        settings.host,
        settings.port,
        settings.workers,
        settings.artifacts_destination,
    )
    if settings.job_execution:
        from mlflow.cli import cli as mlflow_cli

        mlflow_cli.main(args=server_arguments(settings), prog_name="mlflow", standalone_mode=True)
        sys.exit(0)  # standalone_mode exits by itself; this line only satisfies NoReturn
    from mlflow.exceptions import MlflowException
    from mlflow.tracing.trace_rollup_service import validate_sql_trace_rollup_startup

    from mlflow_stack.server.launcher import StackServer

    os.environ.update(mlflow_environment(settings, os.environ))
    try:
        validate_sql_trace_rollup_startup(settings.backend_store_uri)  # as `mlflow server` does
    except MlflowException as error:
        raise StackError(error.message) from None
    StackServer(settings).run()
    sys.exit(0)  # the arbiter exits by itself; this line only satisfies NoReturn
