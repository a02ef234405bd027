"""The statements that pick a search's page of run ids, compiled for PostgreSQL without a
database: MLflow's filters and order keys, only run ids, no DISTINCT, an order by one metric as
its three groups; MLflow's errors first; the page cut from the groups. tests/integration/
test_tracking_store.py compares whole searches with MLflow's store on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.search_utils import SearchUtils
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from mlflow_stack.stores.search import PageOfIds, page_of_ids


def _every_id(_: Any, ids: list[int]) -> list[int]:
    return ids


def _page(**changes: Any) -> PageOfIds:
    arguments: dict[str, Any] = {
        "experiment_ids": ["1"],
        "filter_string": "params.family = 'xgboost' and metrics.rmse < 4",
        "stages": {"active"},
        "max_results": 100,
        "order_by": ["params.family", "metrics.rmse ASC"],
        "page_token": None,
        "dialect": "postgresql",
        "filter_experiment_ids": _every_id,
    }
    arguments.update(changes)
    page = page_of_ids(Session(), **arguments)
    assert page is not None
    return page


def _sql(statement: Any) -> str:
    return " ".join(str(statement.compile(dialect=postgresql.dialect())).split())


def _params(statement: Any) -> dict[str, Any]:
    return statement.compile(dialect=postgresql.dialect()).params


def test_the_page_is_selected_as_run_ids_without_distinct_in_mlflows_order() -> None:
    page = _page()
    (statement,) = page.parts
    sql = _sql(statement)
    assert sql.startswith("SELECT runs.run_uuid, CASE WHEN")
    assert "DISTINCT" not in sql
    assert " JOIN (SELECT params." in sql and " LEFT OUTER JOIN (SELECT params." in sql
    assert sql.endswith(
        "ORDER BY clause_1, anon_1.value, clause_2, anon_2.value, runs.start_time DESC, "
        "runs.run_uuid"
    )
    assert (page.offset, page.limit) == (0, 101)  # one more, to tell a next page


def test_an_order_by_one_metric_is_its_three_groups_one_after_the_other() -> None:
    present, nan, missing = _page(order_by=["metrics.rmse DESC"]).parts
    for part, flag in ((present, "false"), (nan, "true")):
        sql = _sql(part)
        assert sql.startswith("SELECT runs.run_uuid FROM runs JOIN (SELECT params.")
        assert (
            f"latest_metrics_1.key = %(key_3)s::VARCHAR AND latest_metrics_1.is_nan = {flag}"
        ) in sql
        assert sql.endswith(
            "ORDER BY latest_metrics_1.value DESC, runs.start_time DESC, runs.run_uuid"
        )
        assert _params(part)["key_3"] == "rmse"
    sql = _sql(missing)
    assert "AND NOT (EXISTS (SELECT * FROM latest_metrics AS latest_metrics_1 WHERE" in sql
    assert sql.endswith("ORDER BY runs.start_time DESC, runs.run_uuid")
    assert "DISTINCT" not in sql


def test_an_alias_is_translated_in_a_metric_order_as_mlflow_does() -> None:
    present, _, _ = _page(order_by=["metrics.created"]).parts
    assert "start_time" in _params(present).values()


def test_the_page_token_sets_the_offset() -> None:
    page = _page(filter_string="", order_by=None, page_token=SearchUtils.create_page_token(300))
    assert (page.offset, page.limit) == (300, 101)
    (statement,) = page.parts
    assert _params(statement) == {"experiment_id_1": [1], "lifecycle_stage_1": ["active"]}


def test_a_dataset_filter_is_left_to_mlflows_search() -> None:
    page = page_of_ids(
        Session(),
        experiment_ids=["1"],
        filter_string="dataset.name = 'trips'",
        stages={"active"},
        max_results=10,
        order_by=None,
        page_token=None,
        dialect="postgresql",
        filter_experiment_ids=_every_id,
    )
    assert page is None


def test_the_experiment_ids_go_through_the_stores_hook() -> None:
    seen = []

    def hook(_: Any, ids: list[int]) -> list[int]:
        seen.append(ids)
        return [5]

    (statement,) = _page(experiment_ids=["3", 4], filter_experiment_ids=hook).parts
    assert seen == [[3, 4]]
    assert _params(statement)["experiment_id_1"] == [5]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # The filter is parsed, then the order keys, then the filter's comparators, as in
        # MLflow's search.
        ({"filter_string": "metrics.rmse", "order_by": ["nonsense.x"]}, "Invalid clause"),
        (
            {"filter_string": "metrics.rmse <<< 4", "order_by": ["nonsense.x"]},
            "Invalid entity type 'nonsense'",
        ),
        ({"filter_string": "metrics.rmse <<< 4", "page_token": "bad"}, "Invalid comparator"),
        ({"order_by": ["metrics.a", "metrics.a"]}, "`order_by` contains duplicate fields"),
        ({"page_token": "bad", "experiment_ids": ["x"]}, "Invalid page token"),
        ({"experiment_ids": ["x"]}, "Invalid experiment ID"),
    ],
)
def test_mlflows_errors_come_first_and_in_mlflows_order(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MlflowException, match=message):
        _page(**changes)


# -- the page cut from the groups, with a fetch that answers from lists ----------------------


class Groups:
    """Each of the three parts' ids; it records the offset and limit each part is asked."""

    def __init__(self, *groups: list[str]) -> None:
        self.page = _page(order_by=["metrics.rmse"])
        self.groups = dict(zip(map(id, self.page.parts), groups, strict=True))
        self.asked: list[tuple[int, int, int | None]] = []

    def fetch(self, part: Any, offset: int, limit: int | None) -> list[str]:
        self.asked.append((self.page.parts.index(part), offset, limit))
        ids = self.groups[id(part)][offset:]
        return ids if limit is None else ids[:limit]

    def cut(self, offset: int, limit: int | None) -> list[str]:
        return PageOfIds(self.page.parts, offset, limit).read(self.fetch)


def test_a_page_inside_the_first_group_reads_only_that_group() -> None:
    groups = Groups(["a", "b", "c", "d"], ["n"], ["x"])
    assert groups.cut(1, 2) == ["b", "c"]
    assert groups.asked == [(0, 0, 3)]  # offset + limit ids of the first group, no more


def test_a_page_across_groups_reads_the_next_only_for_what_is_missing() -> None:
    groups = Groups(["a", "b"], ["n1", "n2"], ["x1", "x2"])
    assert groups.cut(1, 4) == ["b", "n1", "n2", "x1"]
    assert groups.asked == [(0, 0, 5), (1, 0, 3), (2, 0, 1)]


def test_a_page_past_the_first_groups_skips_them_whole() -> None:
    assert Groups(["a"], [], ["x1", "x2", "x3"]).cut(2, 2) == ["x2", "x3"]
    assert Groups(["a"], [], []).cut(5, 2) == []


def test_without_a_limit_every_group_is_read_whole() -> None:
    groups = Groups(["a", "b"], ["n"], ["x"])
    assert groups.cut(1, None) == ["b", "n", "x"]
    assert groups.asked == [(0, 0, None), (1, 0, None), (2, 0, None)]


def test_a_page_of_one_statement_is_asked_of_it_with_its_offset() -> None:
    page = _page(order_by=None, page_token=SearchUtils.create_page_token(20))
    asked = []
    page.read(lambda part, offset, limit: asked.append((part, offset, limit)) or [])
    assert asked == [(page.parts[0], 20, 101)]
