"""The stack's tracking store: MLflow's ``SqlAlchemyStore`` on PostgreSQL, with the write path
of ``log_batch``, ``log_metric`` and ``log_param`` in set-based SQL and the reads of runs in
constant statements.

MLflow 3.17.2's ``log_batch`` opens four sessions (one per kind of data, each on its own pooled
connection with its own pre-ping), reads the run row four times and inserts metrics through the
ORM one object at a time, then reads and locks the run's latest metrics to compare them in
Python: about 27 round trips and most of a worker's CPU for a batch of 200 points. Here one
transaction on one connection does it all:

- the run is read once (existence and lifecycle stage, MLflow's errors);
- params: the run's existing values for the batch's keys in one query (a changed value is
  refused with MLflow's message, nothing written), then one multi-row insert; a key another
  writer inserted meanwhile is compared the same way instead of failing on the primary key;
- metrics: one ``INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`` (a point logged twice
  is kept once, as MLflow's primary key recovery does);
- ``latest_metrics``: one upsert that keeps, per key, the point with the greatest
  ``(step, timestamp, value)``, the first of equals in the batch's order, and replaces the
  stored one only when strictly greater, as MLflow's comparison does;
- tags: one upsert, the last value of a key winning; ``mlflow.runName`` also renames the run
  (an empty one is ignored, as in MLflow).

Reads: ``get_run`` and each page of ``search_runs`` load their runs in one statement
(:mod:`mlflow_stack.stores.reads`), and a search picks its page's run ids first
(:mod:`mlflow_stack.stores.search`). Everything else, and every error message, is MLflow's own
code. The store is registered for the ``postgresql`` scheme through the
``mlflow.tracking_store`` entry point, so the server, ``mlflow gc`` and any tool in this
environment get it; with workspaces on (``MLFLOW_ENABLE_WORKSPACES``) MLflow's
workspace-aware store is used unchanged.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import sqlalchemy
from mlflow.entities import (
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunInputs,
    RunOutputs,
    RunStatus,
    RunTag,
    SourceType,
    ViewType,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.tracking.dbmodels.models import (
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, _get_run_name_from_tags
from mlflow.utils.name_utils import _generate_random_name
from mlflow.utils.search_utils import SearchUtils
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import (
    _validate_batch_log_data,
    _validate_batch_log_limits,
    _validate_metric,
    _validate_param,
    _validate_param_keys_unique,
    _validate_run_id,
)

from mlflow_stack.stores.engine import create_engine
from mlflow_stack.stores.owners import AuthorizingRun, RunOwners
from mlflow_stack.stores.phase import authorizing
from mlflow_stack.stores.reads import LoadedRun, load_runs
from mlflow_stack.stores.search import page_of_ids

#: The tables the statements below write (MLflow's names; a test checks them against its models).
TABLES = ("metrics", "latest_metrics", "params", "tags")

#: Stand-ins MLflow stores for infinities (SQL has none).
_LARGEST = 1.7976931348623157e308

#: One metric row: key, value, timestamp, step, is_nan.
MetricRow = tuple[str, float, int, int, bool]


def metric_rows(metrics: Iterable[Metric]) -> list[MetricRow]:
    """The rows MLflow would store for ``metrics``: NaN as 0 with ``is_nan``, ±inf as the
    largest finite double, each distinct row once, in the order first logged."""
    rows: dict[MetricRow, None] = {}
    for metric in metrics:
        value = float(metric.value)
        is_nan = math.isnan(value)
        if is_nan:
            value = 0.0
        elif math.isinf(value):
            value = _LARGEST if value > 0 else -_LARGEST
        rows.setdefault((metric.key, value, int(metric.timestamp), int(metric.step), is_nan))
    return list(rows)


def final_tags(tags: Sequence[RunTag]) -> tuple[dict[str, str], str | None]:
    """The value each tag key ends with (the last one given), and the run's new name: the
    last non-empty ``mlflow.runName`` (MLflow ignores an empty one)."""
    values: dict[str, str] = {}
    name = None
    for tag in tags:
        if tag.key == MLFLOW_RUN_NAME:
            if tag.value:
                name = tag.value
            continue
        values[tag.key] = tag.value
    if name is not None:
        values[MLFLOW_RUN_NAME] = name
    return values, name


def changed_params(params: Sequence[Param], existing: dict[str, str]) -> list[dict[str, str]]:
    """The params whose key was logged with another value, as MLflow lists them."""
    return [
        {"key": p.key, "old_value": existing[p.key], "new_value": p.value}
        for p in params
        if p.key in existing and existing[p.key] != p.value
    ]


def _refuse_changes(run_id: str, params: Sequence[Param], existing: dict[str, str]) -> None:
    changed = changed_params(params, existing)
    if changed:
        raise MlflowException(
            "Changing param values is not allowed. Params were already"
            f" logged='{changed}' for run ID='{run_id}'.",
            INVALID_PARAMETER_VALUE,
        )


_METRICS = """
INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid)
SELECT k, v, t, s, n, :run_id
FROM unnest(CAST(:keys AS text[]), CAST(:values AS float8[]), CAST(:timestamps AS bigint[]),
            CAST(:steps AS bigint[]), CAST(:nans AS boolean[])) AS u(k, v, t, s, n)
