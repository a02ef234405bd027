"""Reading and creating the ``.env`` file that compose and the native runtime share."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values

from mlflow_stack.errors import ConfigError, StackError
from mlflow_stack.settings.checks import UNSAFE_IN_ENV
from mlflow_stack.settings.contract import (
    PASSWORD_SOURCES,
    SETTING_NAMES,
    Settings,
    new_env_values,
    unknown_names,
)
from mlflow_stack.settings.render import render_env_file


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file (compose's syntax); a missing file reads as empty."""
    if not path.is_file():
        return {}
    try:
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except (OSError, UnicodeDecodeError) as error:
        raise StackError(f"cannot read {path}: {error}") from None


def merged_environment(
    env_file: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The env file's values overlaid by the process environment (as compose does)."""
    merged = read_env_file(env_file) if env_file else {}
    merged.update(os.environ if environ is None else environ)
    return merged


def setting_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given in ``environ`` (non-empty values only): what a new env file keeps."""
    return {name: value for name, value in environ.items() if name in SETTING_NAMES and value}


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict; ConfigError naming each malformed one or unknown name."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            problems.append(f"{assignment!r} is not NAME=VALUE")
        elif name not in SETTING_NAMES:
            hint = unknown_names([name])
            problems.append(hint[0] if hint else f"{name} is not a setting of mlflow-stack")
        else:
            values[name] = value
    if problems:
        raise ConfigError(problems)
    return values


def new_file_values(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Fresh random secrets overlaid by ``overrides``, checked as a whole (ConfigError).

    No database password is generated when ``overrides`` name another source of it
    (POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD_SECRET_ARN)."""
    overrides = dict(overrides or {})
    generated = new_env_values()
    if any(overrides.get(name) for name in PASSWORD_SOURCES if name != "POSTGRES_PASSWORD"):
        generated.pop("POSTGRES_PASSWORD")
    values = {**generated, **overrides}
    problems = [
        f"{name}: the value must not contain whitespace, quotes, $, #, ` or \\"
        for name, value in values.items()
        if UNSAFE_IN_ENV.search(value)
    ]
    if problems:
        raise ConfigError(problems)
    Settings.from_env(values)
    return values


def create_env_file(path: Path, overrides: Mapping[str, str] | None = None) -> bool:
    """Write a new env file with fresh random secrets, readable only by its owner.

    ``overrides`` (setting name -> value) replace the defaults and generated values; the file
    is written only when the result is a valid configuration. Returns False (and leaves the
    file alone) when it already exists.
    """
    if path.exists():
        return False
    values = new_file_values(overrides)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as error:
        raise StackError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_env_file(values))
    return True
