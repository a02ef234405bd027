"""One configuration contract: settings.py, .env.example and docker-compose.yml name the same
variables with the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_stack.settings.contract import SETTING_NAMES, SETTINGS
from mlflow_stack.settings.render import render_env_file, render_reference

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
DEFAULTS = {s.name: s.default for s in SETTINGS}


def test_env_example_is_rendered_from_the_settings_module() -> None:
    assert (REPO / ".env.example").read_text() == render_env_file(), (
        "regenerate it: mlflow-stack config example > .env.example"
    )


def test_mlflow_service_receives_exactly_the_settings() -> None:
    environment = COMPOSE["services"]["mlflow"]["environment"]
    assert set(environment) == SETTING_NAMES


def test_compose_interpolates_only_settings() -> None:
    names = {m["name"] for m in INTERPOLATION.finditer(COMPOSE_TEXT)}
    assert names <= SETTING_NAMES, names - SETTING_NAMES
    assert names, "compose should take its values from .env"


def test_compose_defaults_equal_the_settings_defaults() -> None:
    for match in INTERPOLATION.finditer(COMPOSE_TEXT):
        if match["op"] == ":-":
            assert match["arg"] == DEFAULTS[match["name"]], match.group(0)


@pytest.mark.parametrize(
    "name",
    [
        *sorted(s.name for s in SETTINGS if s.required),
        "MLFLOW_STACK_S3_ACCESS_KEY",
        "MLFLOW_STACK_S3_SECRET_KEY",
    ],
)
def test_compose_refuses_to_start_without_each_secret(name: str) -> None:
    uses = [m for m in INTERPOLATION.finditer(COMPOSE_TEXT) if m["name"] == name]
    assert uses, f"{name} is not passed by compose"
    for use in uses:
        assert use["op"] == ":?", f"{use.group(0)} must fail when unset"
        assert ".env" in use["arg"]


def test_no_literal_secret_in_compose() -> None:
    secret_words = re.compile(r"PASSWORD|SECRET|_KEY$|ROOT_USER")
    for service_name, service in COMPOSE["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_words.search(key):
                assert INTERPOLATION.fullmatch(str(value)), f"{service_name}.{key} = {value!r}"


def test_configuration_reference_is_rendered_from_the_settings_module() -> None:
    assert (REPO / "docs" / "configuration.md").read_text() == render_reference(), (
        "regenerate it: mlflow-stack config reference > docs/configuration.md"
    )


def test_what_compose_sets_itself_is_what_the_contract_says() -> None:
    environment = COMPOSE["services"]["mlflow"]["environment"]
    fixed = {name for name, value in environment.items() if not INTERPOLATION.search(str(value))}
    assert fixed == {s.name for s in SETTINGS if "compose" in s.fixed_by}


def test_what_terraform_sets_itself_is_what_the_contract_says() -> None:
    main_tf = (REPO / "terraform" / "modules" / "server" / "main.tf").read_text()
    defaults_block = re.search(r"setting_defaults = \{(?P<body>.*?)\n  \}", main_tf, re.S)
    assert defaults_block, "setting_defaults not found in the server module"
    user_settable = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s+=", defaults_block["body"], re.M))
    assert user_settable, "no setting in setting_defaults"
    assert SETTING_NAMES - user_settable == {s.name for s in SETTINGS if "ec2" in s.fixed_by}
