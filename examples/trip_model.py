"""The trip-duration models: a ``DictVectorizer`` over ``PU_DO`` and ``trip_distance`` in front of a
regressor, as one scikit-learn pipeline that takes the feature columns as a DataFrame. Logged as
one model, it needs no separate preprocessing step to be served, registered or evaluated."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from operator import methodcaller
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from sklearn.feature_extraction import DictVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

#: The name each run's model is logged under: ``runs:/<run id>/model``.
MODEL_NAME = "model"
#: What a model needs to be loaded elsewhere, pinned to what trained it. Given explicitly, it
#: spares MLflow inferring the requirements in a subprocess (seconds per logged model).
REQUIREMENTS = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")
#: The types in our pipelines that skops, MLflow's default (safe) format for scikit-learn models,
#: loads only when told to trust them.
SKOPS_TRUSTED_TYPES = [
    "operator.methodcaller",
    "sklearn.tree._tree.Tree",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBRegressor",
]


def pip_requirements(*extra: str) -> list[str]:
    """The pinned :data:`REQUIREMENTS`, plus ``extra`` requirement strings as given."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return [*pins, *extra]


def preprocessor() -> Pipeline:
    """Feature columns -> sparse matrix: one-hot ``PU_DO``, numeric ``trip_distance``."""
    # DataFrame rows -> the dicts DictVectorizer takes. A methodcaller rather than a function of
    # ours: skops can save and load it (and cannot resolve pandas' own DataFrame.to_dict).
    to_records = FunctionTransformer(methodcaller("to_dict", "records"))
    return Pipeline([("records", to_records), ("vectorizer", DictVectorizer())])


def pipeline(regressor: Any) -> Pipeline:
    return Pipeline([*preprocessor().steps, ("regressor", regressor)])


def rmse(actual: Any, predicted: Any) -> float:
    return float(np.sqrt(np.mean((np.asarray(actual) - np.asarray(predicted)) ** 2)))


def log_model(model: Pipeline, features: pd.DataFrame, *requirements: str) -> ModelInfo:
    """Log a fitted pipeline to the active run, with a signature and an input example."""
    example = features.head(5)
    return mlflow.sklearn.log_model(
        model,
        name=MODEL_NAME,
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        pip_requirements=pip_requirements(*requirements),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
