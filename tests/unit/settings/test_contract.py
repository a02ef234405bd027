"""The settings contract: defaults, checks, one clear problem per bad value, no echoed secrets."""

from __future__ import annotations

import pytest

from mlflow_stack.errors import ConfigError
from mlflow_stack.settings.contract import (
    SETTING_NAMES,
    SETTINGS,
    Setting,
    Settings,
    new_env_values,
    setting,
    unknown_names,
)
from tests.conftest import REQUIRED, SSO

SECRETS = REQUIRED


def problems(**overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**SECRETS, **overrides})
    return caught.value.problems


def test_only_the_secrets_are_required_and_defaults_fill_the_rest() -> None:
    settings = Settings.from_env(SECRETS)
    assert settings.postgres_port == 5432
    assert settings.port == 5000
    assert settings.workers == 2
    assert settings.job_execution is False
    assert settings.s3_endpoint_url == ""  # AWS S3
    assert settings.allowed_hosts == ("mlflow",)
    required = {s.name for s in SETTINGS if s.required}
    # POSTGRES_PASSWORD is one of three sources, exactly one of which is required
    assert required == set(SECRETS) - {"POSTGRES_PASSWORD"}
    assert settings.postgres_password == SECRETS["POSTGRES_PASSWORD"]
    assert settings.postgres_password_file == settings.postgres_password_secret_arn == ""


NO_PASSWORD = (
    "POSTGRES_PASSWORD is not set: set exactly one of POSTGRES_PASSWORD, "
    "POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD_SECRET_ARN"
)


def test_each_missing_secret_is_named_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    assert len(caught.value.problems) == len(SECRETS)
    for name, problem in zip(sorted(SECRETS), sorted(caught.value.problems), strict=True):
        assert problem.startswith(f"{name} is not set: ")
    assert NO_PASSWORD in caught.value.problems


def test_an_empty_value_counts_as_unset() -> None:
    assert Settings.from_env({**SECRETS, "POSTGRES_PORT": ""}).postgres_port == 5432
    assert problems(POSTGRES_PASSWORD="") == [NO_PASSWORD]
    assert problems(POSTGRES_PASSWORD="", POSTGRES_PASSWORD_FILE="") == [NO_PASSWORD]


ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-3f1c2a9e-AbCdEf"


@pytest.mark.parametrize(
    ("source", "value", "attribute"),
    [
        ("POSTGRES_PASSWORD_FILE", "/run/secrets/pg-password", "postgres_password_file"),
        ("POSTGRES_PASSWORD_SECRET_ARN", ARN, "postgres_password_secret_arn"),
    ],
)
def test_the_password_may_come_from_a_file_or_a_secret_instead(
    source: str, value: str, attribute: str
) -> None:
    settings = Settings.from_env({**SECRETS, "POSTGRES_PASSWORD": "", source: value})
    assert getattr(settings, attribute) == value
    assert settings.postgres_password == ""
    assert value not in settings.backend_store_uri


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (
            {"POSTGRES_PASSWORD_FILE": "/run/secrets/pg-password"},
            "POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are both set: set exactly one of "
            "POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD_SECRET_ARN",
        ),
        (
            {"POSTGRES_PASSWORD_FILE": "/run/pw", "POSTGRES_PASSWORD_SECRET_ARN": ARN},
            "POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE and POSTGRES_PASSWORD_SECRET_ARN are "
            "all set: set exactly one of POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE or "
            "POSTGRES_PASSWORD_SECRET_ARN",
        ),
    ],
)
def test_more_than_one_password_source_is_one_line_naming_them(
    given: dict[str, str], line: str
) -> None:
    assert problems(**given) == [line]


def test_two_sources_without_the_static_one_are_refused_too() -> None:
    found = problems(
        POSTGRES_PASSWORD="", POSTGRES_PASSWORD_FILE="/run/pw", POSTGRES_PASSWORD_SECRET_ARN=ARN
    )
    assert found == [
        "POSTGRES_PASSWORD_FILE and POSTGRES_PASSWORD_SECRET_ARN are both set: set exactly one "
        "of POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD_SECRET_ARN"
    ]


