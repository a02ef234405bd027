"""Runs, params, tags and metrics round-trip through the server and come back point by point."""

from __future__ import annotations

import time

from mlflow.entities import Metric, Param, RunTag

from tests.conftest import LiveStack


def test_run_data_round_trips(stack: LiveStack, client, experiment_id: str) -> None:
    run = client.create_run(experiment_id, tags={"developer": "ada"}, run_name="roundtrip")
    run_id = run.info.run_id
    client.log_param(run_id, "learning_rate", "0.01")
    client.set_tag(run_id, "model", "linear")
    t0 = int(time.time() * 1000)
    curve = [(step, 1.0 / (step + 1), t0 + 10 * step) for step in range(25)]
    for step, value, ts in curve:
        client.log_metric(run_id, "loss", value, timestamp=ts, step=step)
    client.log_batch(
        run_id,
        metrics=[Metric("accuracy", 0.5 + i / 100, t0 + i, i) for i in range(20)],
        params=[Param(f"p{i}", str(i)) for i in range(30)],
        tags=[RunTag("stage", "batch"), RunTag("dataset", "trips-2026-01")],
    )
    client.set_terminated(run_id, status="FINISHED", end_time=t0 + 60_000)

    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.end_time == t0 + 60_000
    assert got.info.run_name == "roundtrip"
    assert got.data.params["learning_rate"] == "0.01"
    assert {got.data.params[f"p{i}"] for i in range(30)} == {str(i) for i in range(30)}
    assert got.data.tags["developer"] == "ada"
    assert got.data.tags["model"] == "linear"
    assert got.data.tags["dataset"] == "trips-2026-01"
    assert got.data.metrics["loss"] == curve[-1][1]  # the latest value

    history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value, m.timestamp) for m in history] == curve
    accuracy = sorted(client.get_metric_history(run_id, "accuracy"), key=lambda m: m.step)
    assert [m.value for m in accuracy] == [0.5 + i / 100 for i in range(20)]


def test_search_runs_filters_and_orders(stack: LiveStack, client, experiment_id: str) -> None:
    scores = {"r1": (0.30, "a"), "r2": (0.90, "a"), "r3": (0.55, "b"), "r4": (0.70, "a")}
    ids = {}
    for name, (score, kind) in scores.items():
        run = client.create_run(experiment_id, run_name=name)
        client.log_param(run.info.run_id, "kind", kind)
        client.log_metric(run.info.run_id, "score", score)
        client.set_terminated(run.info.run_id)
        ids[run.info.run_id] = name

    found = client.search_runs(
        [experiment_id],
        filter_string="params.kind = 'a' and metrics.score > 0.5",
        order_by=["metrics.score DESC"],
    )
    assert [ids[r.info.run_id] for r in found] == ["r2", "r4"]
    ascending = client.search_runs([experiment_id], order_by=["metrics.score ASC"])
    assert [ids[r.info.run_id] for r in ascending] == ["r1", "r3", "r4", "r2"]
    assert client.search_runs([experiment_id], filter_string="params.kind = 'zzz'") == []


def test_rows_are_really_in_postgresql(stack: LiveStack, client, experiment_id: str) -> None:
    run = client.create_run(experiment_id, run_name="in-postgres")
    run_id = run.info.run_id
    for step in range(5):
        client.log_metric(run_id, "rmse", 10.0 - step, step=step)
    client.log_param(run_id, "alpha", "0.3")
    client.set_terminated(run_id, status="FINISHED")

    with stack.pg() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT name, status, experiment_id FROM runs WHERE run_uuid = %s", (run_id,)
        )
        assert cursor.fetchone() == ("in-postgres", "FINISHED", int(experiment_id))
        cursor.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'rmse' ORDER BY step",
            (run_id,),
        )
        assert cursor.fetchall() == [(s, 10.0 - s) for s in range(5)]
        cursor.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'alpha'", (run_id,))
        assert cursor.fetchone() == ("0.3",)
    conn.close()
