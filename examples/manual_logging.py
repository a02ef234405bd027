"""Manual logging: train one trip-duration model and log everything about it explicitly.

The run gets tags (developer, model), params (the model's, and the data's paths, seed and size),
a training curve (train and validation RMSE per step, the step being the number of training rows)
and the final validation ``rmse``; the fitted preprocessor and a predicted-vs-actual figure as
artifacts; the training and validation data with ``mlflow.log_input``; and the model (the
preprocessor and regressor as one scikit-learn pipeline) with a signature and an input example.

    python examples/manual_logging.py --experiment-name nyc-taxi --model random-forest
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from pathlib import Path
from typing import Any

import click
import mlflow
import mlflow.data
import numpy as np
from matplotlib.figure import Figure
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import Metric
from mlflow.utils.time import get_current_time_millis
from sklearn.base import clone
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline

import common
import taxi_data
import trip_model

MODELS = ("linear", "ridge", "random-forest")
CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
EXAMPLE = "Example: python examples/manual_logging.py --experiment-name nyc-taxi --model linear"


def regressor(model: str, alpha: float, n_estimators: int, max_depth: int, seed: int) -> Any:
    if model == "linear":
        return LinearRegression()
    if model == "ridge":
        return Ridge(alpha=alpha)
    return RandomForestRegressor(
        n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1
    )


def model_params(model: str, alpha: float, n_estimators: int, max_depth: int) -> dict[str, Any]:
    if model == "ridge":
        return {"alpha": alpha}
    if model == "random-forest":
        return {"n_estimators": n_estimators, "max_depth": max_depth}
    return {}


def training_curve(
    estimator: Any, splits: taxi_data.Splits, seed: int
) -> tuple[Pipeline, list[Metric]]:
    """Fit on growing shares of the training month, recording train and validation RMSE at each
    step (the number of rows seen); the last fit, on all of it, is the model."""
    order = np.random.default_rng(seed).permutation(len(splits.train))
    history: list[Metric] = []
    for fraction in CURVE_FRACTIONS:  # ends with 1.0: the last model saw the whole month
        rows = splits.train.iloc[order[: int(len(order) * fraction)]]
        model = trip_model.pipeline(clone(estimator))
        model.fit(rows[taxi_data.FEATURES], rows[taxi_data.TARGET])
        now = get_current_time_millis()
        for name, frame in (("train_rmse", rows), ("val_rmse", splits.val)):
            predicted = model.predict(frame[taxi_data.FEATURES])
            value = trip_model.rmse(frame[taxi_data.TARGET], predicted)
            history.append(Metric(name, value, now, len(rows)))
    return model, history


def dataset(splits: taxi_data.Splits, split: str) -> PandasDataset:
    """A split as an MLflow dataset: its features, target and the parquet file it came from."""
    month = {"train": taxi_data.TRAIN_MONTH, "val": taxi_data.VAL_MONTH}[split]
    return mlflow.data.from_pandas(
        getattr(splits, split)[[*taxi_data.FEATURES, taxi_data.TARGET]],
        source=str(splits.paths[month]),
        name=f"green-taxi-{month}",
        targets=taxi_data.TARGET,
    )


def predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray, path: Path) -> None:
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.subplots()
    axes.scatter(actual, predicted, s=4, alpha=0.4)
    top = float(max(actual.max(), predicted.max()))
    axes.plot([0, top], [0, top], color="black", linewidth=1)
    axes.set(
        xlabel="actual duration (min)",
        ylabel="predicted duration (min)",
        title="Validation month: predicted vs actual",
    )
    figure.tight_layout()
    figure.savefig(path)


@click.command(cls=common.ExampleCommand, epilog=EXAMPLE)
@click.option(
    "--experiment-name",
    default="nyc-taxi",
    show_default=True,
    help="Experiment to log the run to (created if missing).",
)
@click.option("--run-name", default=None, help="Name of the run (default: MLflow picks one).")
@click.option(
    "--model",
    type=click.Choice(MODELS),
    default="random-forest",
    show_default=True,
    help="Regressor behind the DictVectorizer.",
)
@click.option(
    "--alpha", type=float, default=1.0, show_default=True, help="Regularisation strength (ridge)."
)
@click.option(
    "--n-estimators", type=int, default=50, show_default=True, help="Trees (random-forest)."
)
@click.option(
    "--max-depth", type=int, default=10, show_default=True, help="Tree depth (random-forest)."
)
@common.training_options(
    seed_help="Seed of the generated trips and of the model.",
    developer_help="Value of the run's 'developer' tag.",
)
def main(
    *,
    experiment_name: str,
    run_name: str | None,
    model: str,
    alpha: float,
    n_estimators: int,
    max_depth: int,
    developer: str,
    rows: int,
    seed: int,
    data_dir: Path,
) -> None:
    """Train a trip-duration model and log tags, params, a training curve, artifacts, the
    datasets and the model to the tracking server, each explicitly."""
    common.quiet_known_warnings()
    client = common.connect()
    experiment_id = common.ensure_experiment(client, experiment_name)
    splits = taxi_data.load_splits(rows, seed, data_dir)
    estimator = regressor(model, alpha, n_estimators, max_depth, seed)
    fitted, history = training_curve(estimator, splits, seed)
    predicted = fitted.predict(splits.features("val"))
    rmse = trip_model.rmse(splits.target("val"), predicted)
    params = {
        **model_params(model, alpha, n_estimators, max_depth),
        "train_path": splits.paths[taxi_data.TRAIN_MONTH],
        "val_path": splits.paths[taxi_data.VAL_MONTH],
        "data_seed": seed,
        "rows_per_month": rows,
        "train_rows": len(splits.train),
    }

    tags = {"developer": developer, "model": model}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        for split, context in (("train", "training"), ("val", "validation")):
            mlflow.log_input(dataset(splits, split), context=context)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "preprocessor").mkdir()
            with (folder / "preprocessor" / "preprocessor.b").open("wb") as handle:
                pickle.dump(fitted[:-1], handle)
            (folder / "plots").mkdir()
            figure = folder / "plots" / "predicted_vs_actual.png"
            predicted_vs_actual(splits.target("val"), predicted, figure)
            mlflow.log_artifacts(scratch)
        # The model before the metrics: log_model would otherwise fetch every metric's history
        # to link it to the model (a request each); given the model id, rmse is linked at once.
        info = trip_model.log_model(fitted, splits.features("val"))
        common.log_batch(
            client,
            run.info.run_id,
            params=params,
            metrics={"rmse": rmse},
            history=history,
            model_id=info.model_id,
        )

    common.report(
        experiment_id=experiment_id,
        run_id=run.info.run_id,
        model_uri=f"runs:/{run.info.run_id}/{trip_model.MODEL_NAME}",
        logged_model=info.model_uri,
        rmse=f"{rmse:.3f}",
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
