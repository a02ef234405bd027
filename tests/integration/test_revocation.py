"""A revoked user on the real stack (two workers): refused at once by the worker that made the
change, and within the stated bound by every worker; a run whose experiment the server keeps
is authorized as MLflow authorizes it.

A kept-alive connection is served by one worker, so the admin's change and the user's next
request on the same ``requests.Session`` meet the same worker; other sessions may meet the
other one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from mlflow_stack.server.authstore import KEPT_FOR
from tests.conftest import LiveStack

SESSIONS = 8
SLACK = 1.0  # scheduling and the request itself


@dataclass
class Team:
    api: str
    admin: tuple[str, str]
    user: tuple[str, str]
    experiment_id: str
    run_id: str
    sessions: list[requests.Session]

    def log_param(self, session: requests.Session, auth: tuple[str, str] | None = None) -> int:
        answer = session.post(
            f"{self.api}/2.0/mlflow/runs/log-parameter",
            json={"run_id": self.run_id, "key": f"k-{uuid.uuid4().hex[:8]}", "value": "1"},
            auth=auth or self.user,
            timeout=30,
        )
        if answer.status_code == 403:
            assert answer.text == "Permission denied"  # MLflow's answer, word for word
        return answer.status_code

    def as_admin(self, session: requests.Session, path: str, body: dict) -> None:
        method = session.patch if "update-admin" in path else session.post
        answer = method(f"{self.api}/{path}", json=body, auth=self.admin, timeout=30)
        assert answer.status_code == 200, answer.text


@pytest.fixture
def team(stack: LiveStack) -> Iterator[Team]:
    api = stack.tracking_uri + "/api"
    name = f"revoked-{uuid.uuid4().hex[:6]}"
    user = (name, "revoked-password-123")
    admin = stack.admin
    sessions = [requests.Session() for _ in range(SESSIONS)]
    first = sessions[0]
    first.post(f"{api}/2.0/mlflow/users/create", json={"username": name, "password": user[1]},
               auth=admin, timeout=30).raise_for_status()  # fmt: skip
    experiment_id = first.post(f"{api}/2.0/mlflow/experiments/create",
                               json={"name": f"{name}-exp"}, auth=admin,
                               timeout=30).json()["experiment_id"]  # fmt: skip
    run_id = first.post(f"{api}/2.0/mlflow/runs/create", json={"experiment_id": experiment_id},
                        auth=admin, timeout=30).json()["run"]["info"]["run_id"]  # fmt: skip
    team = Team(api, admin, user, experiment_id, run_id, sessions)
    team.as_admin(first, "3.0/mlflow/users/permissions/grant", {
        "username": name, "resource_type": "experiment", "resource_id": experiment_id,
        "permission": "EDIT",
    })  # fmt: skip
    yield team
    for session in sessions:
        session.close()


def denied_on_every_session(team: Team) -> float:
    """Seconds until every session's request is refused, and stays refused."""
    began = time.monotonic()
    for session in team.sessions:
        while team.log_param(session) != 403:
            assert time.monotonic() - began < KEPT_FOR + SLACK, "still allowed past the bound"
            time.sleep(0.05)
    for session in team.sessions:
        assert [team.log_param(session) for _ in range(3)] == [403] * 3
    return time.monotonic() - began


def test_a_revoked_grant_is_refused_at_once_here_and_within_the_bound_everywhere(
    team: Team,
) -> None:
    assert [team.log_param(s) for s in team.sessions] == [200] * SESSIONS  # kept everywhere
    first = team.sessions[0]
    team.as_admin(first, "3.0/mlflow/users/permissions/revoke", {
        "username": team.user[0], "resource_type": "experiment",
        "resource_id": team.experiment_id,
    })  # fmt: skip
    assert team.log_param(first) == 403  # the worker that made the change: at once
    assert denied_on_every_session(team) <= KEPT_FOR + SLACK


def test_admin_rights_taken_away_are_gone_at_once_here_and_within_the_bound_everywhere(
    team: Team, stack: LiveStack
) -> None:
    first = team.sessions[0]
    team.as_admin(first, "3.0/mlflow/users/permissions/revoke", {
        "username": team.user[0], "resource_type": "experiment",
        "resource_id": team.experiment_id,
    })  # fmt: skip
    team.as_admin(first, "2.0/mlflow/users/update-admin",
                  {"username": team.user[0], "is_admin": True})  # fmt: skip
    assert team.log_param(first) == 200  # an admin now, at once
    while not all(team.log_param(s) == 200 for s in team.sessions):  # and everywhere, soon
        time.sleep(0.05)
    team.as_admin(first, "2.0/mlflow/users/update-admin",
                  {"username": team.user[0], "is_admin": False})  # fmt: skip
    assert team.log_param(first) == 403
    assert denied_on_every_session(team) <= KEPT_FOR + SLACK


def test_a_known_run_in_an_experiment_the_user_may_only_read_is_authorized_as_mlflow_does(
    team: Team,
) -> None:
    api, first = team.api, team.sessions[0]
    other = first.post(f"{api}/2.0/mlflow/experiments/create",
                       json={"name": f"{team.user[0]}-not-theirs"}, auth=team.admin,
                       timeout=30).json()["experiment_id"]  # fmt: skip
    run = first.post(f"{api}/2.0/mlflow/runs/create", json={"experiment_id": other},
                     auth=team.admin, timeout=30).json()["run"]  # fmt: skip
    first.post(f"{api}/2.0/mlflow/runs/log-parameter", auth=team.admin, timeout=30,
               json={"run_id": run["info"]["run_id"], "key": "lr", "value": "0.1"})  # fmt: skip
    theirs = Team(api, team.admin, team.user, other, run["info"]["run_id"], team.sessions)
    for session in team.sessions:  # each worker has read or created the run by now
        read = session.get(f"{api}/2.0/mlflow/runs/get", auth=team.user, timeout=30,
                           params={"run_id": theirs.run_id})  # fmt: skip
        as_admin = session.get(f"{api}/2.0/mlflow/runs/get", auth=team.admin, timeout=30,
                               params={"run_id": theirs.run_id})  # fmt: skip
        assert read.status_code == 200 and read.json() == as_admin.json()  # default READ
        assert read.json()["run"]["data"]["params"] == [{"key": "lr", "value": "0.1"}]
        assert theirs.log_param(session) == 403  # no EDIT on it
    missing = Team(api, team.admin, team.user, other, uuid.uuid4().hex, team.sessions)
    assert missing.log_param(first) == 403  # a run that does not exist: refused, as MLflow does


def test_a_deleted_user_is_refused_at_once_here_and_within_the_bound_everywhere(
    team: Team,
) -> None:
    assert [team.log_param(s) for s in team.sessions] == [200] * SESSIONS
    first = team.sessions[0]
    answer = first.delete(f"{team.api}/2.0/mlflow/users/delete", auth=team.admin, timeout=30,
                          json={"username": team.user[0]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert team.log_param(first) == 401  # MLflow's own login prompt, at once

    def refused(session: requests.Session) -> bool:
        answer = session.post(f"{team.api}/2.0/mlflow/runs/log-parameter", auth=team.user,
                              json={"run_id": team.run_id, "key": "k", "value": "1"},
                              timeout=30)  # fmt: skip
        if answer.status_code == 404:  # a worker that still remembers the password: MLflow's
            assert answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"  # look-up fails
        return answer.status_code in (401, 404)

    began = time.monotonic()
    for session in team.sessions:
        while not refused(session):
            assert time.monotonic() - began < KEPT_FOR + SLACK, "still allowed past the bound"
            time.sleep(0.05)
