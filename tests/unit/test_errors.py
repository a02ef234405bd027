"""Errors that reach the user: exit codes, and every problem of a ConfigError in its message."""

from __future__ import annotations

from mlflow_stack.errors import ConfigError, StackError


def test_a_stack_error_exits_1_and_says_its_message() -> None:
    error = StackError("port 5000 is in use")
    assert error.exit_code == 1
    assert str(error) == "port 5000 is in use"


def test_a_config_error_is_a_stack_error_that_exits_2_with_every_problem() -> None:
    error = ConfigError(["A is not set", "B='x' must be a port"])
    assert isinstance(error, StackError)
    assert error.exit_code == 2
    assert error.problems == ["A is not set", "B='x' must be a port"]
    assert str(error) == "A is not set; B='x' must be a port"
