"""hyperopt_sweep.py: one parent run, one child per trial, and the best trial retrained."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import LiveStack
from tests.examples.conftest import SWEEP_TRIALS, Jobs
from tests.examples.helpers import bucket_objects, mean_prediction_rmse, model_prefix, sane_rmse

SEARCHED = ("max_depth", "learning_rate", "min_child_weight", "reg_alpha", "reg_lambda")
PARENT = "mlflow.parentRunId"


def test_the_sweep_nests_its_trials_and_retrains_the_best(
    jobs: Jobs, client, stack: LiveStack
) -> None:
    report = jobs.sweep.result().ok().report
    experiment = client.get_experiment_by_name(jobs.experiments["sweep"])
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent_id = report["sweep_run_id"]
    children = [run for run in runs if run.data.tags.get(PARENT) == parent_id]
    top_level = {run.info.run_id for run in runs if PARENT not in run.data.tags}
    assert len(children) == SWEEP_TRIALS == int(report["trials"])
    assert top_level == {parent_id, report["run_id"]}  # the sweep and the retrained model

    for child in children:
        assert child.info.status == "FINISHED"
        assert set(SEARCHED) | {"num_boost_round"} <= set(child.data.params)
        assert math.isfinite(child.data.metrics["rmse"])
    assert len({child.data.params["learning_rate"] for child in children}) == SWEEP_TRIALS

    best = min(children, key=lambda child: child.data.metrics["rmse"])
    parent = client.get_run(parent_id)
    assert report["best_trial_run_id"] == best.info.run_id
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert parent.data.metrics["best_rmse"] == best.data.metrics["rmse"]
    assert parent.data.params["max_evals"] == str(SWEEP_TRIALS)

    retrained = client.get_run(report["run_id"])
    assert retrained.data.tags["sweep_run_id"] == parent_id
    assert retrained.data.tags["best_trial_run_id"] == best.info.run_id
    for name in (*SEARCHED, "num_boost_round"):
        assert retrained.data.params[name] == best.data.params[name], name
    rmse = retrained.data.metrics["rmse"]
    assert rmse == pytest.approx(best.data.metrics["rmse"], rel=0.01)
    baseline = mean_prediction_rmse(
        Path(retrained.data.params["train_path"]), Path(retrained.data.params["val_path"])
    )
    assert sane_rmse(rmse, baseline)

    (output,) = retrained.outputs.model_outputs
    files = bucket_objects(stack, model_prefix(experiment.experiment_id, output.model_id))
    assert {"MLmodel", "model.skops"} <= set(files)
    assert not any(
        child.outputs and child.outputs.model_outputs for child in children
    )  # trials log no models
