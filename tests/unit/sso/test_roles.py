"""Groups as MLflow roles, in MLflow's own auth store (on SQLite here; PostgreSQL in the
integration tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from mlflow_stack.sso import roles
from mlflow_stack.sso.config import GroupGrant
from mlflow_stack.sso.identity import Identity

GRANTS = [GroupGrant("ml-team", "EDIT", "READ"), GroupGrant("analysts", "READ", "NO_PERMISSIONS")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlAlchemyStore]:
    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    yield store
    store.engine.dispose()


def permissions_of(store: SqlAlchemyStore, name: str) -> set[tuple[str, str, str]]:
    role = store.get_role_by_name("default", name)
    return {
        (p.resource_type, p.resource_pattern, p.permission)
        for p in store.list_role_permissions(role.id)
    }


def test_each_group_is_a_role_with_its_permissions(store: SqlAlchemyStore) -> None:
    roles.ensure_roles(store, GRANTS)
    assert permissions_of(store, "sso:ml-team") == {
        ("experiment", "*", "EDIT"),
        ("registered_model", "*", "READ"),
        ("prompt", "*", "READ"),
    }
    assert permissions_of(store, "sso:analysts") == {("experiment", "*", "READ")}


def test_the_roles_follow_a_changed_setting(store: SqlAlchemyStore) -> None:
    roles.ensure_roles(store, GRANTS)
    store.create_role("reviewers", "default")  # made by hand: left alone
    roles.ensure_roles(store, [GroupGrant("ml-team", "MANAGE", "NO_PERMISSIONS")])
    assert permissions_of(store, "sso:ml-team") == {("experiment", "*", "MANAGE")}
    names = {role.name for role in store.list_roles(["default"])}
    assert names == {"sso:ml-team", "reviewers"}
    roles.ensure_roles(store, [GroupGrant("ml-team", "MANAGE", "NO_PERMISSIONS")])  # again: same


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def user_roles(store: SqlAlchemyStore, username: str) -> set[str]:
    return {role.name for role in store.list_user_roles(store.get_user(username).id)}


def test_a_first_sign_in_creates_the_user_with_its_groups_roles(store: SqlAlchemyStore) -> None:
    roles.ensure_roles(store, GRANTS)
    members = roles.Members(lambda: store)
    members.ensure(Identity("alice", frozenset({"ml-team", "analysts"}), admin=False))
    user = store.get_user("alice")
    assert not user.is_admin
    assert user_roles(store, "alice") == {"sso:ml-team", "sso:analysts"}
    assert not store.authenticate_user("alice", "")  # no password anyone knows


def test_leaving_a_group_drops_its_role_and_the_admin_flag(store: SqlAlchemyStore) -> None:
    roles.ensure_roles(store, GRANTS)
    clock = Clock()
    members = roles.Members(lambda: store, clock=clock)
    members.ensure(Identity("carol", frozenset({"ml-team", "ml-admins"}), admin=True))
    assert store.get_user("carol").is_admin
    hand_made = store.create_role("reviewers", "default")
    store.assign_role_to_user(store.get_user("carol").id, hand_made.id)
    members.ensure(Identity("carol", frozenset({"analysts"}), admin=False))
    assert not store.get_user("carol").is_admin
    assert user_roles(store, "carol") == {"sso:analysts", "reviewers"}


class Counting:
    """The store, counting the reads the members' check makes."""

    def __init__(self, store: SqlAlchemyStore) -> None:
        self.store, self.calls = store, 0

    def __getattr__(self, name: str) -> Any:
        self.calls += 1
        return getattr(self.store, name)


def test_an_unchanged_user_costs_no_query_for_a_few_seconds(store: SqlAlchemyStore) -> None:
    roles.ensure_roles(store, GRANTS)
    counting, clock = Counting(store), Clock()
    members = roles.Members(lambda: counting, clock=clock)
    alice = Identity("alice", frozenset({"ml-team"}), admin=False)
    members.ensure(alice)
    after_first = counting.calls
    members.ensure(alice)
    assert counting.calls == after_first
    clock.now += roles.SYNCED_FOR
    members.ensure(alice)  # checked again: another worker may have changed it
    assert counting.calls > after_first
    changed = counting.calls
    members.ensure(Identity("alice", frozenset({"analysts"}), admin=False))  # new groups: at once
    assert counting.calls > changed
    assert user_roles(store, "alice") == {"sso:analysts"}


def test_an_admin_group_without_permissions_of_its_own_needs_no_role(
    store: SqlAlchemyStore,
) -> None:
    roles.ensure_roles(store, GRANTS)
    roles.Members(lambda: store).ensure(Identity("root", frozenset({"ml-admins"}), admin=True))
    assert store.get_user("root").is_admin
    assert user_roles(store, "root") == set()


class Racing:
    """The store, where another worker makes the same write just before each of ours."""

    def __init__(self, store: SqlAlchemyStore, other: roles.Members, identity: Identity) -> None:
        self.store, self.other, self.identity, self.raced = store, other, identity, []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if name not in {"create_user", "assign_role_to_user", "unassign_role_from_user"}:
            return method

        def raced(*args: Any, **kwargs: Any) -> Any:
            self.raced.append(name)
            self.other.ensure(self.identity)  # the other worker first
            return method(*args, **kwargs)  # then ours, which MLflow refuses

        return raced


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, frozenset({"ml-team"})),  # both create the user and assign the role
        (frozenset({"ml-team"}), frozenset({"analysts"})),  # both swap the roles
    ],
)
def test_two_workers_writing_the_same_user_at_once_both_succeed(
    store: SqlAlchemyStore, before: frozenset[str] | None, after: frozenset[str]
) -> None:
    roles.ensure_roles(store, GRANTS)
    if before is not None:
        roles.Members(lambda: store).ensure(Identity("alice", before, admin=False))
    identity = Identity("alice", after, admin=False)
    racing = Racing(store, roles.Members(lambda: store), identity)
    roles.Members(lambda: racing).ensure(identity)  # no error although every write raced
    assert racing.raced
    assert user_roles(store, "alice") == {roles.role_name(group) for group in after}
