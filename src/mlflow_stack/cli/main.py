"""The ``mlflow-stack`` command line: the group, its global options, and the command groups
it gathers (one module each, as pip's commands)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from mlflow_stack.cli import config, native, operations, server
from mlflow_stack.cli.base import Context, StackGroup


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
    Settings (.env, one contract):       mlflow-stack config check | example | init | reference
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


for command in (
    server.serve,
    native.up,
    native.down,
    native.status,
    native.logs,
    server.healthcheck,
    config.config,
    operations.backup,
    operations.restore,
    operations.gc_command,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="mlflow-stack")
