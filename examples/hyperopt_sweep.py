"""Hyperparameter sweep: a hyperopt TPE search over XGBoost parameters, tracked as nested runs.

One parent run holds the sweep's settings; every trial is a child run with its parameters and
its validation ``rmse``. Afterwards the best trial is found by asking the server
(``search_runs`` with ``order_by=["metrics.rmse ASC"]``), and a new run retrains with its
parameters and logs the model (the ``DictVectorizer`` and the booster as one pipeline), tagged
with the sweep and the trial it came from.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
import scipy.sparse
import xgboost as xgb
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.pyll import scope
from mlflow import MlflowClient
from mlflow.entities import Run

import common
import taxi_data
import trip_model

log = logging.getLogger(__name__)

EXAMPLE = "Example: python examples/hyperopt_sweep.py --experiment-name nyc-taxi-sweep"
PARENT_TAG = "mlflow.parentRunId"
#: The searched parameters, and how to read each back from a run (params are stored as text).
SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 3, 10, 1)),
    "learning_rate": hp.loguniform("learning_rate", math.log(0.05), math.log(0.5)),
    "min_child_weight": hp.loguniform("min_child_weight", math.log(0.5), math.log(20)),
    "reg_alpha": hp.loguniform("reg_alpha", math.log(1e-4), math.log(1.0)),
    "reg_lambda": hp.loguniform("reg_lambda", math.log(1e-3), math.log(10.0)),
}
TYPES = {
    "max_depth": int,
    "learning_rate": float,
    "min_child_weight": float,
    "reg_alpha": float,
    "reg_lambda": float,
}


class Sweep:
    """Trains one trial per call, each in a child run of the sweep's run."""

    def __init__(
        self,
        client: MlflowClient,
        *,
        experiment_id: str,
        splits: taxi_data.Splits,
        num_boost_round: int,
        early_stopping_rounds: int,
        seed: int,
        tags: dict[str, str],
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.tags = tags
        self.prep = trip_model.preprocessor().fit(splits.features("train"))
        self.train = self.matrix(splits, "train")
        self.valid = self.matrix(splits, "val")
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.trial = 0

    def matrix(self, splits: taxi_data.Splits, split: str) -> xgb.DMatrix:
        features: scipy.sparse.csr_matrix = self.prep.transform(splits.features(split))
        return xgb.DMatrix(features, label=splits.target(split))

    def boost(self, params: dict[str, Any]) -> xgb.Booster:
        return xgb.train(
            {**params, "objective": "reg:squarederror", "seed": self.seed},
            self.train,
            num_boost_round=self.num_boost_round,
            evals=[(self.valid, "validation")],
            early_stopping_rounds=self.early_stopping_rounds,
            verbose_eval=False,
        )

    def objective(self, params: dict[str, Any]) -> dict[str, Any]:
        self.trial += 1
        with mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=f"trial-{self.trial}",
            nested=True,
            tags=self.tags,
        ) as run:
            booster = self.boost(params)
            rmse = float(booster.best_score)
            common.log_batch(
                self.client,
                run.info.run_id,
                params={**params, "num_boost_round": booster.best_iteration + 1},
                metrics={"rmse": rmse},
            )
        log.info("trial %d: rmse %.3f with %s", self.trial, rmse, params)
        return {"loss": rmse, "status": STATUS_OK}


