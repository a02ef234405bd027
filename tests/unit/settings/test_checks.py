"""The value checks: each takes one raw string and returns the parsed value, or raises a
ValueError saying what is wrong; its one-line docstring is the "check" column of
docs/configuration.md."""

from __future__ import annotations

import inspect

import pytest

from mlflow_stack.settings import checks
from mlflow_stack.settings.contract import SETTINGS

PORT = "must be a TCP port number between 1 and 65535"
HOST = "must be a host name or IP address (no scheme, port or path)"
IDENTIFIER = "must start with a letter or _ and contain only letters, digits and _"
UNSAFE = "must not contain whitespace, quotes, $, #, ` or \\"
BUCKET = "must be a valid S3 bucket name (3-63 lowercase letters, digits, . or -)"
URL = "must be an http:// or https:// URL such as http://127.0.0.1:9000"
USERNAME = "must be 1-64 letters, digits or . _ @ + -"
ACCESS_KEY = "must be at least 3 characters, without whitespace, quotes, $ or #"
REGION = "must be a region name such as us-east-1"
FILE = "must be the absolute path of a file, such as /run/secrets/pg-password"
ARN = (
    "must be a Secrets Manager secret ARN such as "
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:name-AbCdEf"
)
RDS_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-3f1c2a9e-AbCdEf"

