"""Groups as MLflow roles, and each user's roles and admin flag kept equal to their groups.

Each group of MLFLOW_STACK_OIDC_GROUP_PERMISSIONS is an MLflow role named ``sso:<group>`` in
the default workspace, granting its permission on every experiment (``experiment``, ``*``)
and on every registered model and prompt (``registered_model``/``prompt``, ``*``);
``NO_PERMISSIONS`` is no grant, since in oidc mode MLflow's default permission is
NO_PERMISSIONS. :func:`ensure_roles` makes the roles match the setting at each start (before
any worker, under the migration lock); roles ``sso:*`` that the setting no longer names are
deleted, so dropping a group from the setting takes its access away.

:class:`Members` makes a signed-in person's MLflow user match what their token says: created
at first sign-in (with a random password nobody knows: they sign in through the provider),
admin exactly when in an admin group, and holding exactly the ``sso:`` roles of their groups.
Roles given by hand (any other name) and grants on single resources are left as they are.
A worker remembers, for :data:`SYNCED_FOR` seconds, that a user already matches a set of
groups, so that the check costs no query on most requests.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_stack.sso.config import GroupGrant
from mlflow_stack.sso.identity import Identity

log = logging.getLogger(__name__)

PREFIX = "sso:"
WORKSPACE = "default"
SYNCED_FOR = 10.0
MAX_REMEMBERED = 10_000


def role_name(group: str) -> str:
    return PREFIX + group


def wanted_permissions(grant: GroupGrant) -> dict[tuple[str, str], str]:
    """(resource type, pattern) -> permission of one group's role."""
    wanted = {
        ("experiment", "*"): grant.experiments,
        ("registered_model", "*"): grant.models,
        ("prompt", "*"): grant.models,
    }
    return {key: value for key, value in wanted.items() if value != "NO_PERMISSIONS"}


def ensure_roles(store: Any, grants: Iterable[GroupGrant]) -> None:
    """Make the ``sso:`` roles of the default workspace exactly those of ``grants``."""
    wanted = {role_name(grant.group): grant for grant in grants}
    existing = {role.name: role for role in store.list_roles([WORKSPACE])}
    for name, role in existing.items():
        if name.startswith(PREFIX) and name not in wanted:
            log.info("deleting role %s: its group is no longer configured", name)
            store.delete_role(role.id)
    for name, grant in wanted.items():
        role = existing.get(name) or store.create_role(
            name, WORKSPACE, description=f"members of the provider's group {grant.group}"
        )
        _match_permissions(store, role.id, wanted_permissions(grant))


def _match_permissions(store: Any, role_id: int, wanted: dict[tuple[str, str], str]) -> None:
    have = {(p.resource_type, p.resource_pattern): p for p in store.list_role_permissions(role_id)}
    for key, permission in have.items():
        if key not in wanted:
            store.remove_role_permission(permission.id)
        elif permission.permission != wanted[key]:
            store.update_role_permission(permission.id, wanted[key])
    for (resource_type, pattern), permission in wanted.items():
        if (resource_type, pattern) not in have:
            store.add_role_permission(role_id, resource_type, pattern, permission)


class Members:
    """Keeps users' MLflow state equal to their groups (one per worker)."""

    def __init__(
        self,
        store_of: Callable[[], Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store_of = store_of
        self.clock = clock
        self._lock = threading.Lock()
        self._synced: dict[str, tuple[frozenset[str], bool, float]] = {}
        self._locks = tuple(threading.Lock() for _ in range(16))

    def ensure(self, identity: Identity) -> None:
        """``identity``'s user exists, is admin as its groups say, and has their roles."""
        with self._lock:
            known = self._synced.get(identity.username)
        if known is not None:
            groups, admin, at = known
            if (groups, admin) == (identity.groups, identity.admin) and (
                self.clock() - at < SYNCED_FOR
            ):
                return
        self._sync(identity)
        with self._lock:
            if len(self._synced) >= MAX_REMEMBERED:
                self._synced.clear()
            self._synced[identity.username] = (identity.groups, identity.admin, self.clock())

    def _sync(self, identity: Identity) -> None:
        with self._locks[hash(identity.username) % len(self._locks)]:  # this worker's threads
            self._write(identity)

    def _write(self, identity: Identity) -> None:
        """Other workers and servers may write the same user at the same moment: each write
        that fails is accepted when what it wanted is there after all."""
        store = self.store_of()
        user = self._user(store, identity)
        if bool(user.is_admin) != identity.admin:
            state = "an admin now" if identity.admin else "no longer an admin"
            log.info("%s is %s (groups)", identity.username, state)
            store.update_user(identity.username, is_admin=identity.admin)

        def held() -> dict[str, int]:
            return {role.name: role.id for role in store.list_user_roles(user.id)}

        have = held()
        wanted = {role_name(group) for group in identity.groups}
        for name, role_id in have.items():
            if name.startswith(PREFIX) and name not in wanted:
                _settle(
                    lambda role_id=role_id: store.unassign_role_from_user(user.id, role_id),
                    lambda name=name: name not in held(),
                )
        for name in wanted - set(have):
            try:
                role = store.get_role_by_name(WORKSPACE, name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue  # an admin group without permissions of its own: no role
            _settle(
                lambda role=role: store.assign_role_to_user(user.id, role.id),
                lambda name=name: name in held(),
            )

    @staticmethod
    def _user(store: Any, identity: Identity) -> Any:
        try:
            return store.get_user(identity.username)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        log.info("creating the MLflow user %s at its first sign-in", identity.username)
        # Nobody knows this password: the user signs in through the provider.
        _settle(
            lambda: store.create_user(identity.username, secrets.token_urlsafe(32), identity.admin),
            lambda: store.has_user(identity.username),
        )
        return store.get_user(identity.username)


def _settle(write: Callable[[], Any], done: Callable[[], bool]) -> None:
    """``write``, whose failure is accepted when ``done()`` says another writer got there
    first (MLflow answers such a race with RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST
    or, for two inserts at once, the unique violation it does not map); an outage of the
    database is raised as it is."""
    try:
        write()
    except MlflowException as error:
        if error.error_code == "TEMPORARILY_UNAVAILABLE" or not done():
            raise