def best_trial(client: MlflowClient, experiment_id: str, parent_id: str) -> Run:
    """The sweep's child run with the lowest validation rmse, as the server ranks them."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{PARENT_TAG} = '{parent_id}'",
        order_by=["metrics.rmse ASC"],
        max_results=1,
    )
    if not runs:
        raise common.ExampleError(f"the sweep {parent_id} has no finished trials")
    return runs[0]


def trial_params(run: Run) -> dict[str, Any]:
    return {name: kind(float(run.data.params[name])) for name, kind in TYPES.items()}


@click.command(cls=common.ExampleCommand, epilog=EXAMPLE)
@click.option(
    "--experiment-name",
    default="nyc-taxi-sweep",
    show_default=True,
    help="Experiment to log the sweep to (created if missing).",
)
@click.option(
    "--run-name", default="xgboost-sweep", show_default=True, help="Name of the sweep's parent run."
)
@click.option(
    "--max-evals",
    type=int,
    default=20,
    show_default=True,
    help="Trials to run (one child run each).",
)
@click.option(
    "--num-boost-round",
    type=int,
    default=200,
    show_default=True,
    help="Most boosting rounds per trial.",
)
@click.option(
    "--early-stopping-rounds",
    type=int,
    default=10,
    show_default=True,
    help="Stop a trial after this many rounds without a better RMSE.",
)
@common.training_options(
    seed_help="Seed of the trips, of the search and of the boosters.",
    developer_help="Value of the runs' 'developer' tag.",
)
def main(
    *,
    experiment_name: str,
    run_name: str,
    max_evals: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    developer: str,
    rows: int,
    seed: int,
    data_dir: Path,
) -> None:
    """Search XGBoost parameters with hyperopt (TPE), one child run per trial, then retrain the
    best trial and log its model."""
    common.quiet_known_warnings()
    client = common.connect()
    experiment_id = common.ensure_experiment(client, experiment_name)
    splits = taxi_data.load_splits(rows, seed, data_dir)
    sweep = Sweep(
        client,
        experiment_id=experiment_id,
        splits=splits,
        num_boost_round=num_boost_round,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
        tags={"developer": developer, "model": "xgboost"},
    )
    data_params = {
        "train_path": splits.paths[taxi_data.TRAIN_MONTH],
        "val_path": splits.paths[taxi_data.VAL_MONTH],
        "data_seed": seed,
        "rows_per_month": rows,
    }

    tags = {"developer": developer, "model": "xgboost", "sweep": "hyperopt-tpe"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as parent:
        parent_id = parent.info.run_id
        fmin(
            fn=sweep.objective,
            space=SPACE,
            algo=tpe.suggest,
            max_evals=max_evals,
            trials=Trials(),
            rstate=np.random.default_rng(seed),
            show_progressbar=False,
        )
        best = best_trial(client, experiment_id, parent_id)
        common.log_batch(
            client,
            parent_id,
            params={**data_params, "max_evals": max_evals, "algo": "tpe"},
            metrics={"best_rmse": best.data.metrics["rmse"]},
            tags={"best_trial_run_id": best.info.run_id},
        )

    params = trial_params(best)
    rounds = int(best.data.params["num_boost_round"])
    retrain_tags = {
        "developer": developer,
        "model": "xgboost",
        "sweep_run_id": parent_id,
        "best_trial_run_id": best.info.run_id,
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{run_name}-best", tags=retrain_tags
    ) as retrained:
        model = trip_model.pipeline(
            xgb.XGBRegressor(**params, n_estimators=rounds, random_state=seed)
        ).fit(splits.features("train"), splits.target("train"))
        rmse = trip_model.rmse(splits.target("val"), model.predict(splits.features("val")))
        info = trip_model.log_model(model, splits.features("val"), f"xgboost=={xgb.__version__}")
        common.log_batch(
            client,
            retrained.info.run_id,
            params={**params, "num_boost_round": rounds, **data_params},
            metrics={"rmse": rmse},
            model_id=info.model_id,
        )

    common.report(
        experiment_id=experiment_id,
        sweep_run_id=parent_id,
        trials=max_evals,
        best_trial_run_id=best.info.run_id,
        best_trial_rmse=f"{best.data.metrics['rmse']:.3f}",
        run_id=retrained.info.run_id,
        model_uri=f"runs:/{retrained.info.run_id}/{trip_model.MODEL_NAME}",
        logged_model=info.model_uri,
        rmse=f"{rmse:.3f}",
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
