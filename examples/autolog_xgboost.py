"""Autologging: train an XGBoost booster with ``mlflow.xgboost.autolog()`` switched on.

``xgb.train`` runs with a validation set and early stopping, and MLflow records on its own the
booster's parameters, the validation RMSE of every boosting round, the best and stopped
iterations, the datasets and the model with its signature and an input example. Two things are
logged explicitly: the fitted ``DictVectorizer``, which turns trips into the booster's
features, and the feature importance. Autologging would plot the importance of every feature,
hundreds of one-hot ``PU_DO`` zone pairs on one unreadable axis; here the JSON keeps every
feature and the plot shows the top ``--top-features`` only, under autologging's file names.
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
from matplotlib.figure import Figure

import common
import taxi_data
import trip_model

EXAMPLE = "Example: python examples/autolog_xgboost.py --experiment-name nyc-taxi-autolog"


IMPORTANCE_TYPE = "weight"  # autologging's default: how often a feature splits a tree


def log_feature_importance(booster: xgb.Booster, top: int) -> None:
    """``feature_importance_weight.json`` (every feature) and ``.png`` (the ``top`` ones)."""
    importance = booster.get_score(importance_type=IMPORTANCE_TYPE)
    mlflow.log_dict(importance, f"feature_importance_{IMPORTANCE_TYPE}.json")
    ranked = sorted(importance.items(), key=lambda item: item[1], reverse=True)[:top]
    names = [name for name, _ in reversed(ranked)]  # the most important at the top
    values = [value for _, value in reversed(ranked)]
    fig = Figure(figsize=(7, 1.5 + 0.3 * len(names)))
    ax = fig.subplots()
    ax.barh(range(len(names)), values)
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel(f"Importance ({IMPORTANCE_TYPE}: splits using the feature)")
    ax.set_title(f"Top {len(names)} of {len(importance)} features")
    fig.tight_layout()
    mlflow.log_figure(fig, f"feature_importance_{IMPORTANCE_TYPE}.png")


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
@click.option(
    "--top-features",
    type=click.IntRange(1, 100),
    default=20,
    show_default=True,
    help="Features shown in the importance plot (the JSON lists them all).",
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
    top_features: int,
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
    # importance_types=[]: the importance is logged below, with a readable plot.
    mlflow.xgboost.autolog(
        log_input_examples=True, log_datasets=True, importance_types=[], silent=True
    )
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
        log_feature_importance(booster, top_features)
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
