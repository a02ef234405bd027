"""The mark the tracking store reads to know that MLflow is authorizing the request: set
around the before-request functions registered inside the bracket, and nowhere else (a real
Flask app and its test client)."""

from __future__ import annotations

from flask import Flask, Response

from mlflow_stack.stores import phase


def app_with(refuse: bool) -> tuple[Flask, dict[str, list[bool]]]:
    app = Flask(__name__)
    seen: dict[str, list[bool]] = {"before": [], "authorizing": [], "handler": [], "after": []}
    app.before_request(lambda: seen["before"].append(phase.authorizing()))

    def mlflows_check() -> Response | None:
        seen["authorizing"].append(phase.authorizing())
        return Response("denied", status=403) if refuse else None

    def after(response: Response) -> Response:
        seen["after"].append(phase.authorizing())
        return response

    with phase.bracket(app):
        app.before_request(mlflows_check)
        app.after_request(after)

    @app.route("/x")
    def handler() -> str:
        seen["handler"].append(phase.authorizing())
        return "ok"

    return app, seen


def test_only_the_functions_inside_the_bracket_see_the_mark() -> None:
    app, seen = app_with(refuse=False)
    assert app.test_client().get("/x").status_code == 200
    assert seen == {"before": [False], "authorizing": [True], "handler": [False], "after": [False]}


def test_a_refused_request_carries_no_mark_into_its_after_request_functions() -> None:
    app, seen = app_with(refuse=True)
    assert app.test_client().get("/x").status_code == 403
    assert seen == {"before": [False], "authorizing": [True], "handler": [], "after": [False]}


def test_outside_a_request_it_is_never_authorizing() -> None:
    assert phase.authorizing() is False
    with Flask(__name__).app_context():
        assert phase.authorizing() is False
