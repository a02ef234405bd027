"""The operations that run on every runtime: ``backup``, ``restore`` and ``gc``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from mlflow_stack.cli.base import JOBS_OPTION, Context
from mlflow_stack.errors import StackError


@click.command()
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


@click.command()
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


@click.command("gc")
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
    from mlflow_stack.settings.contract import setting

    environ = obj.environment()
    if older_than is None:
        older_than = setting("MLFLOW_STACK_GC_RETENTION_DAYS").value_from(environ)
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
