"""model_registry.py: versions with tags and descriptions, the champion/challenger/previous
aliases, the promotion rule, --rollback, a safe re-run, and the champion loaded by alias."""

from __future__ import annotations

import math

import mlflow.pyfunc
import numpy as np
import pytest

from examples import taxi_data
from tests.examples.conftest import ROWS, SEED, Jobs, RegistryStep

STATUS = "evaluation-status"


@pytest.fixture(scope="module")
def steps(jobs: Jobs) -> list[RegistryStep]:
    done = jobs.registry.result()
    for step in done:
        step.run.ok()
    assert len(done) == 5
    return done


@pytest.fixture(scope="module")
def run_ids(jobs: Jobs) -> dict[str, str]:
    return {model: future.result().report["run_id"] for model, future in jobs.manual.items()}


def test_the_first_run_registers_a_tagged_described_version_as_champion(
    steps: list[RegistryStep], run_ids: dict[str, str]
) -> None:
    first = steps[0]
    assert first.aliases == {"champion": "1"}
    assert first.run.report["champion"] == "1"
    (version,) = first.versions.values()
    assert version.run_id == run_ids["random-forest"]
    assert version.tags["model-type"] == "random-forest"
    assert version.tags[STATUS] == "passed"
    assert math.isfinite(float(version.tags["test-rmse"]))
    assert run_ids["random-forest"] in version.description
    assert taxi_data.TEST_MONTH in version.description


def test_a_worse_challenger_does_not_take_the_champion(
    steps: list[RegistryStep], run_ids: dict[str, str]
) -> None:
    worse = steps[1]
    challenger = worse.versions["2"]
    assert challenger.run_id == run_ids["ridge"]
    assert challenger.tags["model-type"] == "ridge"
    assert float(challenger.tags["test-rmse"]) > float(worse.versions["1"].tags["test-rmse"])
    assert challenger.tags[STATUS] == "failed"
    assert worse.aliases == {"champion": "1", "challenger": "2"}
    assert "not promoted" in worse.run.stdout


def test_a_better_challenger_is_promoted_and_the_old_champion_kept_as_previous(
    steps: list[RegistryStep], run_ids: dict[str, str]
) -> None:
    better = steps[2]
    promoted = better.versions["3"]
    assert promoted.run_id == run_ids["linear"]
    assert float(promoted.tags["test-rmse"]) < float(better.versions["1"].tags["test-rmse"])
    assert promoted.tags[STATUS] == "passed"
    assert better.aliases == {"champion": "3", "previous": "1"}
    assert (better.run.report["champion"], better.run.report["previous"]) == ("3", "1")


def test_rollback_restores_previous_and_a_rerun_changes_nothing(steps: list[RegistryStep]) -> None:
    rolled_back, again = steps[3], steps[4]
    assert rolled_back.aliases == {"champion": "1"}
    assert rolled_back.versions["3"].tags[STATUS] == "rolled-back"
    # Running the last registration again registers and promotes nothing.
    assert set(again.versions) == {"1", "2", "3"}
    assert again.aliases == {"champion": "1"}
    assert "no new candidate" in again.run.stdout
    assert {v: again.versions[v].tags for v in again.versions} == {
        v: rolled_back.versions[v].tags for v in rolled_back.versions
    }


def test_the_champion_loaded_by_alias_predicts_like_its_run_and_as_tagged(
    jobs: Jobs, steps: list[RegistryStep], run_ids: dict[str, str]
) -> None:
    splits = taxi_data.load_splits(int(ROWS), int(SEED))
    features = splits.features("test")
    champion = mlflow.pyfunc.load_model(f"models:/{jobs.model_name}@champion")
    from_run = mlflow.pyfunc.load_model(f"runs:/{run_ids['random-forest']}/model")
    predicted = champion.predict(features)
    np.testing.assert_array_equal(predicted, from_run.predict(features))
    rmse = float(np.sqrt(np.mean((predicted - splits.target("test")) ** 2)))
    assert float(steps[-1].versions["1"].tags["test-rmse"]) == pytest.approx(rmse, abs=1e-4)
    printed = [float(value) for value in steps[-1].run.report["champion_predictions"].split(", ")]
    np.testing.assert_allclose(printed, predicted[:3], atol=0.005)
