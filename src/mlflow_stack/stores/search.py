"""Which runs a search answers: the page's run ids in order, before any run is loaded.

MLflow 3.17.2 answers ``search_runs`` with one ``SELECT DISTINCT runs.*, <order keys> … ORDER
BY … LIMIT`` and loads the page's children through the ORM. The ``DISTINCT`` over every column
of ``runs`` makes PostgreSQL sort all matching rows, wide as they are, before it can stop at the
page's end (190-280 ms over 100k runs on this machine). Here the filters and order keys are
MLflow's own (built by its functions, in its order, so that every error is its error), the
statement selects only ``run_uuid`` and has no ``DISTINCT``: each filter and each order key
joins at most one row per run (latest metrics, params and tags are unique per run and key), so
nothing can repeat. The one filter that can join a run more than once, on datasets, is left to
MLflow's own search.

A search ordered by one metric, the most common order after the default, is split into the
three groups MLflow's order puts one after the other: runs with a number for the metric (by
value, then newest first, then run id), runs whose value is NaN, runs without the metric. Each
group is a walk of an index (:mod:`mlflow_stack.stores.indexes`) that stops at the page's end,
and the next group is read only when the page is not full, so a page costs about the same at
10k runs as at 1M. The default order (newest first) is one such walk too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun
from mlflow.store.tracking.sqlalchemy_store import (
    _get_orderby_clauses,
    _get_sqlalchemy_filter_clauses,
)
from mlflow.utils.search_utils import SearchUtils
from mlflow.utils.validation import _parse_experiment_ids
from sqlalchemy import Select, and_, exists, false, select, true
from sqlalchemy.orm import aliased


@dataclass(frozen=True)
class PageOfIds:
    """Statements whose results, one after the other, are the search's run ids in order; the
    page is ``limit`` of them (one more than ``max_results``, as MLflow asks for, to tell
    whether a next page exists) after ``offset``."""

    parts: tuple[Select[Any], ...]
    offset: int
    limit: int | None

    def run(self, session: Any) -> list[str]:
        def fetch(part: Select[Any], offset: int, limit: int | None) -> list[str]:
            return list(session.execute(_limited(part, offset, limit)).scalars())

        return self.read(fetch)

    def read(self, fetch: Callable[[Select[Any], int, int | None], list[str]]) -> list[str]:
        """The page, from ``fetch(part, offset, limit)``: one statement is asked for the page
        itself; of several, each for only what the ones before it left missing."""
        if len(self.parts) == 1:
            return fetch(self.parts[0], self.offset, self.limit)
        wanted = None if self.limit is None else self.offset + self.limit
        ids: list[str] = []
        for part in self.parts:
            ids += fetch(part, 0, None if wanted is None else wanted - len(ids))
            if wanted is not None and len(ids) >= wanted:
                break
        return ids[self.offset : wanted]


def _limited(statement: Select[Any], offset: int, limit: int | None) -> Select[Any]:
    statement = statement.offset(offset) if offset else statement
    return statement if limit is None else statement.limit(limit)


def page_of_ids(
    session: Any,
    *,
    experiment_ids: Sequence[str | int],
    filter_string: str | None,
    stages: set[str],
    max_results: int | None,
    order_by: Sequence[str] | None,
    page_token: str | None,
    dialect: str,
    filter_experiment_ids: Callable[[Any, list[int]], list[int]],
) -> PageOfIds | None:
    """How to read the page's run ids, or None when MLflow's search must answer. Every parse
    and check happens in MLflow's order: the filter, the order keys, the filter clauses, the
    page token, the experiment ids."""
    parsed_filters = SearchUtils.parse_search_filter(filter_string)
    order_columns, order_clauses, sorting_joins = _get_orderby_clauses(order_by, session)
    attribute_filters, non_attribute_filters, dataset_filters = _get_sqlalchemy_filter_clauses(
        parsed_filters, session, dialect
    )
    offset = SearchUtils.parse_start_offset_from_page_token(page_token)
    ids = filter_experiment_ids(session, _parse_experiment_ids(experiment_ids))
    if dataset_filters:
        return None
    limit = None if max_results is None else max_results + 1

    def matching(*columns: Any) -> Select[Any]:
        """The runs the filters match (MLflow's clauses), selecting ``columns``."""
        statement = select(SqlRun.run_uuid, *columns)
        for joined in non_attribute_filters:
            statement = statement.join(joined)
        return statement.filter(
            SqlRun.experiment_id.in_(ids), SqlRun.lifecycle_stage.in_(stages), *attribute_filters
        )

    metric = _single_metric_order(order_by)
    if metric is not None:
        return PageOfIds(_by_metric(matching, *metric), offset, limit)
    # MLflow's order clauses name its CASE columns (NaN and missing values last) by label.
    statement = matching(*order_columns)
    for joined in sorting_joins:  # outer: a run without the key sorts last, not out
        statement = statement.outerjoin(joined)
    return PageOfIds((statement.order_by(*order_clauses),), offset, limit)


def _single_metric_order(order_by: Sequence[str] | None) -> tuple[str, bool] | None:
    """The metric key and direction when the search is ordered by one metric only."""
    if not order_by or len(order_by) != 1:
        return None
    key_type, key, ascending = SearchUtils.parse_order_by_for_search_runs(order_by[0])
    if not SearchUtils.is_metric(key_type, "="):
        return None
    return SearchUtils.translate_key_alias(key), ascending  # as MLflow does, even for metrics


def _by_metric(
    matching: Callable[..., Select[Any]], key: str, ascending: bool
) -> tuple[Select[Any], ...]:
    """MLflow's order by one metric as its three groups: a number, NaN, no value."""
    latest = aliased(SqlLatestMetric)
    value = latest.value if ascending else latest.value.desc()
    tie_break = (SqlRun.start_time.desc(), SqlRun.run_uuid)

    def with_value(nan: Any) -> Select[Any]:
        on = and_(latest.run_uuid == SqlRun.run_uuid, latest.key == key, latest.is_nan == nan)
        return matching().join(latest, on).order_by(value, *tie_break)

    without = ~exists().where(latest.run_uuid == SqlRun.run_uuid, latest.key == key)
    return (
        with_value(false()),
        with_value(true()),
        matching().filter(without).order_by(*tie_break),
    )
