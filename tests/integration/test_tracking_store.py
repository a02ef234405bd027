"""The stack's tracking store answers exactly as MLflow's own ``SqlAlchemyStore``.

A differential, property-based test: hypothesis draws random sequences of calls (create,
``log_batch`` with duplicate and conflicting keys, NaN and ±inf, ``log_metric``/``log_param``,
set/delete tag, delete/restore, ``search_runs`` with filters, ``order_by`` on metrics, params,
attributes and tags, ``max_results`` and page tokens) and applies each to MLflow's store and to
the stack's, each on a fresh database of the session stack's real PostgreSQL. After every call
both must return the same result, or raise the same error (code and message; only run ids,
random in each database, are replaced by their place in the sequence).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlflow_stack.stores.tracking import TrackingStore
from tests.conftest import LiveStack

# -- two stores on two fresh databases ---------------------------------------------------------


@dataclass
class Pair:
    stock: SqlAlchemyStore
    ours: TrackingStore


@pytest.fixture(scope="module")
def pair(stack: LiveStack) -> Iterator[Pair]:
    names = [f"differential_{side}_{uuid.uuid4().hex[:8]}" for side in ("stock", "ours")]
    admin = stack.pg("postgres")
    s = stack.settings
    base = (
        f"postgresql+psycopg2://{quote(s.postgres_user, safe='')}:"
        f"{quote(s.postgres_password, safe='')}@{s.postgres_host}:{s.postgres_port}"
    )
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f'CREATE DATABASE "{name}"')
    stores = Pair(
        stock=SqlAlchemyStore(f"{base}/{names[0]}", "s3://differential"),
        ours=TrackingStore(f"{base}/{names[1]}", "s3://differential"),
    )
    try:
        yield stores
    finally:
        for store in (stores.stock, stores.ours):
            store.engine.dispose()
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- what a call returned, comparable across the two databases ---------------------------------


class Ids:
    """Each store's run ids in creation order; ids are replaced by their index."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def scrub(self, text: str) -> str:
        for index, run_id in enumerate(self.runs):
            text = text.replace(run_id, f"<run {index}>")
        return re.sub(r"[0-9a-f]{32}", "<unknown run>", text)


def number(value: float) -> Any:
    """A value as it would be serialized: its type and repr (``-0.0`` is not ``0.0``, nor
    ``1`` ``1.0``, though Python finds them equal)."""
    return (type(value).__name__, repr(value))


def run_view(run: Any, ids: Ids) -> dict[str, Any]:
    info = run.info
    return {
        "run_id": ids.scrub(info.run_id),
        "experiment_id": info.experiment_id,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage,
        "artifact_uri": ids.scrub(info.artifact_uri),
        "user_id": info.user_id,
        "metrics": {key: number(value) for key, value in run.data.metrics.items()},
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
    }


def outcome(call: Any, ids: Ids) -> Any:
    try:
        result = call()
    except MlflowException as error:
        return ("error", error.error_code, ids.scrub(error.message))
    return ("ok", result)


# -- the calls --------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])
VALUES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)
METRICS = st.builds(
    Metric,
    key=KEYS,
    value=VALUES,
    timestamp=st.integers(0, 2),
    step=st.integers(-1, 1),
)
PARAMS = st.builds(Param, key=KEYS, value=st.sampled_from(["1", "2", ""]))
TAG_KEYS = st.sampled_from(["t", "u", "mlflow.runName"])
TAGS = st.builds(RunTag, key=TAG_KEYS, value=st.sampled_from(["x", "y", ""]))
RUN = st.integers(0, 3)  # an index into the runs created so far (modulo); some calls miss

FILTERS = [
    "",
    "metrics.a > 0",
    "metrics.b <= 0.5",
    "params.a = '1'",
    "tags.t = 'x'",
    "attributes.status = 'RUNNING'",
    "attributes.run_name LIKE '%r%'",
]
ORDERS = [
    [],
    ["metrics.a DESC"],
    ["metrics.b"],
    ["params.a"],
    ["tags.t DESC"],
    ["attributes.start_time"],
    ["attributes.run_name DESC", "metrics.c ASC"],
]

CALLS = st.one_of(
    # always named: a run without a name gets a random one, different in each database
    st.tuples(st.just("create_run"), st.lists(TAGS, max_size=2), st.sampled_from(["r1", "r2"])),
    st.tuples(
        st.just("log_batch"),
        RUN,
        st.lists(METRICS, max_size=8),
        st.one_of(  # mostly distinct keys: a duplicate key refuses the whole batch
            st.lists(PARAMS, max_size=3, unique_by=lambda param: param.key),
            st.lists(PARAMS, max_size=3),
        ),
        st.lists(TAGS, max_size=3),
    ),
    st.tuples(st.just("log_metric"), RUN, METRICS),
    st.tuples(st.just("log_param"), RUN, PARAMS),
    st.tuples(st.just("set_tag"), RUN, TAGS),
    st.tuples(st.just("delete_tag"), RUN, TAG_KEYS),
    st.tuples(st.just("delete_run"), RUN),
    st.tuples(st.just("restore_run"), RUN),
    st.tuples(st.just("terminate"), RUN),
    st.tuples(st.just("get_run"), RUN),
    st.tuples(st.just("history"), RUN, KEYS),
    st.tuples(
        st.just("search"),
        st.sampled_from(FILTERS),
        st.sampled_from(ORDERS),
        st.sampled_from([ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL]),
        st.integers(1, 3),
    ),
)


