"""Runs built from the one-statement rows as MLflow's ORM builds them. The statement itself runs
against MLflow's store on PostgreSQL in tests/integration/test_tracking_store.py."""

from __future__ import annotations

import math
from typing import Any

from mlflow.entities import Metric
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

from mlflow_stack.stores.reads import load_runs, run_from_row


def _row(**changes: Any) -> list[Any]:
    row = {
        "run_uuid": "r1",
        "name": "brave-owl",
        "experiment_id": 7,
        "user_id": "ada",
        "status": "FINISHED",
        "start_time": 1000,
        "end_time": 2000,
        "lifecycle_stage": "active",
        "artifact_uri": "s3://bucket/7/r1/artifacts",
        "m_keys": ["loss", "acc"],
        "m_values": [-0.0, 0.0],
        "m_timestamps": [10, 11],
        "m_steps": [3, 4],
        "m_nans": [False, True],
        "p_keys": ["lr"],
        "p_values": ["0.1"],
        "t_keys": ["team", "note"],
        "t_values": ["pricing", None],
        "datasets": False,
        "models": True,
    }
    row.update(changes)
    return list(row.values())


def _orm(row: list[Any]) -> SqlRun:
    """The ORM objects MLflow would have loaded for the same row."""
    (run_id, name, experiment_id, user_id, status, start, end, stage, uri,
     m_keys, m_values, m_timestamps, m_steps, m_nans, p_keys, p_values, t_keys, t_values,
     _, _) = row  # fmt: skip
    run = SqlRun(
        run_uuid=run_id, name=name, experiment_id=experiment_id, user_id=user_id,
        status=status, start_time=start, end_time=end, lifecycle_stage=stage,
        artifact_uri=uri,
    )  # fmt: skip
    run.latest_metrics = [
        SqlLatestMetric(key=k, value=v, timestamp=t, step=s, is_nan=n)
        for k, v, t, s, n in zip(m_keys or [], m_values or [], m_timestamps or [],
                                 m_steps or [], m_nans or [], strict=True)
    ]  # fmt: skip
    params = zip(p_keys or [], p_values or [], strict=True)
    run.params = [SqlParam(key=k, value=v) for k, v in params]
    tags = zip(t_keys or [], t_values or [], strict=True)
    run.tags = [SqlTag(key=k, value=v) for k, v in tags]
    return run


def _same(ours: Any, theirs: Any) -> None:
    assert ours.info.to_proto() == theirs.info.to_proto()
    assert [m.to_proto() for m in ours.data._metric_objs] == [
        m.to_proto() for m in theirs.data._metric_objs
    ]
    assert ours.data.params == theirs.data.params
    assert ours.data.tags == theirs.data.tags


def test_a_row_becomes_the_run_mlflows_orm_builds() -> None:
    row = _row()
    loaded = run_from_row(row)
    _same(loaded.run, _orm(row).to_mlflow_entity())
    assert (loaded.has_datasets, loaded.has_models) == (False, True)


def test_nan_minus_zero_and_null_tag_values_come_out_as_in_mlflow() -> None:
    metrics = run_from_row(_row()).run.data._metric_objs
    assert math.copysign(1, metrics[0].value) == -1  # -0.0 keeps its sign
    assert math.isnan(metrics[1].value)  # stored as 0 with is_nan
    assert metrics[0] == Metric("loss", -0.0, 10, 3)
    assert run_from_row(_row()).run.data.tags == {"team": "pricing", "note": None}


def test_a_run_without_children_has_empty_data() -> None:
    row = _row(m_keys=None, m_values=None, m_timestamps=None, m_steps=None, m_nans=None,
               p_keys=None, p_values=None, t_keys=None, t_values=None)  # fmt: skip
    run = run_from_row(row).run
    assert (run.data.metrics, run.data.params, run.data.tags) == ({}, {}, {})
    _same(run, _orm(row).to_mlflow_entity())


def test_a_run_without_a_name_takes_it_from_its_run_name_tag_as_mlflow_does() -> None:
    row = _row(name="", t_keys=["mlflow.runName"], t_values=["from-tag"])
    run = run_from_row(row).run
    assert run.info.run_name == "from-tag"
    _same(run, _orm(row).to_mlflow_entity())
    assert run_from_row(_row(name=None, t_keys=None, t_values=None)).run.info.run_name is None


def test_the_experiment_id_is_a_string_as_in_mlflow() -> None:
    run = run_from_row(_row()).run
    assert run.info.experiment_id == "7"
    assert run.data.params == {"lr": "0.1"}


def test_no_ids_need_no_statement() -> None:
    class NoDatabase:
        def execute(self, *_: Any) -> None:
            raise AssertionError("a statement for no runs")

    assert load_runs(NoDatabase(), []) == {}