def test_an_invalid_password_source_is_named_with_its_value() -> None:
    assert problems(POSTGRES_PASSWORD="", POSTGRES_PASSWORD_FILE="pg-password") == [
        "POSTGRES_PASSWORD_FILE='pg-password' must be the absolute path of a file, such as "
        "/run/secrets/pg-password"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTGRES_PORT", "54x32"),
        ("POSTGRES_PORT", "70000"),
        ("POSTGRES_HOST", "db.example.com:5432"),
        ("POSTGRES_HOST", "postgresql://db"),
        ("POSTGRES_USER", "mlflow-user"),
        ("POSTGRES_SSLMODE", "on"),
        ("MLFLOW_STACK_S3_BUCKET", "My_Bucket"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "minio:9000"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:9000/mlflow"),
        ("MLFLOW_STACK_S3_ENDPOINT_URL", "http://minio:90000"),
        ("MLFLOW_STACK_WORKERS", "0"),
        ("MLFLOW_STACK_ALLOWED_HOSTS", "good.example.com, bad/host"),
        ("MLFLOW_STACK_TRUSTED_PROXIES", "10.0.0.0/16, *"),
        ("MLFLOW_STACK_TRUSTED_PROXIES", "alb.example.com"),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "maybe"),
        ("MLFLOW_STACK_AUTH_DEFAULT_PERMISSION", "WRITE"),
    ],
)
def test_an_invalid_value_is_named_with_what_is_wrong(name: str, value: str) -> None:
    # What each check says is in test_checks.py; here: the variable, its value, then that.
    with pytest.raises(ValueError) as check:
        setting(name).parse(value)
    (problem,) = problems(**{name: value})
    assert problem == f"{name}={value!r} {check.value}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("short", "at least 12 characters"), ("has$dollar-sign-1234", "must not contain")],
)
def test_a_bad_secret_is_named_but_never_echoed(value: str, expected: str) -> None:
    (problem,) = problems(MLFLOW_AUTH_ADMIN_PASSWORD=value)
    assert problem.startswith("MLFLOW_AUTH_ADMIN_PASSWORD ")
    assert expected in problem
    assert value not in problem


def test_every_problem_is_reported_at_once() -> None:
    found = problems(POSTGRES_PORT="x", MLFLOW_STACK_PORT="y", POSTGRES_SSLMODE="z")
    assert [p.split("=")[0] for p in found] == [
        "POSTGRES_PORT",
        "POSTGRES_SSLMODE",
        "MLFLOW_STACK_PORT",
    ]


def test_cross_checks_name_both_variables() -> None:
    (problem,) = problems(MLFLOW_STACK_AUTH_DB="mlflow")
    assert "MLFLOW_STACK_AUTH_DB" in problem and "POSTGRES_DB" in problem
    (problem,) = problems(MLFLOW_STACK_S3_ACCESS_KEY="AKIAEXAMPLE")
    assert "MLFLOW_STACK_S3_SECRET_KEY" in problem


def test_database_uris_select_psycopg2_and_carry_no_password() -> None:
    settings = Settings.from_env(
        {**SECRETS, "POSTGRES_HOST": "db.internal", "POSTGRES_PORT": "6543"}
    )
    assert settings.backend_store_uri == "postgresql+psycopg2://mlflow@db.internal:6543/mlflow"
    assert settings.auth_database_uri.endswith("/mlflow_auth")
    assert SECRETS["POSTGRES_PASSWORD"] not in settings.backend_store_uri


def test_tracking_uri_never_points_at_a_wildcard_address() -> None:
    settings = Settings.from_env({**SECRETS, "MLFLOW_STACK_HOST": "0.0.0.0"})
    assert settings.tracking_uri == "http://127.0.0.1:5000"


