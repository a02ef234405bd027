"""What counts as a write to the auth database (and so drops the kept answers), and where the
store is put: MLflow's auth app's own ``store``. The store on PostgreSQL is tested in
tests/integration/test_auth_store.py."""

from __future__ import annotations

import pytest

from mlflow_stack.server import authstore


@pytest.mark.parametrize(
    ("statement", "read"),
    [
        ("SELECT users.id FROM users WHERE users.username = %(u)s", True),
        ("  select 1", True),
        ("\nSELECT role_permissions.resource_type FROM role_permissions", True),
        ("INSERT INTO users (username) VALUES (%(u)s)", False),
        ("UPDATE users SET is_admin=%(a)s WHERE users.id = %(i)s", False),
        ("DELETE FROM role_permissions WHERE role_permissions.id = %(i)s", False),
        ("SAVEPOINT sa_savepoint_1", False),  # not a read: dropping the kept answers is safe
        ("WITH moved AS (DELETE FROM roles RETURNING id) SELECT count(*) FROM moved", False),
    ],
)
def test_only_a_select_is_a_read(statement: str, read: bool) -> None:
    assert authstore.is_read(statement) is read


def test_install_puts_one_stack_store_where_mlflows_auth_app_keeps_its_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.server import auth

    monkeypatch.setattr(auth, "store", auth.SqlAlchemyStore())
    installed = authstore.install()
    assert auth.store is installed and isinstance(installed, authstore.StackAuthStore)
    assert authstore.install() is installed  # a second app in the same process keeps it
