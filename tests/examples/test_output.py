"""What a script prints is what a team member reads: its ``name: value`` results and its own
messages, not pages of MLflow chatter that looks like trouble."""

from __future__ import annotations

import re
from concurrent.futures import Future

from tests.examples.conftest import Finished, Jobs

#: What the scripts printed before they quieted MLflow's client: run and experiment links
#: ("🏃 View run trial-1 at: http://..."), tqdm's artifact download bars, MLflow's INFO lines.
NOISE = {
    "a 'View run' link": re.compile(r"View (run|experiment) "),
    "a progress bar": re.compile(r"\d+%\||it/s\]|\r"),
    "an MLflow INFO line": re.compile(r" INFO mlflow[.:]"),
    "a warning": re.compile(r"(Deprecation|Future|User)Warning|WARNING"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
}


def successful_runs(jobs: Jobs) -> list[Finished]:
    futures: list[Future[Finished]] = [
        *jobs.manual.values(),
        jobs.autolog,
        jobs.sweep,
        jobs.evaluation["passes"],
    ]
    runs = [future.result().ok() for future in futures]
    runs += [step.run.ok() for step in jobs.registry.result()]
    return runs


def test_successful_scripts_print_their_results_and_no_noise(jobs: Jobs) -> None:
    runs = successful_runs(jobs)
    scripts = {run.script for run in runs}
    assert scripts == {
        "manual_logging.py",
        "autolog_xgboost.py",
        "hyperopt_sweep.py",
        "model_registry.py",
        "evaluate_candidate.py",
    }
    for run in runs:
        assert run.report, f"{run.script} reported nothing"
        for stream in (run.stdout, run.stderr):
            found = [what for what, pattern in NOISE.items() if pattern.search(stream)]
            assert not found, f"{run.script} {' '.join(run.args)} printed {found}:\n{stream}"
    # The sweep ran 3 trials in nested runs, the case that printed two links per run.
    sweep = jobs.sweep.result()
    assert sweep.report["trials"] == "3"
    assert sweep.stdout.count("\n") == len(sweep.report)