class Session:
    """One store's side of an example: its experiment and its runs."""

    def __init__(self, store: SqlAlchemyStore, experiment: str) -> None:
        self.store = store
        self.experiment = experiment
        self.ids = Ids()
        self.clock = 1_000

    def run(self, index: int) -> str:
        """The index-th run (modulo), or an id no run has (before the first)."""
        return self.ids.runs[index % len(self.ids.runs)] if self.ids.runs else "0" * 32

    def apply(self, call: tuple[Any, ...]) -> Any:
        name, *args = call
        store, ids = self.store, self.ids
        if name == "create_run":
            tags, run_name = args
            self.clock += 10  # distinct start times: MLflow's tie-break is the random run id

            def create() -> Any:
                run = store.create_run(self.experiment, "ada", self.clock, tags, run_name)
                ids.runs.append(run.info.run_id)
                return run_view(run, ids)

            return outcome(create, ids)
        if name == "search":
            return outcome(lambda: self.search(*args), ids)
        run_id = self.run(args[0])
        rest = args[1:]
        calls = {
            "log_batch": lambda: store.log_batch(run_id, *rest),
            "log_metric": lambda: store.log_metric(run_id, *rest),
            "log_param": lambda: store.log_param(run_id, *rest),
            "set_tag": lambda: store.set_tag(run_id, *rest),
            "delete_tag": lambda: store.delete_tag(run_id, *rest),
            "delete_run": lambda: store.delete_run(run_id),
            "restore_run": lambda: store.restore_run(run_id),
            "terminate": lambda: store.update_run_info(run_id, 3, self.clock + 5, None).status,
            "get_run": lambda: run_view(store.get_run(run_id), ids),
            "history": lambda: sorted(
                (
                    (m.step, m.timestamp, number(m.value))
                    for m in store.get_metric_history(run_id, *rest)
                ),
                key=str,
            ),
        }
        return outcome(calls[name], ids)

    def state(self) -> list[Any]:
        """Every run as it ends up, with the full history of every metric key."""
        return [
            (
                self.apply(("get_run", index)),
                [self.apply(("history", index, key)) for key in "abc"],
            )
            for index in range(len(self.ids.runs))
        ]

    def search(self, filter_string: str, order_by: list[str], view: int, page: int) -> Any:
        pages, token = [], None
        while True:
            runs = self.store.search_runs(
                [self.experiment], filter_string, view, page, order_by, token
            )
            pages.append([run_view(run, self.ids) for run in runs])
            token = runs.token
            if not token or len(pages) > 20:
                return pages


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(CALLS, min_size=1, max_size=30))
# NaN is stored as 0 with is_nan: a NaN and a 0.0 at the same step and time are equals in
# MLflow's comparison, so the first one logged stays the latest, in one batch or across two.
# create_run: a tag key twice (the database refuses it), a run name against its tag.
@example(calls=[("create_run", [RunTag("t", "x"), RunTag("t", "y")], "r1")])
@example(calls=[("create_run", [RunTag("mlflow.runName", "x")], "r1")])
@example(calls=[("log_batch", 0, [Metric("a", 0.0, 1, 1), Metric("a", math.nan, 1, 1)], [], [])])
@example(calls=[("log_batch", 0, [Metric("a", math.nan, 1, 1), Metric("a", 0.0, 1, 1)], [], [])])
@example(
    calls=[
        ("log_metric", 0, Metric("a", math.nan, 1, 1)),
        ("log_metric", 0, Metric("a", 0.0, 1, 1)),
    ]
)
@example(
    calls=[
        ("log_metric", 0, Metric("a", 0.0, 1, 1)),
        ("log_batch", 0, [Metric("a", math.nan, 1, 1)], [], []),
    ]
)
# log_param: the same value again is fine, another value is refused, a long one is cut or
# refused as MLflow's own check says, and a key logged by a batch conflicts the same way.
@example(
    calls=[
        ("log_param", 0, Param("a", "1")),
        ("log_param", 0, Param("a", "1")),
        ("log_param", 0, Param("a", "2")),
        ("log_param", 1, Param("b", "x" * 6001)),
    ]
)
@example(calls=[("log_batch", 0, [], [Param("a", "1")], []), ("log_param", 0, Param("a", "2"))])
def test_the_stacks_store_answers_every_call_as_mlflows_does(
    pair: Pair, calls: list[tuple[Any, ...]]
) -> None:
    name = f"differential-{uuid.uuid4().hex[:12]}"
    sides = [Session(store, store.create_experiment(name)) for store in (pair.stock, pair.ours)]
    stock, ours = sides
    assert stock.experiment == ours.experiment  # both databases saw the same creations
    opening = [("create_run", [], "r1"), ("create_run", [RunTag("t", "x")], "r2")]
    for step, call in enumerate(opening + calls):
        expected = stock.apply(call)
        got = ours.apply(call)
        assert got == expected, f"call {step} {call!r}:\n stock {expected!r}\n ours  {got!r}"
    assert ours.state() == stock.state()


