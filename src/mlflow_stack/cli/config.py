"""``mlflow-stack config``: check, document and create the settings."""

from __future__ import annotations

import click

from mlflow_stack.cli.base import Context
from mlflow_stack.errors import StackError


@click.group()
def config() -> None:
    """Check, document and create the settings (.env)."""


@config.command("check")
@click.pass_obj
def config_check(obj: Context) -> None:
    """Validate every setting; print one line per problem and exit 2 if any."""
    from mlflow_stack.errors import ConfigError
    from mlflow_stack.settings.contract import compose_only_problems

    environ = obj.environment()
    problems = compose_only_problems(environ)
    try:
        obj.settings(environ)
    except ConfigError as error:
        raise ConfigError([*error.problems, *problems]) from None
    if problems:
        raise ConfigError(problems)
    click.echo("configuration OK", err=True)


@config.command("example")
def config_example() -> None:
    """Print .env.example: every setting with its doc and default."""
    from mlflow_stack.settings.render import render_env_file

    click.echo(render_env_file(), nl=False)


@config.command("reference")
def config_reference() -> None:
    """Print docs/configuration.md: every setting's default, check, secrecy and runtimes."""
    from mlflow_stack.settings.render import render_reference

    click.echo(render_reference(), nl=False)


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
    from mlflow_stack.settings.envfile import create_env_file, parse_assignments

    if obj.env_file.exists():
        raise StackError(f"{obj.env_file} exists already; not overwriting it")
    given = parse_assignments(assignments)
    if not create_env_file(obj.env_file, given):
        raise StackError(f"{obj.env_file} exists already; not overwriting it")
    click.echo(f"Wrote {obj.env_file} with fresh random secrets (mode 0600).", err=True)
