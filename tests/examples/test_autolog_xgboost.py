"""autolog_xgboost.py: autologging records params, per-round metrics and the model without
explicit calls; the script adds the feature importance with a readable plot."""

from __future__ import annotations

import json
import math
import struct

from tests.conftest import LiveStack
from tests.examples.conftest import Jobs
from tests.examples.helpers import bucket_objects, bucket_read, mlmodel, model_prefix, run_prefix


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_autologging_records_params_metrics_importance_and_model(
    jobs: Jobs, client, stack: LiveStack
) -> None:
    finished = jobs.autolog.result().ok()
    run_id = finished.report["run_id"]
    run = client.get_run(run_id)
    experiment_id = run.info.experiment_id
    assert client.get_experiment(experiment_id).name == jobs.experiments["autolog"]
    assert run.data.tags["developer"] == "ada"
    assert run.data.tags["model"] == "xgboost"

    # xgb.train's arguments, logged by autologging
    params = run.data.params
    assert params["max_depth"] == "6"
    assert params["learning_rate"] == "0.3"
    assert params["num_boost_round"] == "60"
    assert params["early_stopping_rounds"] == "10"
    assert params["objective"] == "reg:squarederror"

    # the validation RMSE of every round, then the best one; and where training stopped
    history = sorted(client.get_metric_history(run_id, "validation-rmse"), key=lambda m: m.step)
    metrics = run.data.metrics
    rounds = int(metrics["stopped_iteration"]) + 1
    assert len(history) == rounds + 1 <= 61
    assert history[-2].value < history[0].value / 2  # it learned
    best = int(metrics["best_iteration"])
    assert history[-1].value == history[best].value == metrics["validation-rmse"]
    assert math.isfinite(metrics["validation-rmse"])
    assert float(finished.report["validation_rmse"]) == round(metrics["validation-rmse"], 3)

    # feature importance: JSON and plot, in the run's artifacts and in the bucket
    prefix = run_prefix(experiment_id, run_id)
    stored = bucket_objects(stack, prefix)
    assert {"feature_importance_weight.json", "feature_importance_weight.png"} <= set(stored)
    assert {item.path for item in client.list_artifacts(run_id)} >= {
        "feature_importance_weight.json",
        "feature_importance_weight.png",
    }
    importance = json.loads(bucket_read(stack, prefix + "feature_importance_weight.json"))
    assert importance["trip_distance"] > 0
    assert any(name.startswith("PU_DO=") for name in importance)
    # every feature in the JSON, the top 20 only in the plot: a readable height, not one row
    # per one-hot zone pair (autologging's own plot grew 0.1 inch per feature)
    assert len(importance) > 40
    width, height = png_size(bucket_read(stack, prefix + "feature_importance_weight.png"))
    assert (width, height) == (700, 150 + 30 * 20)

    # the booster, as an MLflow model with a signature, and the datasets
    (output,) = run.outputs.model_outputs
    assert finished.report["logged_model"] == f"models:/{output.model_id}"
    files = bucket_objects(stack, model_prefix(experiment_id, output.model_id))
    assert {"MLmodel", "model.ubj", "input_example.json"} <= set(files)
    described = mlmodel(stack, experiment_id, output.model_id)
    assert "xgboost" in described["flavors"]
    assert "trip_distance" in described["signature"]["inputs"]
    contexts = {tag.value for entry in run.inputs.dataset_inputs for tag in entry.tags}
    assert contexts == {"train", "eval"}
