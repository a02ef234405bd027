"""Whether a request is in MLflow's authorization step, before its handler runs.

MLflow's basic-auth app decides a request in a Flask ``before_request`` function; for a run,
it reads the run through the tracking store (``get_run``) only to learn its experiment. The
stack's tracking store answers that read from what it knows of the run's experiment
(:mod:`mlflow_stack.stores.owners`) while :func:`authorizing` is true, and loads the run as
usual at any other time, in the handler above all.

:func:`bracket` registers two ``before_request`` functions around MLflow's: one that marks the
request as authorizing and one, after MLflow's, that clears the mark; an ``after_request``
function clears it too, for a request MLflow refused (its handler never ran).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_MARK = "mlflow_stack_authorizing"


def authorizing() -> bool:
    from flask import g, has_app_context

    return has_app_context() and g.get(_MARK, False)


def _begin() -> None:
    from flask import g

    setattr(g, _MARK, True)


def _end(response: Any = None) -> Any:
    from flask import g

    g.pop(_MARK, None)
    return response


@contextmanager
def bracket(flask_app: Any) -> Iterator[Callable[[], bool]]:
    """Mark MLflow's authorization functions, which the ``with`` block registers."""
    flask_app.before_request(_begin)
    yield authorizing
    flask_app.before_request(_end)
    flask_app.after_request(_end)