def test_generated_values_satisfy_every_check() -> None:
    values = new_env_values()
    assert set(values) == {s.name for s in SETTINGS if s.generate}
    settings = Settings.from_env(values)
    assert settings.s3_access_key and settings.s3_secret_key
    assert new_env_values() != values  # fresh every time


def test_typos_of_setting_names_get_a_suggestion() -> None:
    warnings = unknown_names(
        ["MLFLOW_STACK_WORKER", "POSTGRES_PASWORD", "HOME", "MLFLOW_STACK_PORT"]
    )
    assert warnings == [
        "MLFLOW_STACK_WORKER is not a setting of mlflow-stack (did you mean MLFLOW_STACK_WORKERS?)",
        "POSTGRES_PASWORD is not a setting of mlflow-stack (did you mean POSTGRES_PASSWORD?)",
    ]


def test_only_names_with_the_stacks_prefixes_are_warned_about() -> None:
    assert unknown_names(["MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "PATH", *SETTING_NAMES]) == []
    far = "MLFLOW_STACK_" + "Q" * 20
    assert unknown_names([far]) == [f"{far} is not a setting of mlflow-stack"]  # no guess


def test_cross_checks_wait_until_every_value_is_valid() -> None:
    assert problems(POSTGRES_PORT="x", MLFLOW_STACK_AUTH_DB="mlflow") == [
        "POSTGRES_PORT='x' must be a TCP port number between 1 and 65535"
    ]


def test_setting_finds_each_setting_by_name_and_nothing_else() -> None:
    for each in SETTINGS:
        assert setting(each.name) is each
    assert setting("MLFLOW_STACK_PORT").default == "5000"
    with pytest.raises(KeyError):
        setting("MLFLOW_STACK_WORKER")


def test_value_from_parses_the_value_or_falls_back_to_the_default() -> None:
    port = setting("MLFLOW_STACK_PORT")
    assert port.value_from({"MLFLOW_STACK_PORT": "5050"}) == 5050
    assert port.value_from({}) == 5000
    assert port.value_from({"MLFLOW_STACK_PORT": ""}) == 5000  # empty counts as unset
    assert setting("MLFLOW_STACK_GC_RETENTION_DAYS").value_from({}) == 30


def test_value_from_names_the_variable_and_the_value_that_is_wrong() -> None:
    with pytest.raises(ConfigError) as caught:
        setting("MLFLOW_STACK_PORT").value_from({"MLFLOW_STACK_PORT": "http"})
    assert caught.value.problems == [
        "MLFLOW_STACK_PORT='http' must be a TCP port number between 1 and 65535"
    ]
    assert caught.value.exit_code == 2  # a configuration mistake


def test_value_from_never_echoes_a_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        setting("POSTGRES_PASSWORD").value_from({"POSTGRES_PASSWORD": "short"})
    assert caught.value.problems == ["POSTGRES_PASSWORD must be at least 12 characters long"]


def test_a_setting_without_default_is_required() -> None:
    assert Setting("X", "doc", "server").required
    assert not Setting("X", "doc", "server", default="").required
    assert setting("MLFLOW_FLASK_SERVER_SECRET_KEY").required


def test_new_values_are_random_and_pass_their_check() -> None:
    for each in (s for s in SETTINGS if s.generate):
        first, second = each.new_value(), each.new_value()
        assert first != second
        assert each.parse(first) == first
        if each.secret:
            assert len(first) >= 40  # 32 random bytes
        else:
            assert len(first) == 20 and int(first, 16) >= 0  # 10 random bytes, in hex


def test_database_uris_bracket_an_ipv6_host() -> None:
    settings = Settings.from_env({**SECRETS, "POSTGRES_HOST": "fd00::5", "POSTGRES_USER": "Runs_1"})
    assert settings.backend_store_uri == "postgresql+psycopg2://Runs_1@[fd00::5]:5432/mlflow"


def test_artifacts_live_in_the_bucket_and_the_tracking_uri_names_the_server() -> None:
    settings = Settings.from_env(
        {**SECRETS, "MLFLOW_STACK_S3_BUCKET": "team-a", "MLFLOW_STACK_HOST": "10.0.0.5"}
    )
    assert settings.artifacts_destination == "s3://team-a"
    assert settings.tracking_uri == "http://10.0.0.5:5000"
    ipv6_wildcard = Settings.from_env({**SECRETS, "MLFLOW_STACK_HOST": "::"})
    assert ipv6_wildcard.tracking_uri == "http://127.0.0.1:5000"


def test_value_from_leaves_an_empty_default_empty_as_from_env_does() -> None:
    from mlflow_stack.settings.contract import setting

    endpoint = setting("MLFLOW_STACK_S3_ENDPOINT_URL")
    assert endpoint.value_from({}) == ""
    assert Settings.from_env(REQUIRED).s3_endpoint_url == ""


def test_single_sign_on_is_off_by_default_and_needs_nothing() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.auth_mode == "basic"
    assert settings.oidc_issuer == ""


def test_single_sign_on_parses_its_settings() -> None:
    settings = Settings.from_env({**REQUIRED, **SSO, "MLFLOW_STACK_OIDC_ADMIN_GROUPS": "a,b"})
    assert settings.auth_mode == "oidc"
    assert settings.oidc_group_permissions == (("ml-team", "EDIT", "EDIT"),)
    assert settings.oidc_admin_groups == ("a", "b")
    assert settings.oidc_scopes == ("openid", "profile", "email")
    assert settings.oidc_session_ttl == 3600


NEEDS_IT = "is not set: MLFLOW_STACK_AUTH_MODE=oidc needs it"
ONE_SECRET = (
    "is not set: with MLFLOW_STACK_AUTH_MODE=oidc set exactly one of it and "
    "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE"
)
NO_GROUPS = (
    "is not set: with MLFLOW_STACK_AUTH_MODE=oidc name the groups that may sign in "
    "(or MLFLOW_STACK_OIDC_ADMIN_GROUPS)"
)


@pytest.mark.parametrize(
    ("unset", "why"),
    [
        ("MLFLOW_STACK_PUBLIC_URL", NEEDS_IT),
        ("MLFLOW_STACK_OIDC_ISSUER", NEEDS_IT),
        ("MLFLOW_STACK_OIDC_CLIENT_SECRET", ONE_SECRET),
        ("MLFLOW_STACK_OIDC_GROUP_PERMISSIONS", NO_GROUPS),
    ],
)
def test_single_sign_on_names_what_it_lacks(unset: str, why: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**REQUIRED, **SSO, unset: ""})
    assert raised.value.problems == [f"{unset} {why}"]


def test_the_client_secret_comes_from_one_place() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**REQUIRED, **SSO, "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE": "/run/s"})
    assert raised.value.problems == [
        "MLFLOW_STACK_OIDC_CLIENT_SECRET and its _FILE are both set: with "
        "MLFLOW_STACK_AUTH_MODE=oidc set exactly one of it and MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE"
    ]
    file_only = {
        **SSO,
        "MLFLOW_STACK_OIDC_CLIENT_SECRET": "",
        "MLFLOW_STACK_OIDC_CLIENT_SECRET_FILE": "/run/s",
    }
    assert Settings.from_env({**REQUIRED, **file_only}).oidc_client_secret_file == "/run/s"


def test_the_public_urls_host_is_answered_with_single_sign_on() -> None:
    settings = Settings.from_env({**REQUIRED, **SSO})
    assert settings.host_names == ("mlflow", "mlflow.example.com")
    basic = Settings.from_env({**REQUIRED, "MLFLOW_STACK_PUBLIC_URL": "https://x.example.com"})
    assert basic.host_names == ("mlflow",)
    listed = Settings.from_env(
        {**REQUIRED, **SSO, "MLFLOW_STACK_ALLOWED_HOSTS": "mlflow.example.com"}
    )
    assert listed.host_names == ("mlflow.example.com",)
