"""Autologging: train an XGBoost booster with ``mlflow.xgboost.autolog()`` switched on.

``xgb.train`` runs with a validation set and early stopping, and MLflow records on its own the
booster's parameters, the validation RMSE of every boosting round, the best and stopped
iterations, the feature importance (JSON and plot), the datasets and the model with its
signature and an input example. The only explicit call logs the fitted ``DictVectorizer``, which
turns trips into the booster's features.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from pathlib import Path
from typing import Any

import click
import mlflow
import mlflow.xgboost
import pandas as pd
import xgboost as xgb

import common
import taxi_data
import trip_model

EXAMPLE = "Example: python examples/autolog_xgboost.py --experiment-name nyc-taxi-autolog"


def matrix(prep: Any, split: pd.DataFrame) -> xgb.DMatrix:
    """A split as the booster sees it: one named column per ``DictVectorizer`` feature."""
    features = pd.DataFrame(
        prep.transform(split[taxi_data.FEATURES]).toarray(),
        columns=prep.named_steps["vectorizer"].get_feature_names_out(),
    )
    return xgb.DMatrix(features, label=split[taxi_data.TARGET].to_numpy())


@click.command(cls=common.ExampleCommand, epilog=EXAMPLE)
@click.option(
    "--experiment-name",
    default="nyc-taxi-autolog",
    show_default=True,
    help="Experiment to log the run to (created if missing).",
)
@click.option("--run-name", default=None, help="Name of the run (default: MLflow picks one).")
@click.option("--max-depth", type=int, default=6, show_default=True, help="Tree depth.")
@click.option("--learning-rate", type=float, default=0.3, show_default=True, help="Step size.")
@click.option(
    "--num-boost-round", type=int, default=300, show_default=True, help="Most boosting rounds."
)
@click.option(
    "--early-stopping-rounds",
    type=int,
    default=10,
    show_default=True,
    help="Stop after this many rounds without a better validation RMSE.",
)
@common.training_options(
    seed_help="Seed of the generated trips and of the booster.",
    developer_help="Value of the run's 'developer' tag.",
)
def main(
    *,
    experiment_name: str,
    run_name: str | None,
    max_depth: int,
    learning_rate: float,
    num_boost_round: int,
    early_stopping_rounds: int,
    developer: str,
    rows: int,
    seed: int,
    data_dir: Path,
) -> None:
    """Train an XGBoost model on the trips with MLflow's autologging doing the logging."""
    common.quiet_known_warnings()
    client = common.connect()
    experiment_id = common.ensure_experiment(client, experiment_name)
    splits = taxi_data.load_splits(rows, seed, data_dir)
    prep = trip_model.preprocessor().fit(splits.features("train"))

    # On before the DMatrix is built, so that autologging can keep an input example.
    mlflow.xgboost.autolog(log_input_examples=True, log_datasets=True, silent=True)
    train, valid = matrix(prep, splits.train), matrix(prep, splits.val)
    params = {
        "objective": "reg:squarederror",
        "max_depth": max_depth,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    tags = {"developer": developer, "model": "xgboost"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        booster = xgb.train(
            params,
            train,
            num_boost_round=num_boost_round,
            evals=[(valid, "validation")],
            early_stopping_rounds=early_stopping_rounds,
            verbose_eval=False,
        )
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "preprocessor.b"
            with path.open("wb") as handle:
                pickle.dump(prep, handle)
            mlflow.log_artifact(str(path), artifact_path="preprocessor")
    mlflow.xgboost.autolog(disable=True)
    model = mlflow.last_logged_model()

    common.report(
        experiment_id=experiment_id,
        run_id=run.info.run_id,
        logged_model=model.model_uri if model else "none",
        best_iteration=booster.best_iteration,
        validation_rmse=f"{booster.best_score:.3f}",
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
