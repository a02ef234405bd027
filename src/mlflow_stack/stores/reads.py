"""Runs loaded by id in one statement, whatever their number, as MLflow's entities.

MLflow 3.17.2 loads a run through the ORM: the run row, then its latest metrics, params and
tags in three more queries (``selectinload``), then its dataset inputs, model inputs and model
outputs in three more: seven round trips for ``get_run`` and about 1,000 ORM objects for a page
of 100 typical runs, turned into entities one attribute at a time. Here one statement returns
each run's row with its metrics, params and tags aggregated into arrays (one ``LATERAL``
aggregate per table, so a run's keys and values come out in the same order), and whether it
has any dataset or model inputs or outputs; only for the runs that have them are MLflow's own
loaders called. Values go through the same driver conversions as in the ORM (float8 arrays
keep ``-0.0`` and every digit), and the entities are built as ``SqlRun.to_mlflow_entity``
builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.utils.mlflow_tags import _get_run_name_from_tags

_RUNS = sqlalchemy.text("""
SELECT r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time,
       r.lifecycle_stage, r.artifact_uri,
       m.keys, m.vals, m.timestamps, m.steps, m.nans,
       p.keys, p.vals,
       t.keys, t.vals,
       EXISTS (SELECT 1 FROM inputs i
               WHERE i.destination_type = 'RUN' AND i.destination_id = r.run_uuid),
       EXISTS (SELECT 1 FROM inputs i
               WHERE i.source_type IN ('RUN_INPUT', 'RUN_OUTPUT') AND i.source_id = r.run_uuid)
FROM runs r
LEFT JOIN LATERAL (
    SELECT array_agg(key) AS keys, array_agg(value) AS vals, array_agg(timestamp) AS timestamps,
           array_agg(step) AS steps, array_agg(is_nan) AS nans
    FROM latest_metrics WHERE run_uuid = r.run_uuid) m ON true
LEFT JOIN LATERAL (
    SELECT array_agg(key) AS keys, array_agg(value) AS vals
    FROM params WHERE run_uuid = r.run_uuid) p ON true
LEFT JOIN LATERAL (
    SELECT array_agg(key) AS keys, array_agg(value) AS vals
    FROM tags WHERE run_uuid = r.run_uuid) t ON true
WHERE r.run_uuid = ANY(CAST(:ids AS text[]))
""")


@dataclass(frozen=True)
class LoadedRun:
    """A run's info and data, and whether MLflow's loaders have more to add to it."""

    run: Run
    has_datasets: bool
    has_models: bool


def _metrics(keys: Any, values: Any, timestamps: Any, steps: Any, nans: Any) -> list[Metric]:
    if keys is None:
        return []
    rows = zip(keys, values, timestamps, steps, nans, strict=True)
    return [
        Metric(key=key, value=float("nan") if nan else value, timestamp=timestamp, step=step)
        for key, value, timestamp, step, nan in rows
    ]


def _pairs(kind: type[Param] | type[RunTag], keys: Any, values: Any) -> list[Any]:
    if keys is None:
        return []
    return [kind(key=key, value=value) for key, value in zip(keys, values, strict=True)]


def run_from_row(row: Sequence[Any]) -> LoadedRun:
    """The entity ``SqlRun.to_mlflow_entity`` builds for the same row and children."""
    (run_id, name, experiment_id, user_id, status, start_time, end_time, stage, artifact_uri,
     m_keys, m_values, m_timestamps, m_steps, m_nans, p_keys, p_values, t_keys, t_values,
     has_datasets, has_models) = row  # fmt: skip
    info = RunInfo(
        run_id=run_id,
        run_name=name,
        experiment_id=str(experiment_id),
        user_id=user_id,
        status=status,
        start_time=start_time,
        end_time=end_time,
        lifecycle_stage=stage,
        artifact_uri=artifact_uri,
    )
    tags = _pairs(RunTag, t_keys, t_values)
    data = RunData(
        metrics=_metrics(m_keys, m_values, m_timestamps, m_steps, m_nans),
        params=_pairs(Param, p_keys, p_values),
        tags=tags,
    )
    if not info.run_name and (run_name := _get_run_name_from_tags(tags)):
        info._set_run_name(run_name)
    return LoadedRun(Run(run_info=info, run_data=data), bool(has_datasets), bool(has_models))


def load_runs(session: Any, run_ids: Sequence[str]) -> dict[str, LoadedRun]:
    """The runs of ``run_ids`` that exist, by id, in one statement."""
    if not run_ids:
        return {}
    rows = session.execute(_RUNS, {"ids": list(run_ids)}).all()
    loaded = (run_from_row(row) for row in rows)
    return {item.run.info.run_id: item for item in loaded}
