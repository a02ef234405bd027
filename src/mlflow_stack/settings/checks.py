"""Value checks of the settings: each takes the raw string of one environment variable and
returns the parsed value, or raises ValueError saying what is wrong (the caller names the
variable)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

Parser = Callable[[str], Any]

#: Characters that break .env parsing or compose interpolation when unquoted.
UNSAFE_IN_ENV = re.compile(r"[\s'\"$#\\`]")


def _decimal(value: str) -> bool:
    """ASCII digits only: str.isdigit() also takes other scripts' digits and superscripts."""
    return value.isascii() and value.isdigit()


def text(value: str) -> str:
    """any text"""
    return value


def port(value: str) -> int:
    """TCP port, 1-65535"""
    if not _decimal(value) or not 1 <= int(value) <= 65535:
        raise ValueError("must be a TCP port number between 1 and 65535")
    return int(value)


def int_between(low: int, high: int) -> Parser:
    """A check for a whole number from ``low`` to ``high``."""

    def parse(value: str) -> int:
        if not _decimal(value) or not low <= int(value) <= high:
            raise ValueError(f"must be a whole number between {low} and {high}")
        return int(value)

    parse.__doc__ = f"whole number, {low}-{high}"
    return parse


def boolean(value: str) -> bool:
    """true or false (also 1/0, yes/no, on/off)"""
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def choice(*options: str) -> Parser:
    """A check for one of ``options``, exactly."""

    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    parse.__doc__ = f"one of {', '.join(options)}"
    return parse


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host(value: str) -> str:
    """host name or IP address"""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in value.split(".")):
        raise ValueError("must be a host name or IP address (no scheme, port or path)")
    return value


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def identifier(value: str) -> str:
    """SQL identifier: a letter or _, then letters, digits, _ (at most 63)"""
    if not _IDENTIFIER.match(value):
        raise ValueError("must start with a letter or _ and contain only letters, digits and _")
    return value


def secret(min_length: int) -> Parser:
    """A check for a secret of at least ``min_length`` characters that .env keeps unquoted."""

    def parse(value: str) -> str:
        if len(value) < min_length:
            raise ValueError(f"must be at least {min_length} characters long")
        if UNSAFE_IN_ENV.search(value):
            raise ValueError("must not contain whitespace, quotes, $, #, ` or \\")
        return value

    parse.__doc__ = (
        f"at least {min_length} characters; no whitespace, quotes, $, #, backtick or backslash"
    )
    return parse


def access_key(value: str) -> str:
    """at least 3 characters; no whitespace, quotes, $, #, backtick or backslash"""
    if len(value) < 3 or UNSAFE_IN_ENV.search(value):
        raise ValueError("must be at least 3 characters, without whitespace, quotes, $ or #")
    return value


_USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


def username(value: str) -> str:
    """1-64 letters, digits or . _ @ + -"""
    if not _USERNAME.match(value):
        raise ValueError("must be 1-64 letters, digits or . _ @ + -")
    return value


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def bucket(value: str) -> str:
    """S3 bucket name: 3-63 lowercase letters, digits, . or -"""
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError("must be a valid S3 bucket name (3-63 lowercase letters, digits, . or -)")
    return value


