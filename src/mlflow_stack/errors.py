"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


class StackError(Exception):
    """A problem the user can fix; its message is printed as one line.

    ``exit_code`` lets the CLI tell configuration mistakes (2) from runtime failures (1).
    """

    exit_code = 1


class ConfigError(StackError):
    """One or more settings are missing or invalid."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
