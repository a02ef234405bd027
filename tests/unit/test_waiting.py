"""Bounded retries: transient failures are retried, anything else ends the wait at once."""

from __future__ import annotations

import time

import pytest

from mlflow_stack.errors import StackError
from mlflow_stack.waiting import NotReady, wait_for


def test_retries_until_ready() -> None:
    attempts = []

    def check() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise NotReady("not yet")
        return "ready"

    assert wait_for("thing", check, timeout=5, interval=0.01) == "ready"
    assert len(attempts) == 3


def test_gives_up_after_the_timeout_with_the_last_reason_and_hint() -> None:
    def never() -> None:
        raise NotReady("connection refused")

    began = time.monotonic()
    with pytest.raises(StackError) as caught:
        wait_for("PostgreSQL", never, timeout=0.3, interval=0.05, hint="check POSTGRES_PORT")
    assert time.monotonic() - began < 2
    assert str(caught.value) == (
        "PostgreSQL did not become ready within 0.3 s: connection refused (check POSTGRES_PORT)"
    )


def test_a_permanent_failure_is_not_retried() -> None:
    attempts = []

    def wrong_password() -> None:
        attempts.append(1)
        raise StackError("password authentication failed")

    with pytest.raises(StackError):
        wait_for("PostgreSQL", wrong_password, timeout=5, interval=0.01)
    assert len(attempts) == 1
