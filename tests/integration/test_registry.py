"""A scikit-learn model: logged, registered, aliased, loaded back by alias, same predictions."""

from __future__ import annotations

import time
import uuid

import mlflow
import numpy as np
from sklearn.linear_model import LinearRegression

from tests.conftest import LiveStack
from tests.integration.test_artifacts import cut_off_from_storage


def test_model_registers_takes_an_alias_and_loads_back_by_it(
    stack: LiveStack, experiment_id: str, monkeypatch, tmp_path
) -> None:
    client = cut_off_from_storage(stack, monkeypatch, tmp_path)  # models travel via the server
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, 3))
    target = features @ np.array([1.5, -2.0, 0.5]) + 3 + rng.normal(scale=0.1, size=200)
    model = LinearRegression().fit(features, target)
    name = f"trip-duration-{uuid.uuid4().hex[:8]}"

    with mlflow.start_run(experiment_id=experiment_id) as run:
        # Requirements given: inferring them re-imports the model in a subprocess (~4 s of CPU).
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=features[:3], pip_requirements=["scikit-learn"]
        )
    version = mlflow.register_model(info.model_uri, name)
    client.set_registered_model_alias(name, "champion", version.version)
    client.set_model_version_tag(name, version.version, "validation", "passed")

    by_alias = client.get_model_version_by_alias(name, "champion")
    assert by_alias.version == version.version
    assert by_alias.tags["validation"] == "passed"
    assert client.get_registered_model(name).aliases == {"champion": version.version}

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    np.testing.assert_allclose(loaded.predict(features), model.predict(features))

    # runs:/<run>/model first tries the run's own artifacts, which fails (MLflow 3 keeps the
    # model elsewhere), then falls back: that failure must be quick, not minutes of retries.
    began = time.monotonic()
    by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert time.monotonic() - began < 30
    np.testing.assert_allclose(by_run.predict(features), model.predict(features))
