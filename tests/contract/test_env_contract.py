"""One configuration contract: settings.py, .env.example and docker-compose.yml name the same
variables with the same defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mlflow_stack.settings.contract import (
    COMPOSE_ONLY,
    RUNTIMES,
    SERVE_SETTING_NAMES,
    SERVE_SETTINGS,
    SETTING_NAMES,
    SETTINGS,
)
from mlflow_stack.settings.render import render_env_file, render_reference

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
DEFAULTS = {s.name: s.default for s in SETTINGS}
MINIO_ROOT = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}


def interpolated(service: str) -> set[str]:
    """The settings a service's environment takes from .env."""
    environment = COMPOSE["services"][service].get("environment") or {}
    return {m["name"] for value in environment.values() for m in INTERPOLATION.finditer(str(value))}


def test_env_example_is_rendered_from_the_settings_module() -> None:
    assert (REPO / ".env.example").read_text() == render_env_file(), (
        "regenerate it: mlflow-stack config example > .env.example"
    )


def test_mlflow_service_receives_exactly_the_settings_serve_reads() -> None:
    environment = COMPOSE["services"]["mlflow"]["environment"]
    assert set(environment) == SERVE_SETTING_NAMES


def test_settings_serve_does_not_read_are_read_by_compose_only() -> None:
    assert {s.name for s in COMPOSE_ONLY} == MINIO_ROOT
    assert SETTING_NAMES == SERVE_SETTING_NAMES | MINIO_ROOT
    for setting in SERVE_SETTINGS:
        assert setting.read_by == frozenset(RUNTIMES), setting.name
    for setting in COMPOSE_ONLY:
        assert setting.read_by == {"compose"}, setting.name
        assert setting.section == "s3" and setting.generate, setting.name


def test_minio_root_credentials_reach_only_minio_and_its_provisioning() -> None:
    holders = {name for name in COMPOSE["services"] if interpolated(name) & MINIO_ROOT}
    assert holders == {"minio", "minio-init"}
    assert interpolated("minio") == MINIO_ROOT
    assert set(COMPOSE["services"]["minio"]["environment"]) == {*MINIO_ROOT, "MINIO_BROWSER"}
    # minio-init: the root credentials, plus the bucket and the server's user it provisions
    assert interpolated("minio-init") == MINIO_ROOT | {
        "MLFLOW_STACK_S3_BUCKET",
        "MLFLOW_STACK_S3_ACCESS_KEY",
        "MLFLOW_STACK_S3_SECRET_KEY",
    }
    for service in ("minio", "minio-init"):
        for name in MINIO_ROOT:
            assert (
                COMPOSE["services"][service]["environment"][name]
                == f"${{{name}:?set {name} in .env (see .env.example)}}"
            )


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
        "POSTGRES_PASSWORD",  # one of three sources for serve, but compose's postgres needs it
        "MLFLOW_STACK_S3_ACCESS_KEY",
        "MLFLOW_STACK_S3_SECRET_KEY",
        *sorted(MINIO_ROOT),
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
    read_on_ec2 = {s.name for s in SETTINGS if "ec2" in s.read_by}
    assert read_on_ec2 == SERVE_SETTING_NAMES  # compose-only settings never reach EC2
    assert user_settable <= read_on_ec2
    assert read_on_ec2 - user_settable == {s.name for s in SETTINGS if "ec2" in s.fixed_by}
