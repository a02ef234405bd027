"""Bounded retries: transient failures are retried, anything else ends the wait at once."""

from __future__ import annotations

import logging
import time

import pytest

from mlflow_stack import waiting
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


class Clock:
    """Stands for the time module in waiting.py: sleeping moves the clock on, at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(waiting, "time", fake)  # only waiting's clock; time itself is untouched
    return fake


def test_it_never_sleeps_past_the_deadline(clock: Clock) -> None:
    attempts = []

    def never() -> None:
        attempts.append(clock.now)
        raise NotReady("refused")

    with pytest.raises(StackError, match=r"within 1 s: refused$"):
        wait_for("S3", never, timeout=1, interval=0.4)
    assert attempts == pytest.approx([1000.0, 1000.4, 1000.8])  # a 4th would end past it
    assert sum(clock.slept) == pytest.approx(0.8)


def test_it_is_quiet_for_two_seconds_then_reports_every_ten(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def never() -> None:
        raise NotReady("connection refused")

    with caplog.at_level(logging.INFO, logger=waiting.__name__), pytest.raises(StackError):
        wait_for("PostgreSQL", never, timeout=25, interval=0.5)
    assert [record.getMessage() for record in caplog.records] == [
        "waiting for PostgreSQL (2 s): connection refused",
        "waiting for PostgreSQL (12 s): connection refused",
        "waiting for PostgreSQL (22 s): connection refused",
    ]


def test_a_quick_start_says_nothing(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([NotReady("starting"), NotReady("starting"), None])

    def check() -> str:
        answer = next(answers)
        if answer is not None:
            raise answer
        return "up"

    with caplog.at_level(logging.INFO, logger=waiting.__name__):
        assert wait_for("S3", check, timeout=60) == "up"
    assert caplog.records == []
    assert clock.slept == [0.5, 0.5]  # the default interval


def test_the_timeout_is_shown_as_given_without_a_hint(clock: Clock) -> None:
    def never() -> None:
        raise NotReady("HTTP 503")

    with pytest.raises(StackError) as caught:
        wait_for("S3 at AWS", never, timeout=60)
    assert str(caught.value) == "S3 at AWS did not become ready within 60 s: HTTP 503"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
