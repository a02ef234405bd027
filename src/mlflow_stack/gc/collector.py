"""The server side of ``mlflow-stack gc``: permanently delete runs and experiments that were
deleted (moved to MLflow's ``deleted`` lifecycle stage) long enough ago, with their artifacts.

What goes, as MLflow's own ``mlflow gc --older-than`` decides it:

* runs whose ``deleted_time`` is at or before the cutoff: their rows (metrics, latest metrics,
  params, tags, the run) and every object under their artifact URI;
* experiments deleted (``last_update_time``) before the cutoff: every run in them, their rows
  (MLflow's ORM cascades to tags, traces and logged models) and every object under their
  artifact location.

Each run or experiment is collected in one database transaction that first locks its row and
checks again that it is still deleted and old enough (a concurrent restore waits for the lock,
then finds the run gone, instead of getting back a run without artifacts), deletes the
objects, then the rows, then commits. Objects go before rows on purpose: a crash in between
leaves rows (still deleted, still found by the next gc, which finishes the job) rather than
objects no row points to any more, which no gc would ever find again.

An experiment's whole location is emptied only when no other experiment's location overlaps
it (two experiments can be created with the same explicit location); otherwise only its
runs' artifacts go. Locations outside the server's bucket are left alone and reported.

Work goes in batches bounded by time, so no HTTP request runs long: a batch that stops early
(always after at least one item, so each makes progress) returns a page token, and the client
asks again with it. One real (not dry-run) batch runs at a time across all workers and
replicas: each holds a PostgreSQL advisory lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow_stack.gc.locations import Destination, overlaps

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: pg_try_advisory_lock key: "mlflow-stack gc" (any constant shared by every worker works).
LOCK_KEY = 0x6D6C66_6763
#: Work on one request for about this long, then answer with a page token.
BATCH_SECONDS = 20.0
#: ... or after this many runs or experiments, so the answer stays small.
BATCH_ITEMS = 500
RUNS, EXPERIMENTS = "runs", "experiments"


class GCBusyError(Exception):
    """Another garbage collection holds the lock."""


@dataclass
class Summary:
    """What one batch (or, summed by the client, one whole gc) deleted or would delete."""

    dry_run: bool
    older_than_days: float
    cutoff_ms: int
    runs: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    next_page_token: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"gc {verb} {_count(len(self.runs), 'run')} and "
            f"{_count(len(self.experiments), 'experiment')} deleted more than "
            f"{self.older_than_days:g} days ago, with {_count(self.objects, 'object')} "
            f"({_count(self.bytes, 'byte')})"
        )
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@dataclass(frozen=True)
class Position:
    """Where a gc stopped: the cutoff it uses, the phase, the last key it handled."""

    cutoff_ms: int
    phase: str = RUNS
    after: tuple[int, str] | None = None

    def token(self) -> str:
        document = {"cutoff_ms": self.cutoff_ms, "phase": self.phase, "after": self.after}
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()

    @classmethod
    def from_token(cls, token: str) -> Position:
        try:
            document = json.loads(base64.urlsafe_b64decode(token.encode()))
            after = document["after"]
            position = cls(
                int(document["cutoff_ms"]),
                document["phase"],
                None if after is None else (int(after[0]), str(after[1])),
            )
        except (binascii.Error, ValueError, TypeError, KeyError, IndexError):
            raise ValueError("page_token is not a token this server returned") from None
        if position.phase not in (RUNS, EXPERIMENTS):
            raise ValueError("page_token is not a token this server returned")
        return position


class Collector:
    """Deletes through MLflow's SQLAlchemy tracking store and an S3 client of the bucket."""

    def __init__(
        self,
        store: Any,
        s3: S3Client,
        destination: Destination,
        *,
        clock: Callable[[], float] = time.time,
        batch_seconds: float = BATCH_SECONDS,
        batch_items: int = BATCH_ITEMS,
    ) -> None:
        self.store, self.s3, self.destination = store, s3, destination
        self.clock, self.batch_seconds, self.batch_items = clock, batch_seconds, batch_items

    # --- one batch ---

    def collect(
        self,
        older_than_days: float,
        *,
        dry_run: bool,
        page_token: str | None = None,
        max_items: int | None = None,
    ) -> Summary:
        """One batch of at most ``max_items`` (and about :attr:`batch_seconds`);
        ``next_page_token`` is set when there may be more."""
        if page_token:
            position = Position.from_token(page_token)
        else:
            position = Position(int(self.clock() * 1000) - round(older_than_days * DAY_MS))
        summary = Summary(dry_run, older_than_days, position.cutoff_ms)
        limit = min(max_items or self.batch_items, self.batch_items)
        if dry_run:
            self._batch(position, summary, limit)
        else:
            with self._exclusive():
                self._batch(position, summary, limit)
        return summary

    def _batch(self, position: Position, summary: Summary, limit: int) -> None:
        deadline = time.monotonic() + self.batch_seconds
        handled = 0
        phases = (RUNS, EXPERIMENTS) if position.phase == RUNS else (EXPERIMENTS,)
        for phase in phases:
            after = position.after if phase == position.phase else None
            for key in self._candidates(phase, position.cutoff_ms, after):
                # at least one item per batch, however late it starts: else a slow candidate
                # query would hand back the same token forever
                if handled >= limit or (handled > 0 and time.monotonic() >= deadline):
                    summary.next_page_token = Position(position.cutoff_ms, phase, after).token()
                    return
                self._one(phase, key[1], position.cutoff_ms, summary)
                handled += 1
                after = key

    def _one(self, phase: str, identifier: str, cutoff_ms: int, summary: Summary) -> None:
        what = "run" if phase == RUNS else "experiment"
        try:
            if phase == RUNS:
                done = self._collect_run(identifier, cutoff_ms, summary)
            else:
                done = self._collect_experiment(identifier, cutoff_ms, summary)
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the others
            log.warning("gc: could not delete %s %s: %s", what, identifier, error)
            summary.failed.append(f"{what} {identifier}: {error}")
            return
        if done:
            (summary.runs if phase == RUNS else summary.experiments).append(identifier)

    def _candidates(
        self, phase: str, cutoff_ms: int, after: tuple[int, str] | None
    ) -> Iterator[tuple[int, str]]:
        """(time, id) of each candidate past ``after``, oldest first, a page at a time."""
        from mlflow.entities import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun
        from sqlalchemy import String, cast, select, tuple_

        # as `mlflow gc`: an experiment's last_update_time is its deletion time; strictly before
        old_experiments = (SqlExperiment.lifecycle_stage == LifecycleStage.DELETED) & (
            SqlExperiment.last_update_time < cutoff_ms
        )
        if phase == RUNS:  # those in old deleted experiments go with their experiment
            when, ident = SqlRun.deleted_time, SqlRun.run_uuid
            condition = (
                (SqlRun.lifecycle_stage == LifecycleStage.DELETED)
                & (when <= cutoff_ms)
                & ~SqlRun.experiment_id.in_(
                    select(SqlExperiment.experiment_id).where(old_experiments)
                )
            )
        else:
            when, ident = SqlExperiment.last_update_time, cast(SqlExperiment.experiment_id, String)
            condition = old_experiments
        while True:
            with self.store.ManagedSessionMaker() as session:
                query = session.query(when, ident).filter(condition)
                if after is not None:
                    query = query.filter(tuple_(when, ident) > tuple_(*after))
                page = [(int(t), str(i)) for t, i in query.order_by(when, ident).limit(100)]
            yield from page
            if len(page) < 100:
                return
            after = page[-1]

    # --- one run, one experiment ---

    def _collect_run(self, run_id: str, cutoff_ms: int, summary: Summary) -> bool:
        from mlflow.entities import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlRun

        with self.store.ManagedSessionMaker(read_only=summary.dry_run) as session:
            query = session.query(SqlRun.artifact_uri).filter(
                SqlRun.run_uuid == run_id,
                SqlRun.lifecycle_stage == LifecycleStage.DELETED,
                SqlRun.deleted_time <= cutoff_ms,
            )
            row = query.one_or_none() if summary.dry_run else query.with_for_update().one_or_none()
            if row is None:  # restored, or collected by someone else, since it was listed
                return False
            self._remove(self._run_prefixes([row.artifact_uri], None, summary), summary)
            if not summary.dry_run:
                _delete_run_rows(session, [run_id])
        return True

    def _collect_experiment(self, experiment_id: str, cutoff_ms: int, summary: Summary) -> bool:
        from mlflow.entities import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun

        with self.store.ManagedSessionMaker(read_only=summary.dry_run) as session:
            query = session.query(SqlExperiment.artifact_location).filter(
                SqlExperiment.experiment_id == int(experiment_id),
                SqlExperiment.lifecycle_stage == LifecycleStage.DELETED,
                SqlExperiment.last_update_time < cutoff_ms,
            )
            row = query.one_or_none() if summary.dry_run else query.with_for_update().one_or_none()
            if row is None:
                return False
            runs = (
                session.query(SqlRun.run_uuid, SqlRun.artifact_uri)
                .filter(SqlRun.experiment_id == int(experiment_id))
                .all()
            )
            run_ids, run_uris = [r.run_uuid for r in runs], [r.artifact_uri for r in runs]
            whole = self.destination.prefix_of(row.artifact_location)
            if whole is None:
                summary.skipped.append(
                    f"experiment {experiment_id}: {row.artifact_location} (not in the bucket)"
                )
            elif self._shared(session, experiment_id, whole):
                log.warning(
                    "gc: experiment %s shares its location %s with another experiment: "
                    "deleting only its runs' artifacts there",
                    experiment_id,
                    row.artifact_location,
                )
                whole = None
            prefixes = self._run_prefixes(run_uris, whole, summary)
            self._remove(([whole] if whole else []) + prefixes, summary)
            if not summary.dry_run:
                _delete_run_rows(session, run_ids)
                _delete_experiment_rows(self.store, session, experiment_id)
        summary.runs.extend(run_ids)
        return True

    def _run_prefixes(self, uris: list[str], within: str | None, summary: Summary) -> list[str]:
        """The prefixes of runs' artifacts not already under ``within``."""
        prefixes = []
        for uri in uris:
            prefix = self.destination.prefix_of(uri)
            if prefix is None:
                summary.skipped.append(f"{uri} (not in the bucket)")
            elif within is None or not prefix.startswith(within):
                prefixes.append(prefix)
        return prefixes

    def _shared(self, session: Session, experiment_id: str, prefix: str) -> bool:
        from mlflow.store.tracking.dbmodels.models import SqlExperiment

        others = session.query(SqlExperiment.artifact_location).filter(
            SqlExperiment.experiment_id != int(experiment_id)
        )
        for (location,) in others:
            other = self.destination.prefix_of(location)
            if other is not None and overlaps(prefix, other):
                return True
        return False

    # --- objects ---

    def _remove(self, prefixes: list[str], summary: Summary) -> None:
        for prefix in prefixes:
            if summary.dry_run:
                for page in self._pages(prefix):
                    summary.objects += len(page)
                    summary.bytes += sum(item["Size"] for item in page)
                continue
            while page := self._first_page(prefix):  # list again after each delete
                keys = [{"Key": item["Key"]} for item in page]
                answer = self.s3.delete_objects(
                    Bucket=self.destination.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise RuntimeError(
                        f"S3 refused to delete {len(errors)} objects under {prefix} "
                        f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
                    )
                summary.objects += len(page)
                summary.bytes += sum(item["Size"] for item in page)

    def _first_page(self, prefix: str) -> list[dict[str, Any]]:
        answer = self.s3.list_objects_v2(Bucket=self.destination.bucket, Prefix=prefix)
        return list(answer.get("Contents", []))

    def _pages(self, prefix: str) -> Iterator[list[dict[str, Any]]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for answer in paginator.paginate(Bucket=self.destination.bucket, Prefix=prefix):
            yield list(answer.get("Contents", []))

    # --- one at a time ---

    def _exclusive(self) -> Any:
        from contextlib import contextmanager

        from sqlalchemy import text

        @contextmanager
        def lock() -> Iterator[None]:
            with self.store.engine.connect() as connection:
                taken = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}
                ).scalar()
                if not taken:
                    raise GCBusyError("another gc is running on this server; try again later")
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                    connection.commit()

        return lock()


