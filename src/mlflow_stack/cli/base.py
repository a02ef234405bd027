"""What every command group shares: the context (the settings file and --debug), the group
class that turns expected failures into one line, and the options used by several commands."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlflow_stack.errors import ConfigError, StackError

if TYPE_CHECKING:
    from mlflow_stack.settings.contract import Settings

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
        from mlflow_stack.settings.envfile import merged_environment

        return merged_environment(self.env_file)

    def settings(self, environ: dict[str, str] | None = None) -> Settings:
        from mlflow_stack.settings.contract import Settings, unknown_names

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
            first = next(iter(str(error).strip().splitlines()), "")  # one line always
            click.echo(
                f"error: unexpected {type(error).__name__}: {first} "
                "(rerun with `mlflow-stack --debug ...` for the traceback)",
                err=True,
            )
            sys.exit(1)


JOBS_OPTION = click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Objects transferred in parallel.",
)
