"""Which experiment a run belongs to, for MLflow's authorization of a request on a run.

MLflow's auth app authorizes ``log_param``, ``log_metric``, ``log_batch``, ``set_tag``,
``get_run`` and the other calls on one run by reading the whole run (``get_run``: its params,
metrics and tags) and then looking only at ``run.info.experiment_id``. A run's experiment never
changes, so the store keeps it for every run it has read or created, and during authorization
returns an :class:`AuthorizingRun`: that experiment id at once, and the run itself, read then,
for anything else asked of it. MLflow's answers do not change: a run the store does not know
is read as before (a missing run is MLflow's error), and a run deleted for good (``gc``) is
forgotten here at once and by other workers within the cache's bound, after which it is
missing again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow.entities import Run, RunInfo

from mlflow_stack.caching import BoundedCache

#: How long a run's experiment is trusted without reading the run (a gc elsewhere).
KEPT_FOR = 2.0
MAX_RUNS = 100_000


class _Loader:
    def __init__(self, load: Callable[[], Run]) -> None:
        self._load = load
        self._run: Run | None = None

    def run(self) -> Run:
        if self._run is None:
            self._run = self._load()
        return self._run


class AuthorizingRunInfo(RunInfo):
    """A run's info whose id and experiment are known; any other field reads the run."""

    def __init__(self, run_id: str, experiment_id: str, loader: _Loader) -> None:
        self._run_id = run_id
        self._experiment_id = experiment_id
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # only for what __init__ did not set
        if name.startswith("__") or name == "_loader":
            raise AttributeError(name)
        return getattr(self._loader.run().info, name)

    @classmethod
    def _properties(cls) -> list[str]:
        return RunInfo._properties()


class AuthorizingRun(Run):
    """What ``get_run`` returns while MLflow authorizes a request on a known run."""

    def __init__(self, run_id: str, experiment_id: str, load: Callable[[], Run]) -> None:
        self._loader = _Loader(load)
        self._info_view = AuthorizingRunInfo(run_id, experiment_id, self._loader)

    @property
    def info(self) -> RunInfo:
        return self._info_view

    @property
    def data(self) -> Any:
        return self._loader.run().data

    @property
    def inputs(self) -> Any:
        return self._loader.run().inputs

    @property
    def outputs(self) -> Any:
        return self._loader.run().outputs


class RunOwners:
    """run id → experiment id, for at most ``kept_for`` seconds per entry."""

    def __init__(self, kept_for: float = KEPT_FOR, max_runs: int = MAX_RUNS) -> None:
        self._cache: BoundedCache[str, str] = BoundedCache(kept_for, max_runs)

    def remember(self, run: Run) -> None:
        self._cache.put(run.info.run_id, run.info.experiment_id)

    def experiment_of(self, run_id: str) -> str | None:
        found, experiment_id = self._cache.peek(run_id)
        return experiment_id if found else None

    def forget(self, run_id: str) -> None:
        self._cache.forget(run_id)

    def forget_all(self) -> None:
        self._cache.forget_all()
