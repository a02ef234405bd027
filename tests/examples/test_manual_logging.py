"""manual_logging.py: tags, params, a training curve, rmse, artifacts, datasets and the model."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow.pyfunc
import pytest

from examples import taxi_data
from tests.conftest import LiveStack
from tests.examples.conftest import ROWS, SEED, Jobs
from tests.examples.helpers import (
    bucket_objects,
    bucket_read,
    mean_prediction_rmse,
    mlmodel,
    model_prefix,
    run_prefix,
    sane_rmse,
)

CURVE_STEPS = 4


def test_the_run_has_its_tags_params_curve_and_an_rmse_better_than_the_mean(
    jobs: Jobs, client
) -> None:
    finished = jobs.manual["random-forest"].result().ok()
    run = client.get_run(finished.report["run_id"])
    experiment = client.get_experiment_by_name(jobs.experiments["manual-random-forest"])
    assert run.info.experiment_id == experiment.experiment_id == finished.report["experiment_id"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["developer"] == "ada"
    assert run.data.tags["model"] == "random-forest"

    params = run.data.params
    assert params["n_estimators"] == "30"
    assert params["max_depth"] == "10"
    assert params["data_seed"] == SEED
    assert params["rows_per_month"] == ROWS
    train_path, val_path = Path(params["train_path"]), Path(params["val_path"])
    assert train_path.parent == val_path.parent == jobs.data_dir
    assert taxi_data.TRAIN_MONTH in train_path.name
    assert taxi_data.VAL_MONTH in val_path.name

    rmse = run.data.metrics["rmse"]
    assert sane_rmse(rmse, mean_prediction_rmse(train_path, val_path))
    assert float(finished.report["rmse"]) == pytest.approx(rmse, abs=1e-3)

    # The training curve: train and validation RMSE at growing numbers of training rows.
    curves = {
        name: sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        for name in ("train_rmse", "val_rmse")
    }
    for history in curves.values():
        steps = [metric.step for metric in history]
        assert len(set(steps)) == CURVE_STEPS == len(steps)
        assert steps[-1] == int(params["train_rows"])
    assert curves["val_rmse"][-1].value == pytest.approx(rmse)
    assert curves["val_rmse"][-1].value < curves["val_rmse"][0].value  # more data helps


def test_the_datasets_artifacts_and_model_are_recorded(
    jobs: Jobs, client, stack: LiveStack
) -> None:
    finished = jobs.manual["random-forest"].result().ok()
    run_id = finished.report["run_id"]
    run = client.get_run(run_id)
    experiment_id = run.info.experiment_id

    datasets = {
        tag.value: entry.dataset
        for entry in run.inputs.dataset_inputs
        for tag in entry.tags
        if tag.key == "mlflow.data.context"
    }
    assert set(datasets) == {"training", "validation"}
    assert datasets["training"].name == f"green-taxi-{taxi_data.TRAIN_MONTH}"
    assert run.data.params["train_path"] in datasets["training"].source
    assert "PU_DO" in datasets["validation"].schema

    # The preprocessor and the figure: listed by the server, stored in the bucket.
    listed = {
        item.path
        for folder in ("preprocessor", "plots")
        for item in client.list_artifacts(run_id, folder)
    }
    assert listed == {"preprocessor/preprocessor.b", "plots/predicted_vs_actual.png"}
    stored = bucket_objects(stack, run_prefix(experiment_id, run_id))
    assert set(stored) == listed
    figure = bucket_read(stack, run_prefix(experiment_id, run_id) + "plots/predicted_vs_actual.png")
    assert figure.startswith(b"\x89PNG")
    blob = bucket_read(stack, run_prefix(experiment_id, run_id) + "preprocessor/preprocessor.b")
    preprocessor = pickle.loads(blob)  # noqa: S301 - the artifact this very test suite produced
    vectorizer = preprocessor.named_steps["vectorizer"]
    assert "trip_distance" in vectorizer.feature_names_
    assert any(name.startswith("PU_DO=") for name in vectorizer.feature_names_)

    # The model: a logged model of the run, with a signature and an input example.
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert (logged.source_run_id, logged.name) == (run_id, "model")
    assert {m.key: m.value for m in logged.metrics}["rmse"] == pytest.approx(
        run.data.metrics["rmse"]
    )
    files = bucket_objects(stack, model_prefix(experiment_id, output.model_id))
    assert {"MLmodel", "model.skops", "input_example.json", "requirements.txt"} <= set(files)
    described = mlmodel(stack, experiment_id, output.model_id)
    assert described["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert '"name": "PU_DO"' in described["signature"]["inputs"]
    assert '"name": "trip_distance"' in described["signature"]["inputs"]
    assert described["saved_input_example_info"]["type"] == "dataframe"

    # ... and it predicts what the run says it does.
    splits = taxi_data.load_splits(int(ROWS), int(SEED))
    model = mlflow.pyfunc.load_model(finished.report["model_uri"])
    predicted = model.predict(splits.features("val"))
    rmse = float(((predicted - splits.target("val")) ** 2).mean() ** 0.5)
    assert rmse == pytest.approx(run.data.metrics["rmse"], rel=1e-6)
