"""The server side of gc on real parts: MLflow's SQLAlchemy tracking store (on SQLite) and a
real S3 (moto's server). What goes and what stays, dry runs, batches and their page tokens,
items that fail or change meanwhile, and the one-at-a-time lock (PostgreSQL's advisory lock
functions played by SQLite functions, since SQLite has none).

Integration tests run the same against PostgreSQL through the server (tests/integration)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlflow_stack.gc.collector import (
    LOCK_KEY,
    Collector,
    GCBusyError,
    Position,
    Summary,
)
from mlflow_stack.gc.locations import Destination

#: MLflow's store uses a loader strategy that SQLAlchemy 2.1 deprecates: MLflow's to change.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

# --- page tokens and summaries ---


def test_page_tokens_round_trip_and_strangers_are_refused() -> None:
    position = Position(1_700_000_000_000, "experiments", (1_699_000_000_000, "12"))
    assert Position.from_token(position.token()) == position
    assert Position.from_token(Position(5).token()) == Position(5, "runs", None)
    forged = base64.urlsafe_b64encode(b'{"cutoff_ms": 1, "phase": "models", "after": null}')
    for token in ("not-base64!", base64.urlsafe_b64encode(b"[]").decode(), forged.decode()):
        with pytest.raises(ValueError, match="page_token is not a token this server returned"):
            Position.from_token(token)


@pytest.mark.parametrize(
    "document",
    [b'{"phase": "runs", "after": null}', b'{"cutoff_ms": 1, "phase": "runs", "after": [1]}'],
    ids=["no-cutoff", "short-after"],
)
def test_incomplete_tokens_are_refused(document: bytes) -> None:
    with pytest.raises(ValueError, match="page_token is not a token this server returned"):
        Position.from_token(base64.urlsafe_b64encode(document).decode())


@pytest.mark.parametrize(
    ("summary", "text"),
    [
        (Summary(True, 30, 0), "gc would delete 0 runs and 0 experiments deleted more than 30 "),
        (
            Summary(False, 0.5, 0, runs=["a"], experiments=["1"], objects=1, bytes=1),
            "gc deleted 1 run and 1 experiment deleted more than 0.5 days ago, with 1 object "
            "(1 byte)",
        ),
        (
            Summary(False, 7, 0, failed=["run a: x", "run b: y"]),
            "gc deleted 0 runs and 0 experiments deleted more than 7 days ago, with 0 objects "
            "(0 bytes); 2 failed",
        ),
    ],
    ids=["dry-run", "singular", "failed"],
)
def test_a_summary_reads_as_one_sentence(summary: Summary, text: str) -> None:
    assert summary.describe().startswith(text)
    assert "\n" not in summary.describe()


def test_a_summary_as_json_has_every_field() -> None:
    summary = Summary(False, 7, 5, runs=["r"], skipped=["s"], next_page_token="t")
    assert summary.as_dict() == {
        "dry_run": False,
        "older_than_days": 7,
        "cutoff_ms": 5,
        "runs": ["r"],
        "experiments": [],
        "objects": 0,
        "bytes": 0,
        "failed": [],
        "skipped": ["s"],
        "next_page_token": "t",
    }
    assert Summary(**summary.as_dict()) == summary  # what the client rebuilds


# --- on MLflow's store and a real bucket ---


def days_from_now(days: float) -> Callable[[], float]:
    return lambda: time.time() + days * 86400


@dataclass
class Stack:
    """The store and bucket, with helpers to make runs that have objects."""

    store: Any
    s3: Any
    bucket: str
    experiment: str = ""

    @property
    def destination(self) -> Destination:
        return Destination(self.bucket)

    def collector(self, days_on: float = 8, **options: Any) -> Collector:
        """A collector whose clock is ``days_on`` days ahead: deleted today is old for 7."""
        return Collector(
            self.store, self.s3, self.destination, clock=days_from_now(days_on), **options
        )

    def run(self, experiment: str | None = None, files: int = 1, deleted: bool = True) -> str:
        run = self.store.create_run(experiment or self.experiment, "u", 0, [], "r")
        self.put(run.info.artifact_uri, files)
        if deleted:
            self.store.delete_run(run.info.run_id)
        return run.info.run_id

    def put(self, uri: str, files: int, name: str = "f") -> None:
        prefix = self.destination.prefix_of(uri)
        for i in range(files):
            self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}{name}{i}", Body=b"1234")

    def objects(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.store.get_run(run_id)
        except MlflowException:
            return False
        return True

    def experiment_exists(self, experiment_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.store.get_experiment(experiment_id)
        except MlflowException:
            return False
        return True


@pytest.fixture
def stack(store: Any, bucket: tuple[Any, str]) -> Stack:
    s3, name = bucket
    made = Stack(store, s3, name)
    made.experiment = store.create_experiment("e")
    return made


def _all_batches(collector: Collector, days: float, **options: Any) -> list[Summary]:
    batches = [collector.collect(days, **options)]
    while batches[-1].next_page_token:
        batches.append(collector.collect(days, page_token=batches[-1].next_page_token, **options))
        assert len(batches) < 50, "no progress"
    return batches


@dataclass
class Locks:
    """pg_try_advisory_lock and pg_advisory_unlock as SQLite functions of one store."""

    held_elsewhere: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def try_lock(self, key: int) -> int:
        self.calls.append("lock")
        if key in self.held_elsewhere or key in self.held:
            return 0
        self.held.add(key)
        return 1

    def unlock(self, key: int) -> int:
        self.calls.append("unlock")
        self.held.discard(key)
        return 1


@pytest.fixture
def locks(store: Any) -> Locks:
    from sqlalchemy import event

    locks = Locks()

    @event.listens_for(store.engine, "connect")
    def register(connection: Any, record: Any) -> None:
        connection.create_function("pg_try_advisory_lock", 1, locks.try_lock)
        connection.create_function("pg_advisory_unlock", 1, locks.unlock)

    store.engine.dispose()  # the pooled connections do not have the functions yet
    return locks


def test_old_deleted_runs_go_with_their_objects_and_everything_else_stays(
    stack: Stack, locks: Locks
) -> None:
    old = stack.run(files=2)
    active = stack.run(deleted=False)
    summary = stack.collector().collect(7, dry_run=False)
    assert (summary.runs, summary.experiments, summary.objects, summary.bytes) == (
        [old],
        [],
        2,
        8,
    )
    assert summary.next_page_token is None and summary.failed == []
    assert not stack.run_exists(old) and stack.run_exists(active)
    assert stack.objects() == [f"{stack.experiment}/{active}/artifacts/f0"]
    assert locks.calls == ["lock", "unlock"] and locks.held == set()


def test_a_run_deleted_less_long_ago_stays(stack: Stack, locks: Locks) -> None:
    recent = stack.run()
    summary = stack.collector(days_on=6).collect(7, dry_run=False)
    assert summary.runs == [] and stack.run_exists(recent)
    assert summary.cutoff_ms == pytest.approx((time.time() - 86400) * 1000, abs=60_000)
    assert stack.collector(days_on=0).collect(0, dry_run=False).runs == [recent]


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(stack: Stack, locks: Locks) -> None:
    runs = sorted([stack.run(files=3), stack.run(files=1)])
    before = stack.objects()
    summary = stack.collector().collect(7, dry_run=True)
    assert (sorted(summary.runs), summary.objects, summary.bytes) == (runs, 4, 16)
    assert summary.dry_run and "would delete 2 runs" in summary.describe()
    assert stack.objects() == before and all(stack.run_exists(r) for r in runs)
    assert locks.calls == []  # a dry run takes no lock


def test_an_old_deleted_experiment_goes_whole_with_all_its_runs(stack: Stack, locks: Locks) -> None:
    experiment = stack.store.create_experiment("gone")
    runs = sorted([stack.run(experiment), stack.run(experiment, deleted=False)])
    stack.put(f"mlflow-artifacts:/{experiment}/loose", 1)  # under no run
    kept = stack.run(deleted=False)
    stack.store.delete_experiment(experiment)
    summary = stack.collector().collect(7, dry_run=False)
    assert summary.experiments == [experiment]
    assert sorted(summary.runs) == runs
    assert (summary.objects, summary.bytes) == (3, 12)
    assert not stack.experiment_exists(experiment)
    assert not any(stack.run_exists(r) for r in runs) and stack.run_exists(kept)
    assert stack.objects() == [f"{stack.experiment}/{kept}/artifacts/f0"]


def test_an_experiment_sharing_its_location_loses_only_its_runs_artifacts(
    stack: Stack, locks: Locks
) -> None:
    shared = f"s3://{stack.bucket}/shared"
    gone = stack.store.create_experiment("gone", artifact_location=shared)
    other = stack.store.create_experiment("other", artifact_location=shared)
    gone_run = stack.run(gone)
    other_run = stack.run(other, deleted=False)
    stack.put(shared, 1, name="of-both")
    stack.store.delete_experiment(gone)
    summary = stack.collector().collect(7, dry_run=False)
    assert (summary.experiments, summary.runs, summary.objects) == ([gone], [gone_run], 1)
    assert stack.objects() == sorted(["shared/of-both0", f"shared/{other_run}/artifacts/f0"])
    assert stack.experiment_exists(other)


def test_locations_outside_the_bucket_are_left_alone_and_reported(
    stack: Stack, locks: Locks
) -> None:
    elsewhere = stack.store.create_experiment("elsewhere", artifact_location="s3://other/x")
    run = stack.run(elsewhere, files=0)
    stack.store.delete_experiment(elsewhere)
    summary = stack.collector().collect(7, dry_run=False)
    assert summary.experiments == [elsewhere] and summary.runs == [run]
    assert summary.skipped == [
        f"experiment {elsewhere}: s3://other/x (not in the bucket)",
        f"s3://other/x/{run}/artifacts (not in the bucket)",
    ]
    assert not stack.experiment_exists(elsewhere)  # the rows go; the objects are not ours


def test_batches_of_max_items_follow_page_tokens_to_the_end(stack: Stack, locks: Locks) -> None:
    runs = {stack.run() for _ in range(5)}
    experiment = stack.store.create_experiment("gone")
    stack.store.delete_experiment(experiment)
    batches = _all_batches(stack.collector(), 7, dry_run=False, max_items=2)
    assert [len(b.runs) + len(b.experiments) for b in batches] == [2, 2, 2]
    assert [bool(b.next_page_token) for b in batches] == [True, True, False]
    collected = [r for b in batches for r in b.runs]
    assert sorted(collected) == sorted(runs)  # each once
    assert batches[-1].experiments == [experiment]
    assert len({b.cutoff_ms for b in batches}) == 1  # the first batch's cutoff holds
    assert locks.calls == ["lock", "unlock"] * 3


def test_the_collectors_own_batch_size_caps_a_larger_request(stack: Stack, locks: Locks) -> None:
    for _ in range(3):
        stack.run(files=0)
    first = stack.collector(batch_items=2).collect(7, dry_run=True, max_items=500)
    assert len(first.runs) == 2 and first.next_page_token


def test_a_dry_run_pages_the_same_way(stack: Stack) -> None:
    runs = {stack.run(files=0) for _ in range(3)}
    batches = _all_batches(stack.collector(), 7, dry_run=True, max_items=1)
    assert [len(b.runs) for b in batches] == [1, 1, 1]
    assert {r for b in batches for r in b.runs} == runs
    assert all(stack.run_exists(r) for r in runs)


def test_candidates_are_listed_oldest_first_past_a_page_of_a_hundred(stack: Stack) -> None:
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlRun

    with stack.store.ManagedSessionMaker(read_only=False) as session:
        session.add_all(
            SqlRun(
                run_uuid=f"run{i:03d}",
                name="r",
                experiment_id=int(stack.experiment),
                user_id="u",
                status="FINISHED",
                start_time=0,
                source_type="LOCAL",
                source_name="",
                entry_point_name="",
                source_version="",
                lifecycle_stage=LifecycleStage.DELETED,
                deleted_time=1_000 + (i % 7),  # ties broken by the run id
                artifact_uri=f"mlflow-artifacts:/{stack.experiment}/run{i:03d}/artifacts",
            )
            for i in range(205)
        )
    collector = stack.collector()
    listed = list(collector._candidates("runs", 2_000, None))
    assert listed == sorted((1_000 + (i % 7), f"run{i:03d}") for i in range(205))
    assert list(collector._candidates("runs", 2_000, listed[149])) == listed[150:]
    assert list(collector._candidates("runs", 1_003, None)) == [k for k in listed if k[0] <= 1_003]


def test_a_run_restored_after_it_was_listed_is_not_collected(
    stack: Stack, locks: Locks, monkeypatch: pytest.MonkeyPatch
) -> None:
    restored, collected = stack.run(), stack.run()
    collector = stack.collector()
    collect_run = collector._collect_run

    def restore_first(run_id: str, cutoff_ms: int, summary: Summary) -> bool:
        if run_id == restored:
            stack.store.restore_run(restored)  # a user, between the listing and the lock
        return collect_run(run_id, cutoff_ms, summary)

    monkeypatch.setattr(collector, "_collect_run", restore_first)
    summary = collector.collect(7, dry_run=False)
    assert summary.runs == [collected] and summary.failed == []
    assert stack.run_exists(restored)
    assert f"{stack.experiment}/{restored}/artifacts/f0" in stack.objects()


class RefusingS3:
    """The real client, except that S3 refuses to delete what is below ``prefix``."""

    def __init__(self, s3: Any, prefix: str) -> None:
        self.s3, self.prefix = s3, prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        refused = [o["Key"] for o in Delete["Objects"] if o["Key"].startswith(self.prefix)]
        if refused:
            return {
                "Errors": [{"Key": k, "Code": "AccessDenied", "Message": "no"} for k in refused]
            }
        return self.s3.delete_objects(Bucket=Bucket, Delete=Delete)


def test_a_run_whose_objects_cannot_be_deleted_keeps_its_rows_for_the_next_gc(
    stack: Stack, locks: Locks
) -> None:
    stuck, fine = stack.run(files=2), stack.run()
    prefix = f"{stack.experiment}/{stuck}/"
    refusing = Collector(
        stack.store, RefusingS3(stack.s3, prefix), stack.destination, clock=days_from_now(8)
    )
    summary = refusing.collect(7, dry_run=False)
    assert summary.runs == [fine]
    assert summary.failed == [
        f"run {stuck}: S3 refused to delete 2 objects under {prefix}artifacts/ "
        f"(first: {prefix}artifacts/f0: AccessDenied no)"
    ]
    assert stack.run_exists(stuck)  # objects go before rows: still found next time
    assert locks.held == set()
    assert stack.collector().collect(7, dry_run=False).runs == [stuck]
    assert stack.objects() == []


# --- one at a time ---


def test_a_gc_running_elsewhere_makes_another_wait_and_deletes_nothing(
    stack: Stack, locks: Locks
) -> None:
    run = stack.run()
    locks.held_elsewhere.add(LOCK_KEY)
    with pytest.raises(GCBusyError, match="another gc is running on this server; try again later"):
        stack.collector().collect(7, dry_run=False)
    assert stack.run_exists(run) and stack.objects() != []
    assert locks.calls == ["lock"]  # not taken, so not released
    assert stack.collector().collect(7, dry_run=True).runs == [run]  # a dry run goes on


def test_the_lock_is_released_when_a_batch_fails(
    stack: Stack, locks: Locks, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = stack.collector()

    def broken(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(collector, "_batch", broken)
    with pytest.raises(RuntimeError, match="went away"):
        collector.collect(7, dry_run=False)
    assert locks.calls == ["lock", "unlock"] and locks.held == set()


def test_a_stranger_page_token_is_refused_before_the_lock(stack: Stack, locks: Locks) -> None:
    with pytest.raises(ValueError, match="page_token is not a token this server returned"):
        stack.collector().collect(7, dry_run=False, page_token="forged")
    assert locks.calls == []


def test_a_batch_out_of_time_still_makes_progress(stack: Stack, locks: Locks) -> None:
    run = stack.run(files=0)
    summary = stack.collector(batch_seconds=0).collect(7, dry_run=False)
    assert summary.runs == [run] or summary.next_page_token != Position(summary.cutoff_ms).token()


def test_batches_out_of_time_handle_one_item_each_until_none_is_left(
    stack: Stack, locks: Locks
) -> None:
    runs = {stack.run(files=0), stack.run(files=0)}
    collector = stack.collector(batch_seconds=0)
    first = collector.collect(7, dry_run=False)
    assert len(first.runs) == 1 and first.next_page_token
    second = collector.collect(7, dry_run=False, page_token=first.next_page_token)
    assert set(first.runs + second.runs) == runs
    assert not any(stack.run_exists(run) for run in runs)
