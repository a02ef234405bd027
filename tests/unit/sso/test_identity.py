"""Who a token names, and whether their groups let them in."""

from __future__ import annotations

import pytest

from mlflow_stack.sso.identity import Identity, NotAllowedError, groups_of, identity_of
from tests.unit.sso.issuer import config

CONFIG = config("https://idp.example.com")


def test_a_member_of_a_configured_group_is_let_in_with_those_groups_only() -> None:
    claims = {"preferred_username": "alice", "groups": ["ml-team", "sales", 7]}
    assert identity_of(claims, CONFIG) == Identity("alice", frozenset({"ml-team"}), admin=False)


def test_an_admin_group_makes_an_admin() -> None:
    claims = {"preferred_username": "carol", "groups": ["ml-admins"]}
    assert identity_of(claims, CONFIG).admin


def test_a_single_group_may_be_a_string() -> None:
    assert groups_of({"groups": "ml-team"}, ("groups",)) == {"ml-team"}
    assert groups_of({"groups": {"a": 1}}, ("groups",)) == frozenset()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"groups": ["ml-team"]}, "no preferred_username claim"),
        ({"preferred_username": "bob", "groups": ["sales"]}, "bob is in none of the groups"),
        ({"preferred_username": "bob"}, "bob is in none of the groups"),
        ({"preferred_username": "admin", "groups": ["ml-admins"]}, "the server's own admin"),
        ({"preferred_username": "a/b", "groups": ["ml-team"]}, "not a usable username"),
    ],
)
def test_who_may_not_come_in_is_told_why(claims: dict, message: str) -> None:
    with pytest.raises(NotAllowedError, match=message):
        identity_of(claims, CONFIG)


def test_the_claims_are_configurable() -> None:
    custom = config("https://idp", username_claims=("email",), groups_claims=("roles",))
    claims = {"email": "dana@example.com", "roles": ["analysts"], "groups": ["ml-admins"]}
    assert identity_of(claims, custom) == Identity(
        "dana@example.com", frozenset({"analysts"}), admin=False
    )


def test_app_only_tokens_are_named_by_a_later_claim_and_roles_count_as_groups() -> None:
    """Entra ID's client-credentials tokens: no preferred_username, the client in azp, app
    roles in roles."""
    entra = config(
        "https://idp",
        username_claims=("preferred_username", "azp"),
        groups_claims=("groups", "roles"),
    )
    app_only = {"azp": "8f1c-ci", "roles": ["ml-team"]}
    assert identity_of(app_only, entra) == Identity("8f1c-ci", frozenset({"ml-team"}), admin=False)
    person = {
        "preferred_username": "ada@example.com",
        "azp": "web",
        "groups": ["analysts"],
        "roles": ["ml-admins"],
    }
    assert identity_of(person, entra) == Identity(
        "ada@example.com", frozenset({"analysts", "ml-admins"}), admin=True
    )
    with pytest.raises(NotAllowedError, match="no preferred_username or azp claim"):
        identity_of({"roles": ["ml-team"]}, entra)