ON CONFLICT DO NOTHING
"""

# Per key, the batch's greatest (step, timestamp, value), the first of equals (ordinality);
# it replaces the stored one only when strictly greater. Rows go in key order, so concurrent
# batches lock the same keys in the same order.
_LATEST = """
INSERT INTO latest_metrics AS old (key, value, timestamp, step, is_nan, run_uuid)
SELECT DISTINCT ON (k) k, v, t, s, n, :run_id
FROM unnest(CAST(:keys AS text[]), CAST(:values AS float8[]), CAST(:timestamps AS bigint[]),
            CAST(:steps AS bigint[]), CAST(:nans AS boolean[]))
     WITH ORDINALITY AS u(k, v, t, s, n, i)
ORDER BY k, s DESC, t DESC, v DESC, i
ON CONFLICT (key, run_uuid) DO UPDATE
SET value = EXCLUDED.value, timestamp = EXCLUDED.timestamp, step = EXCLUDED.step,
    is_nan = EXCLUDED.is_nan
WHERE (EXCLUDED.step, EXCLUDED.timestamp, EXCLUDED.value) > (old.step, old.timestamp, old.value)
"""

_PARAMS = """
INSERT INTO params (key, value, run_uuid)
SELECT k, v, :run_id FROM unnest(CAST(:keys AS text[]), CAST(:values AS text[])) AS u(k, v)
ON CONFLICT DO NOTHING
RETURNING key
"""

_TAGS = """
INSERT INTO tags (key, value, run_uuid)
SELECT k, v, :run_id FROM unnest(CAST(:keys AS text[]), CAST(:values AS text[])) AS u(k, v)
ORDER BY k
ON CONFLICT (key, run_uuid) DO UPDATE SET value = EXCLUDED.value
"""


class TrackingStore(SqlAlchemyStore):
    """MLflow's store with ``log_batch`` and metric logging in one transaction each, on an
    engine that pings only connections back from idleness (:mod:`mlflow_stack.stores.engine`)."""

    _engine_map: ClassVar[dict[str, sqlalchemy.Engine]] = {}  # not shared with MLflow's store
    _engine_map_lock = threading.Lock()

    @classmethod
    def _get_or_create_engine(cls, db_uri: str) -> sqlalchemy.Engine:
        """MLflow's hook for the store's engine (one per URI and process, as in MLflow)."""
        with cls._engine_map_lock:
            if db_uri not in cls._engine_map:
                cls._engine_map[db_uri] = create_engine(db_uri)
            return cls._engine_map[db_uri]

    # -- reads: a run or a page of runs in a constant number of statements ------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: which experiment each run this process read or created belongs to
        self.owners = RunOwners()
        super().__init__(*args, **kwargs)

    def get_run(self, run_id: str) -> Run:
        """The run; while MLflow authorizes a request on it, a run whose experiment is known
        answers that at once and reads the rest only if asked (:mod:`~.owners`)."""
        if authorizing():
            experiment_id = self.owners.experiment_of(run_id)
            if experiment_id is not None:
                return AuthorizingRun(run_id, experiment_id, lambda: self._read_run(run_id))
        return self._read_run(run_id)

    def _read_run(self, run_id: str) -> Run:
        run = self._load_run(run_id)
        self.owners.remember(run)
        return run

    def _load_run(self, run_id: str) -> Run:
        with self.ManagedSessionMaker() as session:
            loaded = load_runs(session, [run_id]).get(run_id)
            if loaded is None:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            run = loaded.run
            datasets, model_inputs, model_outputs = [], [], []
            if loaded.has_datasets:
                datasets = self._get_run_inputs(run_uuids=[run_id], session=session)[0]
            if loaded.has_models:
                model_inputs = self._get_model_inputs(run_id, session)
                model_outputs = self._get_model_outputs(run_id, session)
            return Run(
                run.info,
                run.data,
                RunInputs(dataset_inputs=datasets, model_inputs=model_inputs),
                RunOutputs(model_outputs),
            )

    def _search_runs(  # noqa: PLR0917 - MLflow's signature
        self,
        experiment_ids: list[str],
        filter_string: str | None,
        run_view_type: int,
        max_results: int | None,
        order_by: list[str] | None,
        page_token: str | None,
    ) -> tuple[list[Run], str | None]:
        self._validate_max_results_param(max_results, allow_null=True)
        stages = set(LifecycleStage.view_type_to_stages(run_view_type))
        with self.ManagedSessionMaker() as session:
            page = page_of_ids(
                session,
                experiment_ids=experiment_ids,
                filter_string=filter_string,
                stages=stages,
                max_results=max_results,
                order_by=order_by,
                page_token=page_token,
                dialect=self._get_dialect(),
                filter_experiment_ids=self._filter_experiment_ids,
            )
            if page is not None:
                run_ids = page.run(session)
                loaded = load_runs(session, run_ids)
                runs = self._search_page(session, [loaded[i] for i in run_ids if i in loaded])
        if page is None:  # a dataset filter: MLflow's search
            return super()._search_runs(
                experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
            )
        token = None
        if max_results is not None and len(run_ids) == max_results + 1:
            token = SearchUtils.create_page_token(page.offset + max_results)
            runs = runs[:max_results]
        return runs, token

    def _search_page(self, session: Any, page: list[LoadedRun]) -> list[Run]:
        """The page's runs with their dataset inputs and model outputs, as MLflow's search
        returns them (no model inputs), loaded only for the runs that have any."""
        with_datasets = [item.run.info.run_id for item in page if item.has_datasets]
        with_models = [item.run.info.run_id for item in page if item.has_models]
        datasets = {}
        if with_datasets:
            found = self._get_run_inputs(run_uuids=with_datasets, session=session)
            datasets = dict(zip(with_datasets, found, strict=True))
        outputs = {}
        if with_models:
            outputs = self._get_model_outputs_bulk(run_ids=with_models, session=session)
        return [
            Run(
                item.run.info,
                item.run.data,
                RunInputs(dataset_inputs=datasets.get(item.run.info.run_id, [])),
                RunOutputs(outputs.get(item.run.info.run_id, [])),
            )
            for item in page
        ]

    # -- writes ------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        user_id: str,
        start_time: int | None,
        tags: list[RunTag] | None,
        run_name: str | None,
    ) -> Run:
        """MLflow's ``create_run`` in one session: MLflow reads the experiment in a second
        session (a second pooled connection) and, after adding the run, queries the dataset
        inputs of the run it has just created (there are none). The checks, the name, the
        tags and every error are MLflow's."""
        with self.ManagedSessionMaker(read_only=False) as session:
            experiment = self._get_experiment(session, experiment_id, ViewType.ALL)
            self._check_experiment_is_active(experiment)
            run_id = uuid.uuid4().hex
            artifact_location = append_to_uri_path(
                experiment.artifact_location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME
            )
            tags = tags.copy() if tags else []
            run_name_tag = _get_run_name_from_tags(tags)
            if run_name and run_name_tag and (run_name != run_name_tag):
                raise MlflowException(
                    "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                    f"different values (run_name='{run_name}', mlflow.runName='{run_name_tag}').",
                    INVALID_PARAMETER_VALUE,
                )
            run_name = run_name or run_name_tag or _generate_random_name()
            if not run_name_tag:
                tags.append(RunTag(key=MLFLOW_RUN_NAME, value=run_name))
            row = SqlRun(
                name=run_name,
                artifact_uri=artifact_location,
                run_uuid=run_id,
                experiment_id=experiment_id,
                source_type=SourceType.to_string(SourceType.UNKNOWN),
                source_name="",
                entry_point_name="",
                user_id=user_id,
                status=RunStatus.to_string(RunStatus.RUNNING),
                start_time=start_time,
                end_time=None,
                deleted_time=None,
                source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE,
            )
            row.tags = [SqlTag(key=tag.key, value=tag.value) for tag in tags]
            session.add(row)
            run = row.to_mlflow_entity()
            # MLflow's inputs query flushed the run here, as an autoflush: a database refusal
            # (a tag key given twice) is raised now, with the very words MLflow's has.
            session._autoflush()
        created = Run(run.info, run.data, RunInputs(dataset_inputs=[]))
        self.owners.remember(created)
        return created

    def _hard_delete_run(self, run_id: str) -> None:
        self.owners.forget(run_id)
        super()._hard_delete_run(run_id)
        self.owners.forget(run_id)

    def _hard_delete_experiment(self, experiment_id: str) -> None:
        self.owners.forget_all()
        super()._hard_delete_experiment(experiment_id)
        self.owners.forget_all()

    def log_batch(
        self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]
    ) -> None:
        _validate_run_id(run_id)
        metrics, params, tags = _validate_batch_log_data(metrics, params, tags)
        _validate_batch_log_limits(metrics, params, tags)
        _validate_param_keys_unique(params)
        experiment_id = self._run_with_deadlock_retry(
            self._log_batch_once, run_id, metrics, params, tags
        )
        if any(metric.model_id is not None for metric in metrics):
            self._log_model_metrics(run_id, metrics, experiment_id=experiment_id)

    def _log_batch_once(
        self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]
    ) -> str:
        with self.ManagedSessionMaker(read_only=False) as session:
            experiment_id = self._active_run(session, run_id)
            try:
                self._insert_params(session, run_id, params)
                self._insert_metrics(session, run_id, metric_rows(metrics))
                self._upsert_tags(session, run_id, tags)
            except (MlflowException, sqlalchemy.exc.SQLAlchemyError):
                raise  # MLflow's own, or the managed session's answer to a database error
            except Exception as error:  # MLflow's log_batch answers the same
                raise MlflowException(error, INTERNAL_ERROR) from error
            return experiment_id

    def log_param(self, run_id: str, param: Param) -> None:
        """MLflow's ``log_param`` in three statements: the run, an insert that leaves a logged
        key alone, and (only when it did) that key's value, refused with MLflow's message if it
        differs. MLflow's reads the run with its relations, looks the param up, inserts it
        through the ORM and, on a conflict, loads every param of the run."""
        param = _validate_param(param.key, param.value)
        with self.ManagedSessionMaker(read_only=False) as session:
            self._active_run(session, run_id)
            inserted = session.execute(
                sqlalchemy.text(_PARAMS),
                {"run_id": run_id, "keys": [param.key], "values": [param.value]},
            ).scalars()
            if inserted.all():
                return
            old = self._existing_params(session, run_id, [param.key]).get(param.key)
            if old is not None and old != param.value:
                raise MlflowException(
                    f"Changing param values is not allowed. Param with key='{param.key}' was"
                    f" already logged with value='{old}' for run ID='{run_id}'. Attempted"
                    f" logging new value '{param.value}'.",
                    INVALID_PARAMETER_VALUE,
                )

    def _log_metrics_once(self, run_id: str, metrics: list[Metric]) -> None:
        single = len(metrics) == 1
        for index, metric in enumerate(metrics):
            _validate_metric(
                metric.key,
                metric.value,
                metric.timestamp,
                metric.step,
                path="" if single else f"metrics[{index}]",
            )
        rows = metric_rows(metrics)
        with self.ManagedSessionMaker(read_only=False) as session:
            self._active_run(session, run_id)
            self._insert_metrics(session, run_id, rows)

    # -- one statement each ---------------------------------------------------------------

    def _active_run(self, session: Any, run_id: str) -> str:
        """The run's experiment id, after MLflow's checks that it exists and is active."""
        found = session.execute(
            sqlalchemy.select(SqlRun.lifecycle_stage, SqlRun.experiment_id).where(
                SqlRun.run_uuid == run_id
            )
        ).all()
        if not found:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        ((stage, experiment_id),) = found  # run_uuid is the primary key
        if stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )
        return str(experiment_id)

    @staticmethod
    def _existing_params(session: Any, run_id: str, keys: list[str]) -> dict[str, str]:
        rows = session.execute(
            sqlalchemy.select(SqlParam.key, SqlParam.value).where(
                SqlParam.run_uuid == run_id, SqlParam.key.in_(keys)
            )
        )
        return dict(rows.all())  # not dict(rows): a Result has keys(), the column names

    def _insert_params(self, session: Any, run_id: str, params: list[Param]) -> None:
        if not params:
            return
        existing = self._existing_params(session, run_id, [p.key for p in params])
        _refuse_changes(run_id, params, existing)
        new = [p for p in params if p.key not in existing]
        if not new:
            return
        inserted = set(
            session.execute(
                sqlalchemy.text(_PARAMS),
                {"run_id": run_id, "keys": [p.key for p in new], "values": [p.value for p in new]},
            ).scalars()
        )
        raced = [p for p in new if p.key not in inserted]  # another writer's, meanwhile
        if raced:
            _refuse_changes(
                run_id, raced, self._existing_params(session, run_id, [p.key for p in raced])
            )

    @staticmethod
    def _insert_metrics(session: Any, run_id: str, rows: list[MetricRow]) -> None:
        if not rows:
            return
        keys, values, timestamps, steps, nans = (list(column) for column in zip(*rows, strict=True))
        arrays = {
            "run_id": run_id,
            "keys": keys,
            "values": values,
            "timestamps": timestamps,
            "steps": steps,
            "nans": nans,
        }
        session.execute(sqlalchemy.text(_METRICS), arrays)
        session.execute(sqlalchemy.text(_LATEST), arrays)

    @staticmethod
    def _upsert_tags(session: Any, run_id: str, tags: list[RunTag]) -> None:
        values, name = final_tags(tags)
        if not values:
            return
        if name is not None:
            session.execute(
                sqlalchemy.update(SqlRun).where(SqlRun.run_uuid == run_id).values(name=name)
            )
        session.execute(
            sqlalchemy.text(_TAGS),
            {"run_id": run_id, "keys": list(values), "values": list(values.values())},
        )
