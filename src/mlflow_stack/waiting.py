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
    began = time.monotonic()
    deadline = began + timeout
    next_report = began + 2  # quiet for quick starts, then a line every 10 s
    while True:
        try:
            return check()
        except NotReady as reason:
            now = time.monotonic()
            if now + interval > deadline:
                suffix = f" ({hint})" if hint else ""
                raise StackError(
                    f"{what} did not become ready within {timeout:g} s: {reason}{suffix}"
                ) from None
            if now >= next_report:
                log.info("waiting for %s (%.0f s): %s", what, now - began, reason)
                next_report = now + 10
            time.sleep(interval)