def test_create_run_refuses_a_missing_or_deleted_experiment_as_mlflow_does(pair: Pair) -> None:
    def attempts(store: SqlAlchemyStore) -> list[Any]:
        ids = Ids()
        experiment = store.create_experiment(f"gone-{uuid.uuid4().hex[:8]}")
        store.delete_experiment(experiment)
        return [
            outcome(lambda e=e: store.create_run(e, "ada", 0, [], "r"), ids)
            for e in (experiment, "987654321", "not-a-number", None)
        ]

    def created(result: Any) -> Any:
        info = result[1].info
        return (info.experiment_id, info.run_name, info.status, result[1].data.tags)

    expected = attempts(pair.stock)
    assert [result[0] for result in expected] == ["error"] * 3 + ["ok"]  # None: Default's
    got = attempts(pair.ours)
    assert got[:3] == expected[:3]
    assert created(got[3]) == created(expected[3])


# -- what only MLflow's own loaders add: dataset inputs, model inputs and outputs -------------


def test_runs_with_datasets_and_models_come_back_as_from_mlflows_store(pair: Pair) -> None:
    """Runs with dataset inputs (with and without tags), model inputs and outputs, next to a run
    with none, through get_run, a search and a dataset filter (MLflow's own search answers)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput, LoggedModelOutput

    def views(store: SqlAlchemyStore) -> Any:
        experiment = store.create_experiment(f"inputs-{uuid.uuid4().hex[:8]}")
        ids = Ids()
        created = []
        for name in ("plain", "with-datasets", "with-models"):
            run = store.create_run(experiment, "ada", 1_000 + len(created), [], name)
            created.append(run.info.run_id)
            ids.runs.append(run.info.run_id)
        trips = Dataset("trips", "d1", "local", '{"uri": "trips.csv"}', '{"a": 1}', "{}")
        store.log_inputs(
            created[1],
            datasets=[
                DatasetInput(trips, [InputTag("mlflow.data.context", "training")]),
                DatasetInput(Dataset("eval", "d2", "local", "{}"), []),
            ],
        )
        model = store.create_logged_model(experiment, name="m", source_run_id=created[2])
        model_ids = Ids()
        model_ids.runs.append(model.model_id.removeprefix("m-"))
        store.log_inputs(created[2], models=[LoggedModelInput(model.model_id)])
        store.log_outputs(created[2], [LoggedModelOutput(model.model_id, 3)])

        def view(run: Any) -> Any:
            whole = {
                "run": run_view(run, ids),
                "inputs": run.inputs.to_dictionary(),
                "outputs": run.outputs.to_dictionary(),
            }
            return model_ids.scrub(ids.scrub(repr(whole)))

        return (
            [view(store.get_run(run_id)) for run_id in created],
            [view(run) for run in store.search_runs([experiment], "", ViewType.ALL)],
            [
                view(run)
                for run in store.search_runs(
                    [experiment], "dataset.context = 'training'", ViewType.ALL
                )
            ],
        )

    expected, got = views(pair.stock), views(pair.ours)
    assert "training" in expected[0][1] and "'step': 3" in expected[0][2]  # the data is there
    assert len(expected[2]) == 1
    assert got == expected


# -- the engine: pings only what sat idle --------------------------------------------------------


def backend_pid(store: TrackingStore) -> int:
    import sqlalchemy

    with store.engine.connect() as connection:
        return connection.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one()


def test_a_connection_postgresql_closed_while_idle_is_replaced_unnoticed(
    pair: Pair, stack: LiveStack
) -> None:
    """As after a restart of PostgreSQL or an idle timeout: the pooled connection is gone, and
    the next call (after the idle threshold) pings it, finds it closed, reconnects the pool
    and answers as if nothing happened; a call in steady use is not pinged at all."""
    import time

    from mlflow_stack.stores.engine import IDLE_BEFORE_PING

    store = pair.ours
    experiment = store.create_experiment(f"idle-{uuid.uuid4().hex[:8]}")
    old = backend_pid(store)
    assert backend_pid(store) == old  # reused at once: the same pooled connection
    admin = stack.pg("postgres")
    try:
        with admin.cursor() as cur:
            cur.execute("select pg_terminate_backend(%s)", (old,))
            assert cur.fetchone() == (True,)
    finally:
        admin.close()
    time.sleep(IDLE_BEFORE_PING + 0.1)
    run = store.create_run(experiment, "u", 0, [], "after the terminate")  # no error
    assert store.get_run(run.info.run_id).info.run_name == "after the terminate"
    assert backend_pid(store) != old
