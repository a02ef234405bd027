"""Seed many runs straight into a tracking database, for the search-at-scale workload.

Creating 100,000 runs through the REST API would take hours on stock MLflow, so rows go
in directly, shaped exactly as MLflow writes them (runs, params, tags, metrics and
latest_metrics), with the experiment itself created through the API. PostgreSQL gets COPY,
sqlite executemany. Both are ANALYZEd afterwards, as autovacuum/analyze would have done on a
server that grew to this size.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy

FAMILIES = ("xgboost", "sklearn", "lightgbm", "torch")
TEAMS = ("forecasting", "pricing", "search", "fraud", "ranking")
COLUMNS = {
    "runs": ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
             "status", "start_time", "end_time", "source_version", "lifecycle_stage",
             "artifact_uri", "experiment_id"),
    "params": ("key", "value", "run_uuid"),
    "tags": ("key", "value", "run_uuid"),
    "metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
}  # fmt: skip


def _rows(
    experiment_id: int, artifact_root: str, start: int, count: int, rng: random.Random
) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    base = 1_767_225_600_000  # 2026-01-01
    for i in range(start, start + count):
        run = uuid.UUID(int=rng.getrandbits(128)).hex
        t = base + i * 60_000
        rows["runs"].append((run, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", t,
                             t + 30_000, "", "active", f"{artifact_root}/{run}/artifacts",
                             experiment_id))  # fmt: skip
        family = FAMILIES[i % len(FAMILIES)]
        params = {
            "family": family,
            "learning_rate": f"{rng.choice((0.01, 0.03, 0.1, 0.3))}",
            "max_depth": str(rng.randint(2, 12)),
            "n_estimators": str(rng.choice((100, 200, 500, 1000))),
            "dataset": f"trips-2026-{1 + i % 12:02d}",
        }
        rows["params"] += [(k, v, run) for k, v in params.items()]
        rows["tags"] += [("team", TEAMS[i % len(TEAMS)], run), ("mlflow.runName", f"run-{i}", run)]
        for key, value in (
            ("rmse", rng.uniform(2.0, 12.0)),
            ("mae", rng.uniform(1.0, 8.0)),
            ("r2", rng.uniform(0.1, 0.95)),
        ):
            rows["metrics"].append((key, value, t + 30_000, 0, False, run))
            rows["latest_metrics"].append((key, value, t + 30_000, 0, False, run))
    return rows


def _batches(
    experiment_id: int, artifact_root: str, *, start: int, total: int, batch: int, seed: int
) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    rng = random.Random(seed + start)  # noqa: S311 - benchmark data, not secrets
    end = start + total
    for first in range(start, end, batch):
        yield _rows(experiment_id, artifact_root, first, min(batch, end - first), rng)


def seed_runs(
    db_url: str,
    password: str | None,
    *,
    experiment_id: int,
    artifact_root: str,
    total: int,
    start: int = 0,
    batch: int = 10_000,
) -> None:
    """``total`` more runs in the experiment, numbered from ``start`` (an experiment grown in
    steps gets the same runs as one seeded at once)."""
    connect_args = {"password": password} if password else {}
    engine = sqlalchemy.create_engine(db_url, connect_args=connect_args)
    try:
        if engine.dialect.name == "postgresql":
            _seed_postgres(
                engine, experiment_id, artifact_root, start=start, total=total, batch=batch
            )
        else:
            _seed_generic(
                engine, experiment_id, artifact_root, start=start, total=total, batch=batch
            )
    finally:
        engine.dispose()


def _seed_postgres(
    engine: Any, experiment_id: int, root: str, *, start: int, total: int, batch: int
) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            batches = _batches(experiment_id, root, start=start, total=total, batch=batch, seed=7)
            for rows in batches:
                for table, records in rows.items():
                    buffer = io.StringIO()
                    csv.writer(buffer).writerows(records)
                    buffer.seek(0)
                    columns = ", ".join(f'"{c}"' for c in COLUMNS[table])
                    cursor.copy_expert(
                        f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer
                    )
            cursor.execute("ANALYZE runs, params, tags, metrics, latest_metrics")
        raw.commit()
    finally:
        raw.close()


def _seed_generic(
    engine: Any, experiment_id: int, root: str, *, start: int, total: int, batch: int
) -> None:
    with engine.begin() as conn:
        for rows in _batches(experiment_id, root, start=start, total=total, batch=batch, seed=7):
            for table, records in rows.items():
                columns = COLUMNS[table]
                statement = sqlalchemy.text(
                    f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - fixed names
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                )
                conn.execute(statement, [dict(zip(columns, r, strict=True)) for r in records])
        conn.execute(sqlalchemy.text("ANALYZE"))
