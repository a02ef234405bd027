"""Who a token names and what their groups make them: the MLflow username (from
MLFLOW_STACK_OIDC_USERNAME_CLAIM), the groups (MLFLOW_STACK_OIDC_GROUPS_CLAIM) the server
knows, and whether they make the person an admin. Someone in none of the configured groups
may not use the server."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow_stack.sso.config import SignOnConfig

# MLflow keeps usernames as given; these are what an identity provider's names look like
# (e-mail addresses, UPNs, logins), without characters that would break a URL or a header.
_USERNAME = re.compile(r"^[A-Za-z0-9._@+\-]{1,255}$")


class NotAllowedError(Exception):
    """The person or client signed in, but may not use this server; the message says why."""


@dataclass(frozen=True)
class Identity:
    username: str
    groups: frozenset[str]  # the configured groups they are in, and only those
    admin: bool


def groups_of(claims: Mapping[str, Any], names: tuple[str, ...]) -> frozenset[str]:
    """The group names of the claims ``names`` together (each a list of names, or one)."""
    found: set[str] = set()
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


def identity_of(claims: Mapping[str, Any], config: SignOnConfig) -> Identity:
    """The identity in ``claims``; NotAllowedError when it lacks a usable username, takes the
    break-glass admin's name, or is in none of the configured groups."""
    named = [(c, claims[c]) for c in config.username_claims if isinstance(claims.get(c), str)]
    named = [(c, value) for c, value in named if value]
    if not named:
        raise NotAllowedError(
            f"the token has no {' or '.join(config.username_claims)} claim to name the MLflow "
            "user (MLFLOW_STACK_OIDC_USERNAME_CLAIM)"
        )
    claim, username = named[0]
    if not _USERNAME.match(username):
        raise NotAllowedError(f"the {claim} {username!r} is not a usable username")
    if username == config.admin_username:
        raise NotAllowedError(
            f"{username!r} is the server's own admin account (MLFLOW_AUTH_ADMIN_USERNAME), "
            "which signs in with its password only"
        )
    groups = groups_of(claims, config.groups_claims) & config.groups
    if not groups:
        raise NotAllowedError(
            f"{username} is in none of the groups that may use this server "
            f"({', '.join(sorted(config.groups))})"
        )
    return Identity(username, groups, admin=bool(groups & config.admin_groups))
