"""Model registry: register the best runs of an experiment and manage a champion by aliases.

The top-N runs of the experiment (lowest validation ``rmse``, with a logged model) become
versions of one registered model, unless already registered. Each new version is scored on the
held-out test month and registered with the tags ``model-type``, ``test-rmse`` and
``evaluation-status`` and a description. Stages are deprecated in MLflow 3; aliases say what a
version is for:

- ``champion``: the version to serve. The first one is the best new version on the test month.
- ``challenger``: the best new version once there is a champion. It is promoted only if its test
  RMSE beats the champion's: ``champion`` moves to it and ``previous`` keeps the old champion.
- ``previous``: what ``--rollback`` restores as ``champion``.

``evaluation-status`` is ``pending`` until the version is compared, then ``passed`` (became the
champion), ``failed`` (did not) or ``rolled-back``. Finally the champion is loaded with
``mlflow.pyfunc.load_model("models:/<name>@champion")`` and predicts a few test trips. Running
it again registers and promotes nothing new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import click
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

import common
import taxi_data
import trip_model

ALIASES = CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
STATUS = "evaluation-status"
PENDING, PASSED, FAILED, ROLLED_BACK = "pending", "passed", "failed", "rolled-back"
MODEL_DESCRIPTION = (
    "Trip duration in minutes from PU_DO and trip_distance, served by alias: 'champion' is in "
    "use, 'challenger' is the latest candidate, 'previous' the champion before it "
    "(examples/model_registry.py)."
)
EXAMPLE = (
    "Example: python examples/model_registry.py --experiment-name nyc-taxi "
    "--model-name nyc-taxi-duration --top-n 3"
)


@dataclass(frozen=True)
class Candidate:
    run: Run
    model_id: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def model_type(self) -> str:
        return self.run.data.tags.get("model", "unknown")


def ensure_registered_model(client: MlflowClient, name: str) -> dict[str, str]:
    """Create the registered model if it is missing; its aliases (alias -> version) if not."""
    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(name, description=MODEL_DESCRIPTION)
    except MlflowException as error:  # created meanwhile by someone else
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return {}


def top_runs(client: MlflowClient, experiment_name: str, top_n: int) -> list[Candidate]:
    """The ``top_n`` finished runs with the lowest validation rmse that logged a model."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise common.ExampleError(f"there is no experiment named {experiment_name!r}")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="metrics.rmse > 0 and attributes.status = 'FINISHED'",
        order_by=["metrics.rmse ASC"],
        max_results=200,
    )
    found = [
        Candidate(run, run.outputs.model_outputs[-1].model_id)
        for run in runs
        if run.outputs and run.outputs.model_outputs
    ]
    if not found:
        raise common.ExampleError(f"no run of {experiment_name!r} has an rmse and a model")
    return found[:top_n]


def rmse_on_test_month(model_uri: str, splits: taxi_data.Splits) -> float:
    model = mlflow.pyfunc.load_model(model_uri)
    return trip_model.rmse(splits.target("test"), model.predict(splits.features("test")))


def register(
    client: MlflowClient, name: str, candidate: Candidate, splits: taxi_data.Splits
) -> ModelVersion:
    """Score a candidate on the test month and register it, tags and description included."""
    test_rmse = rmse_on_test_month(f"models:/{candidate.model_id}", splits)
    validation_rmse = candidate.run.data.metrics["rmse"]
    return client.create_model_version(
        name,
        source=f"models:/{candidate.model_id}",
        run_id=candidate.run_id,
        model_id=candidate.model_id,
        tags={"model-type": candidate.model_type, "test-rmse": f"{test_rmse:.4f}", STATUS: PENDING},
        description=(
            f"{candidate.model_type} from run {candidate.run_id}: validation RMSE "
            f"{validation_rmse:.3f} ({taxi_data.VAL_MONTH}), test RMSE {test_rmse:.3f} "
            f"({taxi_data.TEST_MONTH})."
        ),
    )


def score(version: ModelVersion) -> float:
    return float(version.tags["test-rmse"])


