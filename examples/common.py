"""What every example shares: connecting from the standard MLflow environment variables, turning
failures into one line on stderr (no traceback), the experiment, and the printed results."""

from __future__ import annotations

import getpass
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.time import get_current_time_millis

import taxi_data

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

URI_VARIABLE = "MLFLOW_TRACKING_URI"
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
#: The connection check fails at once instead of retrying for minutes (MLflow's default).
CHECK_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


#: MLflow's client defaults that fill a script's output with what looks like trouble: a
#: "View run ... at: <url>" pair per run (44 lines for a 20-trial sweep) and a progress bar per
#: artifact download. The scripts print their run ids, and the UI is one click away. Exported
#: values win: ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false`` brings the links back.
QUIET_CLIENT = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def quiet_known_warnings() -> None:
    """Quiet MLflow's client: no run links or progress bars, no INFO chatter ("Waiting up to
    300 seconds for model version to finish creation"), and no warnings that say nothing
    about the user's code."""
    for name, value in QUIET_CLIENT.items():
        os.environ.setdefault(name, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow 3.17 registers its local-file dataset source twice, so every local path is
    # "ambiguous" between two identical sources.
    warnings.filterwarnings(
        "ignore", message="The specified dataset source can be interpreted in multiple ways"
    )


class ExampleError(click.ClickException):
    """A failure the user can act on: printed as one ``Error: ...`` line, exit code 1."""


class ExampleCommand(click.Command):
    """A click command whose MLflow, HTTP and file errors end it with one line, not a traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlflowException as error:
            raise ExampleError(one_line(error.message)) from error
        except (requests.RequestException, OSError) as error:
            raise ExampleError(one_line(str(error))) from error


def one_line(message: str, limit: int = 300) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return first if len(first) <= limit else first[: limit - 3] + "..."


def default_developer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def root_cause(error: BaseException) -> BaseException:
    while (cause := error.__cause__ or error.__context__) is not None:
        error = cause
    return error


def describe_failure(error: MlflowException, uri: str) -> str:
    status = error.get_http_status_code()
    if status == 401:
        return (
            f"the tracking server at {uri} rejected the login (401 Unauthorized): "
            f"check {' and '.join(CREDENTIAL_VARIABLES)}"
        )
    if status == 403:
        return f"the tracking server at {uri} refused access (403): {one_line(error.message)}"
    cause = root_cause(error)
    if cause is not error:  # the request never got an answer: refused, unresolvable, timed out
        reason = re.sub(r"^\[Errno -?\d+\] ", "", one_line(str(cause))) or type(cause).__name__
        return f"cannot reach the tracking server at {uri} ({URI_VARIABLE}): {reason}"
    return f"the tracking server at {uri} failed: {one_line(error.message)}"


def connect() -> MlflowClient:
    """A client for the server named by ``MLFLOW_TRACKING_URI``, checked with one cheap
    authenticated call, so that a wrong address or password fails at once and clearly. Quiets
    MLflow's client first (see quiet_known_warnings)."""
    quiet_known_warnings()
    uri = os.environ.get(URI_VARIABLE, "").strip()
    if not uri:
        raise ExampleError(
            f"{URI_VARIABLE} is not set: export it (and {', '.join(CREDENTIAL_VARIABLES)})"
            " to point at the tracking server, e.g. http://127.0.0.1:5000"
        )
    if not uri.startswith(("http://", "https://")):
        raise ExampleError(f"{URI_VARIABLE}={uri} is not the http(s) URL of a tracking server")
    client = MlflowClient(uri)
    with environment(CHECK_SETTINGS):
        try:
            client.search_experiments(max_results=1)
        except MlflowException as error:
            raise ExampleError(describe_failure(error, uri)) from error
    log.info("connected to %s", uri)
    return client


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment called ``name``: created if missing, restored if deleted."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return ensure_experiment(client, name)  # created meanwhile by someone else
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
        log.info("restored the deleted experiment %r", name)
    return experiment.experiment_id


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    history: list[Metric] | None = None,
    model_id: str | None = None,
) -> None:
    """Params, final metrics, tags and metric histories in one request, not one each. Final
    metrics given a ``model_id`` also show on that logged model."""
    now = get_current_time_millis()
    finals = [Metric(k, float(v), now, 0, model_id=model_id) for k, v in (metrics or {}).items()]
    client.log_batch(
        run_id,
        metrics=[*(history or []), *finals],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def report(**fields: Any) -> None:
    """The results of a script, one ``name: value`` line each, on stdout."""
    for name, value in fields.items():
        click.echo(f"{name}: {value}")


def data_options(
    *, seed_help: str, rows_help: str = "Generated trips per month."
) -> Callable[[F], F]:
    """--rows and --seed: which generated trips a script uses."""
    return _options(
        click.option(
            "--rows", type=int, default=taxi_data.DEFAULT_ROWS, show_default=True, help=rows_help
        ),
        click.option(
            "--seed", type=int, default=taxi_data.DEFAULT_SEED, show_default=True, help=seed_help
        ),
    )


def training_options(*, seed_help: str, developer_help: str) -> Callable[[F], F]:
    """The options of every script that trains: --developer, --rows, --seed, --data-dir."""
    return _options(
        click.option(
            "--developer", default=default_developer, show_default="current user",
            help=developer_help,
        ),
        data_options(seed_help=seed_help),
        click.option(
            "--data-dir", type=click.Path(file_okay=False, path_type=Path),
            default=DEFAULT_DATA_DIR, show_default="examples/data",
            help="Where the generated months are written as parquet.",
        ),
    )  # fmt: skip


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        for option in reversed(options):  # the first listed shows first in --help
            command = option(command)
        return command

    return decorate
