"""Evaluation against a baseline: score a candidate model and a simple baseline on the held-out
test month with ``mlflow.models.evaluate``, then apply metric thresholds with
``mlflow.validate_evaluation_results``.

The baseline is the rule of thumb "minutes per mile": a linear regression on ``trip_distance``
alone, fitted on the training month. The candidate must reach ``--max-rmse`` and beat the
baseline's RMSE by ``--min-improvement`` (relative). The evaluation run holds the candidate's
metrics, a nested ``baseline`` run the baseline's, and the verdict is recorded on the evaluation
run as the tag ``validation-status`` (``passed`` or ``failed``), the metric
``validation_passed`` (1 or 0) and, when it fails, the tag ``validation-reason``.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import mlflow
import mlflow.models
import numpy as np
import pandas as pd
from mlflow.models import MetricThreshold
from mlflow.models.evaluation.base import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException
from sklearn.linear_model import LinearRegression

import common
import taxi_data

METRIC = "root_mean_squared_error"
BASELINE_METRIC = f"baseline_{METRIC}"
BASELINE = "linear regression on trip_distance"
EXAMPLE = (
    "Example: python examples/evaluate_candidate.py "
    "--model-uri models:/nyc-taxi-duration@champion --max-rmse 6"
)
#: No SHAP explanations: the shap package is not needed (nor installed) for these metrics.
EVALUATOR_CONFIG = {"log_model_explainability": False}


def evaluate(model: Any, data: pd.DataFrame) -> EvaluationResult:
    """The default regressor metrics of ``model`` on ``data``, logged to the active run."""
    return mlflow.models.evaluate(
        model=model,
        data=data,
        targets=taxi_data.TARGET,
        model_type="regressor",
        evaluator_config=EVALUATOR_CONFIG,
    )


def distance_baseline(splits: taxi_data.Splits) -> Any:
    """Minutes per mile, fitted on the training month: the model to beat."""
    fitted = LinearRegression().fit(splits.train[["trip_distance"]], splits.target("train"))

    def predict(features: pd.DataFrame) -> np.ndarray:
        return fitted.predict(features[["trip_distance"]])

    return predict


@click.command(cls=common.ExampleCommand, epilog=EXAMPLE)
@click.option(
    "--model-uri",
    required=True,
    help="The candidate: models:/<name>@<alias>, models:/<name>/<version>, "
    "runs:/<run id>/model ...",
)
@click.option(
    "--experiment-name",
    default="nyc-taxi-evaluation",
    show_default=True,
    help="Experiment to log the evaluation to (created if missing).",
)
@click.option("--run-name", default=None, help="Name of the evaluation run.")
@click.option(
    "--max-rmse",
    type=float,
    default=6.0,
    show_default=True,
    help="Highest test RMSE (minutes) the candidate may have.",
)
@click.option(
    "--min-improvement",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of the baseline's RMSE the candidate must improve on.",
)
@click.option(
    "--fail-on-reject",
    is_flag=True,
    help="Exit with code 1 when the candidate fails (for CI gates).",
)
@common.data_options(seed_help="Seed of the generated trips.")
def main(
    *,
    model_uri: str,
    experiment_name: str,
    run_name: str | None,
    max_rmse: float,
    min_improvement: float,
    fail_on_reject: bool,
    rows: int,
    seed: int,
) -> None:
    """Evaluate a candidate model and a baseline on the test month with MLflow's evaluation API,
    apply the thresholds, and record whether the candidate passes."""
    common.quiet_known_warnings()
    client = common.connect()
    experiment_id = common.ensure_experiment(client, experiment_name)
    splits = taxi_data.load_splits(rows, seed)
    data = splits.test[[*taxi_data.FEATURES, taxi_data.TARGET]]
    thresholds = {
        METRIC: MetricThreshold(
            threshold=max_rmse, min_relative_change=min_improvement, greater_is_better=False
        )
    }

    tags = {"candidate": model_uri, "test_month": taxi_data.TEST_MONTH}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        candidate = evaluate(model_uri, data)
        with mlflow.start_run(experiment_id=experiment_id, run_name="baseline", nested=True):
            baseline = evaluate(distance_baseline(splits), data)
        try:
            mlflow.validate_evaluation_results(thresholds, candidate, baseline)
            passed, reason = True, ""
        except ModelValidationFailedException as failure:
            passed, reason = False, common.one_line(failure.message, limit=1000)
        verdict = {"validation-status": "passed" if passed else "failed"}
        if reason:
            verdict["validation-reason"] = reason
        common.log_batch(
            client,
            run.info.run_id,
            params={"max_rmse": max_rmse, "min_improvement": min_improvement, "baseline": BASELINE},
            metrics={"validation_passed": int(passed), BASELINE_METRIC: baseline.metrics[METRIC]},
            tags=verdict,
        )

    common.report(
        run_id=run.info.run_id,
        candidate=model_uri,
        candidate_rmse=f"{candidate.metrics[METRIC]:.3f}",
        baseline_rmse=f"{baseline.metrics[METRIC]:.3f}",
        validation="passed" if passed else f"failed: {reason}",
    )
    if fail_on_reject and not passed:
        raise common.ExampleError(f"the candidate {model_uri} failed validation")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