def _delete_run_rows(session: Session, run_ids: list[str]) -> None:
    """The rows of runs, as MLflow's ``SqlAlchemyStore._hard_delete_run`` deletes them (bulk
    deletes of its cascade tables, then the run), in the caller's transaction."""
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from mlflow.store.tracking.sqlalchemy_store import _RUN_DELETE_CASCADE_MODELS

    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        for model in _RUN_DELETE_CASCADE_MODELS:
            session.query(model).filter(model.run_uuid.in_(chunk)).delete(synchronize_session=False)
        session.query(SqlRun).filter(SqlRun.run_uuid.in_(chunk)).delete(synchronize_session=False)


def _delete_experiment_rows(store: Any, session: Session, experiment_id: str) -> None:
    """The experiment's rows, as MLflow's ``SqlAlchemyStore._hard_delete_experiment`` deletes
    them (rollup rows by id, then the experiment with its ORM cascades), in the caller's
    transaction."""
    from mlflow.entities import ViewType
    from mlflow.store.tracking.dbmodels.models import (
        SqlAssessmentDailyRollup,
        SqlSpanCostDailyRollup,
        SqlTraceMetricDailyRollup,
        SqlTraceRollupRebuild,
    )

    for model in (
        SqlTraceRollupRebuild,
        SqlTraceMetricDailyRollup,
        SqlSpanCostDailyRollup,
        SqlAssessmentDailyRollup,
    ):
        session.query(model).filter(model.experiment_id == int(experiment_id)).delete(
            synchronize_session=False
        )
    experiment = store._get_experiment(session, experiment_id, ViewType.DELETED_ONLY)
    session.delete(experiment)
