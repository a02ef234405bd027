"""A run's experiment, known without reading the run: what MLflow's authorization asks of
``get_run``; anything else asked of the run reads it, once."""

from __future__ import annotations

from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunTag

from mlflow_stack.stores.owners import AuthorizingRun, RunOwners


def a_run(run_id: str = "r1", experiment_id: str = "7") -> Run:
    info = RunInfo(
        run_id=run_id, experiment_id=experiment_id, user_id="ada", status="RUNNING",
        start_time=1, end_time=None, lifecycle_stage="active", artifact_uri="s3://b/x",
        run_name="brave-owl",
    )  # fmt: skip
    data = RunData(
        metrics=[Metric("loss", 0.5, 1, 0)], params=[Param("lr", "0.1")], tags=[RunTag("t", "v")]
    )
    return Run(info, data, RunInputs(dataset_inputs=[]), RunOutputs([]))


class Reader:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.reads = 0

    def __call__(self) -> Run:
        self.reads += 1
        return self.run


def test_its_experiment_and_id_are_answered_without_reading_the_run() -> None:
    reader = Reader(a_run())
    run = AuthorizingRun("r1", "7", reader)
    assert isinstance(run, Run) and isinstance(run.info, RunInfo)
    assert (run.info.experiment_id, run.info.run_id) == ("7", "r1")
    assert reader.reads == 0


def test_anything_else_reads_the_run_once_and_answers_as_it() -> None:
    stored = a_run()
    reader = Reader(stored)
    run = AuthorizingRun("r1", "7", reader)
    assert run.info.status == "RUNNING" and run.info.lifecycle_stage == "active"
    assert run.info.run_name == "brave-owl" and run.info.artifact_uri == "s3://b/x"
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"loss": 0.5}
    assert run.inputs.dataset_inputs == [] and run.outputs.model_outputs == []
    assert run.to_proto() == stored.to_proto()
    assert dict(run.info) == dict(stored.info)
    assert reader.reads == 1


def test_owners_are_remembered_for_their_time_and_forgotten_on_request() -> None:
    owners = RunOwners(kept_for=60.0)
    assert owners.experiment_of("r1") is None
    owners.remember(a_run("r1", "7"))
    owners.remember(a_run("r2", "8"))
    assert (owners.experiment_of("r1"), owners.experiment_of("r2")) == ("7", "8")
    owners.forget("r1")
    assert (owners.experiment_of("r1"), owners.experiment_of("r2")) == (None, "8")
    owners.forget_all()
    assert owners.experiment_of("r2") is None
    assert RunOwners(kept_for=0.0).experiment_of("r1") is None
