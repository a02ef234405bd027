"""Reading back what the examples left: in the bucket, and the data they recorded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from examples import taxi_data
from tests.conftest import LiveStack


def bucket_objects(stack: LiveStack, prefix: str) -> dict[str, int]:
    """Key (below ``prefix``) -> size of every object in the stack's bucket."""
    listed = stack.s3().list_objects_v2(Bucket=stack.settings.s3_bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :]: item["Size"] for item in listed.get("Contents", [])}


def bucket_read(stack: LiveStack, key: str) -> bytes:
    return stack.s3().get_object(Bucket=stack.settings.s3_bucket, Key=key)["Body"].read()


def run_prefix(experiment_id: str, run_id: str) -> str:
    return f"{experiment_id}/{run_id}/artifacts/"


def model_prefix(experiment_id: str, model_id: str) -> str:
    return f"{experiment_id}/models/{model_id}/artifacts/"


def mlmodel(stack: LiveStack, experiment_id: str, model_id: str) -> dict[str, Any]:
    return yaml.safe_load(bucket_read(stack, model_prefix(experiment_id, model_id) + "MLmodel"))


def mean_prediction_rmse(train_path: Path, val_path: Path) -> float:
    """RMSE on the validation month of always predicting the training month's mean duration:
    what any real model must beat. Computed from the files the run names in its params."""
    train = taxi_data.prepare(pd.read_parquet(train_path))
    val = taxi_data.prepare(pd.read_parquet(val_path))
    return float(np.sqrt(np.mean((val[taxi_data.TARGET] - train[taxi_data.TARGET].mean()) ** 2)))


def sane_rmse(value: float, baseline: float) -> bool:
    return math.isfinite(value) and 0 < value < 0.6 * baseline
