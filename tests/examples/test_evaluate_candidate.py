"""evaluate_candidate.py: candidate and baseline evaluated with MLflow's API, thresholds applied,
the verdict recorded; a candidate that misses a threshold fails (and fails the CI gate)."""

from __future__ import annotations

from tests.examples.conftest import Jobs

METRIC = "root_mean_squared_error"


def baseline_run(client, experiment_id: str, parent_id: str):
    (baseline,) = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return baseline


def test_a_good_candidate_passes_and_both_evaluations_are_logged(jobs: Jobs, client) -> None:
    finished = jobs.evaluation["passes"].result().ok()
    linear = jobs.manual["linear"].result().report
    run = client.get_run(finished.report["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == jobs.experiments["evaluation"]
    assert run.data.tags["candidate"] == linear["model_uri"]
    assert run.data.tags["validation-status"] == "passed"
    assert "validation-reason" not in run.data.tags
    assert run.data.params["max_rmse"] == "8.0"
    assert run.data.params["min_improvement"] == "0.1"

    metrics = run.data.metrics
    assert metrics["validation_passed"] == 1
    assert metrics["example_count"] > 1000  # the test month, evaluated by mlflow.models.evaluate
    assert metrics[METRIC] < 8
    assert metrics[METRIC] <= 0.9 * metrics[f"baseline_{METRIC}"]
    assert metrics["r2_score"] > 0.5

    baseline = baseline_run(client, run.info.experiment_id, run.info.run_id)
    assert baseline.info.run_name == "baseline"
    assert baseline.data.metrics[METRIC] == metrics[f"baseline_{METRIC}"]
    assert baseline.data.metrics["example_count"] == metrics["example_count"]
    assert run.inputs.dataset_inputs  # the evaluation data is recorded with the run
    assert finished.report["validation"] == "passed"


def test_a_candidate_missing_the_threshold_is_recorded_as_failing(jobs: Jobs, client) -> None:
    finished = jobs.evaluation["fails"].result()
    assert finished.returncode == 1  # --fail-on-reject
    assert finished.stderr.strip().splitlines()[-1].startswith("Error: the candidate ")
    assert "Traceback" not in finished.stderr
    assert finished.report["validation"].startswith("failed: ")

    run = client.get_run(finished.report["run_id"])
    assert run.data.tags["validation-status"] == "failed"
    assert run.data.metrics["validation_passed"] == 0
    assert run.data.params["max_rmse"] == "1.0"
    assert METRIC in run.data.tags["validation-reason"]
    assert run.data.metrics[METRIC] > 1  # why it failed
    baseline = baseline_run(client, run.info.experiment_id, run.info.run_id)
    assert baseline.data.metrics[METRIC] == run.data.metrics[f"baseline_{METRIC}"]
