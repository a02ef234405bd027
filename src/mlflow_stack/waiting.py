"""Bounded retries for dependencies that may still be starting."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from mlflow_stack.errors import StackError

T = TypeVar("T")
log = logging.getLogger(__name__)


class NotReady(Exception):  # noqa: N818 - a state, not an error
    """A transient failure: the dependency may answer if we ask again."""


def wait_for(
    what: str,
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.5,
    hint: str = "",
) -> T:
    """Call ``check`` until it returns, retrying while it raises :class:`NotReady`.

    Any other exception (for instance a :class:`StackError` for wrong credentials) ends the
    wait at once. After ``timeout`` seconds, raise a StackError with the last reason.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            return check()
        except NotReady as reason:
            if time.monotonic() + interval > deadline:
                suffix = f" ({hint})" if hint else ""
                raise StackError(
                    f"{what} did not become ready within {timeout:g} s: {reason}{suffix}"
                ) from None
            if attempts == 1 or attempts % 10 == 0:
                log.info("waiting for %s: %s", what, reason)
            time.sleep(interval)
