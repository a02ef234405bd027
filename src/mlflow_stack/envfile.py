"""Reading and creating the ``.env`` file that compose and the native runtime share."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from mlflow_stack.errors import StackError
from mlflow_stack.settings import new_env_values, render_env_file


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


def create_env_file(path: Path) -> bool:
    """Write a new env file with fresh random secrets, readable only by its owner.

    Returns False (and leaves the file alone) when it already exists.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as error:
        raise StackError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_env_file(new_env_values()))
    return True