#: (check, raw value) -> parsed value
VALID: list[tuple[checks.Parser, str, object]] = [
    (checks.text, "", ""),
    (checks.text, "  any thing  ", "  any thing  "),
    (checks.port, "1", 1),
    (checks.port, "5432", 5432),
    (checks.port, "65535", 65535),
    (checks.int_between(0, 3600), "0", 0),
    (checks.int_between(0, 3600), "3600", 3600),
    (checks.int_between(1, 64), "007", 7),
    (checks.boolean, "true", True),
    (checks.boolean, "TRUE", True),
    (checks.boolean, "1", True),
    (checks.boolean, "Yes", True),
    (checks.boolean, "on", True),
    (checks.boolean, "false", False),
    (checks.boolean, "0", False),
    (checks.boolean, "NO", False),
    (checks.boolean, "Off", False),
    (checks.choice("READ", "EDIT"), "EDIT", "EDIT"),
    (checks.host, "127.0.0.1", "127.0.0.1"),
    (checks.host, "::1", "::1"),
    (checks.host, "fd00::12", "fd00::12"),
    (checks.host, "postgres", "postgres"),
    (checks.host, "db-1.internal.example.com", "db-1.internal.example.com"),
    (checks.host, "a" * 63 + ".example", "a" * 63 + ".example"),
    (checks.identifier, "mlflow", "mlflow"),
    (checks.identifier, "_private", "_private"),
    (checks.identifier, "Runs_2", "Runs_2"),
    (checks.identifier, "x" * 63, "x" * 63),
    (checks.secret(12), "abcdefghijkl", "abcdefghijkl"),
    (checks.secret(12), "-_.!@%^&*()+=,;:?~", "-_.!@%^&*()+=,;:?~"),
    (checks.access_key, "abc", "abc"),
    (checks.access_key, "AKIA0123456789EXAMPLE", "AKIA0123456789EXAMPLE"),
    (checks.username, "admin", "admin"),
    (checks.username, "jane.doe+ml@example.com", "jane.doe+ml@example.com"),
    (checks.username, "u" * 64, "u" * 64),
    (checks.bucket, "mlf", "mlf"),
    (checks.bucket, "team-a.artifacts", "team-a.artifacts"),
    (checks.bucket, "b" * 63, "b" * 63),
    (checks.endpoint_url, "http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    (checks.endpoint_url, "https://s3.example.com", "https://s3.example.com"),
    (checks.endpoint_url, "http://minio:9000/", "http://minio:9000"),  # the slash goes
    (checks.endpoint_url, "http://[::1]:9000", "http://[::1]:9000"),
    (checks.region, "us-east-1", "us-east-1"),
    (checks.region, "eu-central-2", "eu-central-2"),
    (checks.host_patterns, "mlflow", ("mlflow",)),
    (
        checks.host_patterns,
        " mlflow.example.com, *.internal.example ,10.1.2.3:8080,[::1]",
        ("mlflow.example.com", "*.internal.example", "10.1.2.3:8080", "[::1]"),
    ),
    (checks.host_patterns, "", ()),
    (checks.host_patterns, " , ,", ()),
    (checks.networks, "", ()),
    (checks.networks, "10.0.0.0/16, 192.168.1.7", ("10.0.0.0/16", "192.168.1.7")),
    (checks.networks, "10.0.0.1/16,fd00::/8", ("10.0.0.1/16", "fd00::/8")),  # host bits: fine
    (checks.absolute_path, "/run/secrets/pg-password", "/run/secrets/pg-password"),
    (checks.absolute_path, "/etc/mlflow-stack/pg.pw", "/etc/mlflow-stack/pg.pw"),
    (checks.secret_arn, RDS_SECRET, RDS_SECRET),
    (
        checks.secret_arn,
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:mlflow/database-x1",
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:mlflow/database-x1",
    ),
]

#: (check, raw value, the message of the ValueError)
INVALID: list[tuple[checks.Parser, str, str]] = [
    (checks.port, "", PORT),
    (checks.port, "0", PORT),
    (checks.port, "65536", PORT),
    (checks.port, "70000", PORT),
    (checks.port, "54x32", PORT),
    (checks.port, "-1", PORT),
    (checks.port, "+80", PORT),
    (checks.port, " 80", PORT),
    (checks.port, "80.0", PORT),
    (checks.int_between(1, 64), "0", "must be a whole number between 1 and 64"),
    (checks.int_between(1, 64), "65", "must be a whole number between 1 and 64"),
    (checks.int_between(1, 64), "two", "must be a whole number between 1 and 64"),
    (checks.int_between(0, 36500), "-1", "must be a whole number between 0 and 36500"),
    (checks.int_between(0, 10), "1e3", "must be a whole number between 0 and 10"),
    (checks.boolean, "", "must be true or false"),
    (checks.boolean, "maybe", "must be true or false"),
    (checks.boolean, "2", "must be true or false"),
    (checks.boolean, " true", "must be true or false"),
    (checks.choice("READ", "EDIT"), "read", "must be one of READ, EDIT"),  # exactly
    (checks.choice("READ", "EDIT"), "WRITE", "must be one of READ, EDIT"),
    (checks.choice("READ", "EDIT"), "", "must be one of READ, EDIT"),
    (
        checks.choice("READ", "EDIT", "MANAGE", "NO_PERMISSIONS"),
        "WRITE",
        "must be one of READ, EDIT, MANAGE, NO_PERMISSIONS",
    ),
    (
        checks.choice("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        "on",
        "must be one of disable, allow, prefer, require, verify-ca, verify-full",
    ),
    (checks.host, "", HOST),
    (checks.host, "db.example.com:5432", HOST),
    (checks.host, "postgresql://db", HOST),
    (checks.host, "db/path", HOST),
    (checks.host, "[::1]", HOST),
    (checks.host, "-db.example", HOST),
    (checks.host, "db-.example", HOST),
    (checks.host, "db..example", HOST),
    (checks.host, "example.com.", HOST),
    (checks.host, "under_score.example", HOST),
    (checks.host, "a" * 64 + ".example", HOST),
    (checks.host, ".".join(["a" * 50] * 6), HOST),  # 305 characters
    (checks.identifier, "", IDENTIFIER),
    (checks.identifier, "1runs", IDENTIFIER),
    (checks.identifier, "mlflow-user", IDENTIFIER),
    (checks.identifier, "my db", IDENTIFIER),
    (checks.identifier, 'x"; DROP', IDENTIFIER),
    (checks.identifier, "x" * 64, IDENTIFIER),
    (checks.secret(12), "", "must be at least 12 characters long"),
    (checks.secret(12), "short", "must be at least 12 characters long"),
    (checks.secret(16), "fifteen-chars-x", "must be at least 16 characters long"),
    (checks.secret(12), "has$dollar-sign-1234", UNSAFE),
    (checks.secret(12), "has space in it", UNSAFE),
    (checks.secret(12), "tab\tseparated-x", UNSAFE),
    (checks.secret(12), "new\nline-1234567", UNSAFE),
    (checks.secret(12), "single'quote-1234", UNSAFE),
    (checks.secret(12), 'double"quote-1234', UNSAFE),
    (checks.secret(12), "hash#comment-1234", UNSAFE),
    (checks.secret(12), "back\\slash-12345", UNSAFE),
    (checks.secret(12), "back`tick-123456", UNSAFE),
    (checks.access_key, "ab", ACCESS_KEY),
    (checks.access_key, "", ACCESS_KEY),
    (checks.access_key, "AKIA EXAMPLE", ACCESS_KEY),
    (checks.access_key, "AKIA$EXAMPLE", ACCESS_KEY),
    (checks.username, "", USERNAME),
    (checks.username, "jane doe", USERNAME),
    (checks.username, "a/b", USERNAME),
    (checks.username, "u" * 65, USERNAME),
    (checks.bucket, "ab", BUCKET),
    (checks.bucket, "My_Bucket", BUCKET),
    (checks.bucket, "-bucket", BUCKET),
    (checks.bucket, "bucket-", BUCKET),
    (checks.bucket, "two..dots", BUCKET),
    (checks.bucket, "b" * 64, BUCKET),
    (checks.endpoint_url, "", URL),
    (checks.endpoint_url, "minio:9000", URL),
    (checks.endpoint_url, "ftp://minio:9000", URL),
    (checks.endpoint_url, "http://", URL),
    (checks.endpoint_url, "http://minio:9000/mlflow", "must not have a path or query"),
    (checks.endpoint_url, "http://minio:9000?x=1", "must not have a path or query"),
    (checks.endpoint_url, "http://minio:90000", "has an invalid port"),
    (checks.endpoint_url, "http://minio:port", "has an invalid port"),
    (checks.region, "", REGION),
    (checks.region, "u", REGION),
    (checks.region, "US-EAST-1", REGION),
    (checks.region, "us_east_1", REGION),
    (checks.region, "r" * 33, REGION),
    (
        checks.host_patterns,
        "good.example.com, bad/host",
        "'bad/host' is not a host name or pattern (letters, digits, . - : and * only)",
    ),
    (checks.host_patterns, "mlflow,http://mlflow", "'http://mlflow' is not a host name"),
    (checks.host_patterns, "under_score", "'under_score' is not a host name"),
    (
        checks.networks,
        "10.0.0.0/16, *",
        "'*' is not an IP address or CIDR range such as 10.0.0.0/16",
    ),
    (checks.networks, "alb.example.com", "'alb.example.com' is not an IP address or CIDR"),
    (checks.networks, "10.0.0.0/33", "'10.0.0.0/33' is not an IP address or CIDR"),
    (checks.absolute_path, "", FILE),
    (checks.absolute_path, "pg-password", FILE),
    (checks.absolute_path, "./pg-password", FILE),
    (checks.absolute_path, "/run/secrets/", FILE),
    (checks.absolute_path, "/run/my secrets/pw", UNSAFE),
    (checks.absolute_path, "/run/$HOME/pw", UNSAFE),
    (checks.secret_arn, "", ARN),
    (checks.secret_arn, "mlflow/database", ARN),
    (checks.secret_arn, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:", ARN),
    (checks.secret_arn, "arn:aws:s3:::bucket", ARN),
    (checks.secret_arn, "arn:aws:secretsmanager:eu-west-1:1234:secret:x", ARN),
]


def name(check: checks.Parser) -> str:
    return check.__name__ if check.__name__ != "parse" else (check.__doc__ or "").split(",")[0]


@pytest.mark.parametrize(
    ("check", "raw", "parsed"), VALID, ids=[f"{name(c)}:{r!r}" for c, r, _ in VALID]
)
def test_a_valid_value_is_parsed(check: checks.Parser, raw: str, parsed: object) -> None:
    value = check(raw)
    assert value == parsed
    assert type(value) is type(parsed)


@pytest.mark.parametrize(
    ("check", "raw", "expected"), INVALID, ids=[f"{name(c)}:{r!r}" for c, r, _ in INVALID]
)
def test_an_invalid_value_raises_saying_what_is_wrong(
    check: checks.Parser, raw: str, expected: str
) -> None:
    with pytest.raises(ValueError) as raised:
        check(raw)
    message = str(raised.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_a_secret_is_never_repeated_in_its_message() -> None:
    for raw in ("short$", "a-long-enough-secret with a space"):
        with pytest.raises(ValueError) as raised:
            checks.secret(12)(raw)
        assert raw not in str(raised.value)


def test_unsafe_in_env_matches_every_character_that_breaks_an_unquoted_env_value() -> None:
    for character in " \t\n'\"$#\\`":
        assert checks.UNSAFE_IN_ENV.search(f"abc{character}def"), repr(character)
    assert not checks.UNSAFE_IN_ENV.search("only-safe_characters.!@%^&*()+=,;:?~")


def test_the_made_checks_describe_their_bounds_and_options() -> None:
    assert checks.int_between(1, 64).__doc__ == "whole number, 1-64"
    assert checks.choice("READ", "EDIT").__doc__ == "one of READ, EDIT"
    assert checks.secret(16).__doc__ == (
        "at least 16 characters; no whitespace, quotes, $, #, backtick or backslash"
    )


#: The checks themselves: the module's functions of one raw value.
MODULE_CHECKS = [
    function
    for _, function in inspect.getmembers(checks, inspect.isfunction)
    if function.__module__ == checks.__name__
    and not function.__name__.startswith("_")
    and list(inspect.signature(function).parameters) == ["value"]
]


@pytest.mark.parametrize(
    "check",
    [*MODULE_CHECKS, *(setting.parse for setting in SETTINGS)],
    ids=[*(c.__name__ for c in MODULE_CHECKS), *(s.name for s in SETTINGS)],
)
def test_every_check_has_a_one_line_docstring(check: checks.Parser) -> None:
    doc = check.__doc__
    assert doc, f"{check} has no docstring: docs/configuration.md shows it"
    assert doc == doc.strip()
    assert "\n" not in doc


def test_the_module_checks_are_all_found() -> None:
    assert {c.__name__ for c in MODULE_CHECKS} == {
        "text",
        "port",
        "boolean",
        "host",
        "identifier",
        "access_key",
        "username",
        "bucket",
        "endpoint_url",
        "region",
        "host_patterns",
        "networks",
        "absolute_path",
        "secret_arn",
        "issuer_url",
        "public_url",
        "names",
        "client_id",
        "claim",
        "claims",
        "scopes",
        "group_permissions",
    }


@pytest.mark.parametrize("value", ["\u0663", "\u00b2", "\uff15\uff10\uff10\uff10"])
def test_numbers_take_ascii_digits_only(value: str) -> None:
    with pytest.raises(ValueError, match="must be a TCP port number"):
        checks.port(value)
    with pytest.raises(ValueError, match="must be a whole number between 0 and 10"):
        checks.int_between(0, 10)(value)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("https://idp.example.com/realms/team/", "https://idp.example.com/realms/team"),
        ("http://127.0.0.1:4000", "http://127.0.0.1:4000"),
        ("http://localhost:4000/oidc", "http://localhost:4000/oidc"),
    ],
)
def test_an_issuer_is_https_or_on_loopback(value: str, parsed: str) -> None:
    assert checks.issuer_url(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://idp.example.com", "must use https://"),
        ("idp.example.com", "issuer URL"),
        ("https://idp.example.com/?x=1", "query"),
    ],
)
def test_a_bad_issuer_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checks.issuer_url(value)


def test_a_public_url_has_no_path() -> None:
    assert checks.public_url("https://mlflow.example.com/") == "https://mlflow.example.com"
    with pytest.raises(ValueError, match="path"):
        checks.public_url("https://mlflow.example.com/mlflow")


def test_scopes_need_openid() -> None:
    assert checks.scopes("openid  profile groups") == ("openid", "profile", "groups")
    with pytest.raises(ValueError, match="openid"):
        checks.scopes("profile email")


def test_group_permissions_name_one_or_two_permissions() -> None:
    assert checks.group_permissions("ml-team=EDIT, analysts=READ:NO_PERMISSIONS,") == (
        ("ml-team", "EDIT", "EDIT"),
        ("analysts", "READ", "NO_PERMISSIONS"),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ml-team", "is not GROUP=PERMISSION"),
        ("ml-team=WRITE", "'WRITE' is not one of READ, EDIT, MANAGE, NO_PERMISSIONS"),
        ("a=READ,a=EDIT", "names group 'a' twice"),
        ("a b=READ", "is not GROUP=PERMISSION"),
    ],
)
def test_bad_group_permissions_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checks.group_permissions(value)


def test_names_and_claims() -> None:
    assert checks.names("ml-admins, platform") == ("ml-admins", "platform")
    with pytest.raises(ValueError, match="is not a name"):
        checks.names("a=b")
    assert checks.claim("https://example.com/groups") == "https://example.com/groups"
    with pytest.raises(ValueError, match="claim name"):
        checks.claim("two words")
    assert checks.client_id("0oa1b2c3") == "0oa1b2c3"
    with pytest.raises(ValueError, match="client id"):
        checks.client_id("a b")


def test_claims_are_a_comma_separated_list() -> None:
    assert checks.claims("preferred_username, azp") == ("preferred_username", "azp")
    with pytest.raises(ValueError, match="at least one claim"):
        checks.claims(" , ")
    with pytest.raises(ValueError, match="claim name"):
        checks.claims("groups,two words")