def endpoint_url(value: str) -> str:
    """http:// or https:// URL without path or query"""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:9000")
    if parts.path not in {"", "/"} or parts.query:
        raise ValueError("must not have a path or query (the bucket is set separately)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value.rstrip("/")


_REGION = re.compile(r"^[a-z0-9-]{2,32}$")


def region(value: str) -> str:
    """region name such as us-east-1"""
    if not _REGION.match(value):
        raise ValueError("must be a region name such as us-east-1")
    return value


_HOST_PATTERN = re.compile(r"^[A-Za-z0-9.*:\-\[\]]+$")


def host_patterns(value: str) -> tuple[str, ...]:
    """comma-separated host names; * wildcards"""
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    for pattern in patterns:
        if not _HOST_PATTERN.match(pattern):
            raise ValueError(
                f"{pattern!r} is not a host name or pattern (letters, digits, . - : and * only)"
            )
    return patterns


def networks(value: str) -> tuple[str, ...]:
    """comma-separated IP addresses or CIDR ranges"""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    for network in items:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(
                f"{network!r} is not an IP address or CIDR range such as 10.0.0.0/16"
            ) from None
    return items


def absolute_path(value: str) -> str:
    """absolute path of a file"""
    if not PurePosixPath(value).is_absolute() or value.endswith("/"):
        raise ValueError("must be the absolute path of a file, such as /run/secrets/pg-password")
    if UNSAFE_IN_ENV.search(value):
        raise ValueError("must not contain whitespace, quotes, $, #, ` or \\")
    return value


_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[^\s]+$")


def secret_arn(value: str) -> str:
    """ARN of a Secrets Manager secret"""
    if not _SECRET_ARN.match(value):
        raise ValueError(
            "must be a Secrets Manager secret ARN such as "
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:name-AbCdEf"
        )
    return value


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def issuer_url(value: str) -> str:
    """https:// URL of an OpenID provider (http:// only on loopback)"""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            "must be the provider's https:// issuer URL, such as https://idp.example.com"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("must use https:// (http:// only for a provider on loopback)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return value.rstrip("/")


def public_url(value: str) -> str:
    """http:// or https:// URL users open, without query"""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            "must be the http:// or https:// URL users open, such as https://mlflow.example.com"
        )
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ValueError("must not have a path, query or fragment")
    return value.rstrip("/")


_NAME = re.compile(r"^[^\s,=:]{1,256}$")


def names(value: str) -> tuple[str, ...]:
    """comma-separated names (no whitespace, = or : inside a name)"""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    for item in items:
        if not _NAME.match(item):
            raise ValueError(f"{item!r} is not a name (no whitespace, ',', '=' or ':' inside)")
    return items


def client_id(value: str) -> str:
    """an OAuth client id (no whitespace, quotes, $, #, backtick or backslash)"""
    if len(value) > 256 or UNSAFE_IN_ENV.search(value):
        raise ValueError("must be the client id, without whitespace, quotes, $ or #")
    return value


def claim(value: str) -> str:
    """a claim name (letters, digits, _ - . : /)"""
    if not re.match(r"^[A-Za-z0-9_.:/-]{1,128}$", value):
        raise ValueError("must be a claim name such as groups or preferred_username")
    return value


def claims(value: str) -> tuple[str, ...]:
    """comma-separated claim names"""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise ValueError("must name at least one claim")
    for item in items:
        claim(item)
    return items


def scopes(value: str) -> tuple[str, ...]:
    """space-separated OAuth scopes, openid among them"""
    items = tuple(value.split())
    if "openid" not in items:
        raise ValueError("must include openid")
    if any(UNSAFE_IN_ENV.search(item) for item in items):
        raise ValueError("must not contain quotes, $, #, ` or \\")
    return items


PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


def group_permissions(value: str) -> tuple[tuple[str, str, str], ...]:
    """comma-separated GROUP=PERMISSION or GROUP=EXPERIMENTS:MODELS entries"""
    entries: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        group, equals, grant = item.partition("=")
        group, grant = group.strip(), grant.strip()
        if not equals or not _NAME.match(group):
            raise ValueError(f"{item!r} is not GROUP=PERMISSION (such as ml-team=EDIT)")
        if group in seen:
            raise ValueError(f"names group {group!r} twice")
        seen.add(group)
        experiments, _, models = grant.partition(":")
        models = models or experiments
        for permission in (experiments, models):
            if permission not in PERMISSIONS:
                raise ValueError(f"{item!r}: {permission!r} is not one of {', '.join(PERMISSIONS)}")
        entries.append((group, experiments, models))
    return tuple(entries)
