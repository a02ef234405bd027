"""The pieces of the stack's tracking store that need no database: which rows a batch becomes,
which tags and name it leaves, which params it refuses. tests/integration/test_tracking_store.py
runs the store itself against MLflow's on PostgreSQL."""

from __future__ import annotations

import math

from mlflow.entities import Metric, Param, RunTag
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlTag

from mlflow_stack.stores.tracking import TABLES, changed_params, final_tags, metric_rows


def test_the_statements_write_mlflows_tables() -> None:
    assert (
        tuple(model.__tablename__ for model in (SqlMetric, SqlLatestMetric, SqlParam, SqlTag))
        == TABLES
    )


def test_metric_rows_are_what_mlflow_stores_each_distinct_one_once_in_order() -> None:
    rows = metric_rows(
        [
            Metric("loss", 0.5, 10, 1),
            Metric("loss", math.nan, 10, 2),
            Metric("loss", math.inf, 10, 3),
            Metric("loss", -math.inf, 10, 4),
            Metric("loss", 0.5, 10, 1),  # the same point again
            Metric("loss", math.nan, 10, 2),  # another NaN object, the same row
            Metric("acc", 1, 11, 0),  # an int value, stored as a double
        ]
    )
    assert rows == [
        ("loss", 0.5, 10, 1, False),
        ("loss", 0.0, 10, 2, True),
        ("loss", 1.7976931348623157e308, 10, 3, False),
        ("loss", -1.7976931348623157e308, 10, 4, False),
        ("acc", 1.0, 11, 0, False),
    ]
    assert all(isinstance(row[1], float) for row in rows)


def test_the_last_value_of_a_tag_wins_and_an_empty_run_name_is_ignored() -> None:
    values, name = final_tags(
        [
            RunTag("team", "a"),
            RunTag("mlflow.runName", "first"),
            RunTag("team", "b"),
            RunTag("mlflow.runName", ""),  # MLflow's set_tag ignores an empty name
        ]
    )
    assert values == {"team": "b", "mlflow.runName": "first"}
    assert name == "first"
    assert final_tags([RunTag("mlflow.runName", "")]) == ({}, None)
    assert final_tags([]) == ({}, None)


def test_changed_params_are_listed_in_the_batchs_order_as_mlflow_lists_them() -> None:
    params = [Param("b", "2"), Param("a", "1"), Param("c", "9"), Param("d", "4")]
    existing = {"a": "0", "b": "2", "c": "3"}
    assert changed_params(params, existing) == [
        {"key": "a", "old_value": "0", "new_value": "1"},
        {"key": "c", "old_value": "3", "new_value": "9"},
    ]
    assert changed_params(params, {}) == []