def decide(
    client: MlflowClient, name: str, aliases: dict[str, str], versions: dict[str, ModelVersion]
) -> dict[str, str]:
    """Compare the pending versions with the champion and move the aliases; the new aliases."""
    pending = sorted(
        (v for v in versions.values() if v.tags.get(STATUS) == PENDING and "test-rmse" in v.tags),
        key=score,
    )
    if not pending:
        click.echo("no new candidate: the aliases stay as they are")
        return aliases
    best, others = pending[0], pending[1:]
    aliases = dict(aliases)
    champion = versions.get(aliases.get(CHAMPION, ""))
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, best.version)
        aliases[CHAMPION], status = best.version, PASSED
        click.echo(f"first champion: version {best.version} (test rmse {score(best):.3f})")
    elif score(best) < score(champion):
        # The challenger wins: no need to name it challenger first, it is the champion now.
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        client.set_registered_model_alias(name, CHAMPION, best.version)
        if aliases.get(CHALLENGER) not in {None, best.version}:
            client.delete_registered_model_alias(name, CHALLENGER)
        aliases.pop(CHALLENGER, None)
        aliases[PREVIOUS], aliases[CHAMPION], status = champion.version, best.version, PASSED
        click.echo(
            f"challenger version {best.version} (test rmse {score(best):.3f}) promoted: it beats "
            f"champion version {champion.version} (test rmse {score(champion):.3f}), now previous"
        )
    else:
        client.set_registered_model_alias(name, CHALLENGER, best.version)
        aliases[CHALLENGER], status = best.version, FAILED
        click.echo(
            f"challenger version {best.version} (test rmse {score(best):.3f}) not promoted: it "
            f"does not beat champion version {champion.version} (test rmse {score(champion):.3f})"
        )
    client.set_model_version_tag(name, best.version, STATUS, status)
    for other in others:  # lost to ``best`` on the test month
        client.set_model_version_tag(name, other.version, STATUS, FAILED)
    return aliases


def rollback(client: MlflowClient, name: str, aliases: dict[str, str]) -> dict[str, str]:
    """Make ``previous`` the champion again; the demoted version is marked rolled back."""
    if PREVIOUS not in aliases:
        raise common.ExampleError(f"{name!r} has no {PREVIOUS!r} version to roll back to")
    aliases = dict(aliases)
    demoted, restored = aliases.get(CHAMPION), aliases.pop(PREVIOUS)
    client.set_registered_model_alias(name, CHAMPION, restored)
    client.delete_registered_model_alias(name, PREVIOUS)
    aliases[CHAMPION] = restored
    if demoted is not None:
        client.set_model_version_tag(name, demoted, STATUS, ROLLED_BACK)
    click.echo(f"rolled back: champion is version {restored} again (was version {demoted})")
    return aliases


@click.command(cls=common.ExampleCommand, epilog=EXAMPLE)
@click.option(
    "--experiment-name",
    default="nyc-taxi",
    show_default=True,
    help="Experiment whose best runs are registered.",
)
@click.option(
    "--model-name",
    default="nyc-taxi-duration",
    show_default=True,
    help="Registered model (created if missing).",
)
@click.option(
    "--top-n",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="How many of the best runs to register.",
)
@click.option(
    "--rollback",
    "roll_back",
    is_flag=True,
    help="Only make the 'previous' version the champion again.",
)
@common.data_options(
    seed_help="Seed of the generated trips.",
    rows_help="Generated trips per month (of the test month).",
)
def main(
    *, experiment_name: str, model_name: str, top_n: int, roll_back: bool, rows: int, seed: int
) -> None:
    """Register the best runs of an experiment as versions of a model, tag and describe them,
    and keep the 'champion', 'challenger' and 'previous' aliases; or roll back."""
    client = common.connect()
    splits = taxi_data.load_splits(rows, seed)
    aliases = ensure_registered_model(client, model_name)
    if roll_back:
        aliases = rollback(client, model_name, aliases)
    else:
        candidates = top_runs(client, experiment_name, top_n)
        versions = {v.version: v for v in client.search_model_versions(f"name = '{model_name}'")}
        registered = {v.run_id for v in versions.values()}
        for candidate in candidates:
            if candidate.run_id in registered:
                continue
            version = register(client, model_name, candidate, splits)
            versions[version.version] = version
            click.echo(
                f"registered version {version.version}: {candidate.model_type} from run "
                f"{candidate.run_id}, test rmse {version.tags['test-rmse']}"
            )
        aliases = decide(client, model_name, aliases, versions)

    if CHAMPION not in aliases:
        raise common.ExampleError(f"{model_name!r} has no champion")
    champion = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
    predicted = champion.predict(splits.features("test").head(3))
    shown = {alias: aliases[alias] for alias in ALIASES if alias in aliases}
    common.report(
        model=model_name,
        **shown,
        champion_predictions=", ".join(f"{value:.2f}" for value in predicted),
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
