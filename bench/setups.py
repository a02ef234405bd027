"""The three set-ups the benchmark compares, started one after another on this machine.

(a) stock ``mlflow server`` as a beginner runs it: sqlite, local artifacts, default flags;
(b) stock ``mlflow server`` with default flags on the same PostgreSQL and S3 servers as (c);
(c) mlflow-stack as shipped, through its own CLI (``mlflow-stack up``).

(a) and (b) run from a separate venv holding plain ``mlflow`` (no uvloop, no auth extra) at
the same versions as the server lock, so that the only differences are the stack's choices.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_stack.native.processes import ProcessRecord, free_port, record_of, spawn, stop
from mlflow_stack.settings.contract import Settings
from mlflow_stack.settings.envfile import merged_environment
from mlflow_stack.stores.database import connect
from mlflow_stack.stores.storage import s3_client

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


@dataclass
class Running:
    """What the workloads need to drive and observe one started set-up."""

    key: str
    title: str
    tracking_uri: str
    auth: tuple[str, str] | None
    db_url: str  # SQLAlchemy URL for seeding runs directly (password in db_password)
    db_password: str | None
    bucket: str | None  # the artifact bucket, when artifacts live in S3
    s3: Any | None  # boto3 client to the same store, for direct PUT/GET
    records: list[ProcessRecord] = field(default_factory=list)


def _clean_environment() -> dict[str, str]:
    """The bench process's environment without anything that would configure MLflow."""
    prefixes = ("MLFLOW_", "AWS_", "PG", "POSTGRES_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our loopback URL
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log_path}")


class StockServer:
    """A stock ``mlflow server`` process from the stock venv."""

    def __init__(self, python: Path, root: Path, key: str) -> None:
        self.python, self.root, self.key = python, root, key
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, args: list[str], env: dict[str, str]) -> tuple[str, ProcessRecord]:
        port = free_port()
        workdir = self.root / self.key
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{self.key}.log"
        self.proc = spawn(
            [str(self.python), "-m", "mlflow", "server", "--port", str(port), *args],
            env={**_clean_environment(), **env},
            cwd=workdir,
            log_path=log_path,
        )
        uri = f"http://127.0.0.1:{port}"
        _wait_ready(uri + PROBE, self.proc, log_path, timeout=180)
        return uri, record_of(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(record_of(self.proc), sig=signal.SIGTERM, timeout=30)
            self.proc.wait(10)
            self.proc = None


class StockSqlite:
    key = "a"
    title = "stock, sqlite + local files"

    def __init__(self, python: Path, root: Path) -> None:
        self.server = StockServer(python, root, self.key)
        self.root = root

    def start(self) -> Running:
        uri, record = self.server.launch([], {})
        return Running(
            self.key,
            self.title,
            uri,
            None,
            f"sqlite:///{self.root / self.key / 'mlflow.db'}",
            None,
            None,
            None,
            [record],
        )

    def stop(self) -> None:
        self.server.stop()


class MlflowStack:
    """mlflow-stack as shipped, driven through its CLI like a user would."""

    key = "c"
    title = "mlflow-stack"

    def __init__(self, root: Path, overrides: dict[str, str]) -> None:
        self.root = root / "c"
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # PostgreSQL runs as another account when we are root
        pg, s3, web = (free_port() for _ in range(3))
        self.env = {
            **_clean_environment(),
            "POSTGRES_PORT": str(pg),
            "MLFLOW_STACK_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3}",
            "MLFLOW_STACK_PORT": str(web),
            **overrides,
        }
        self.settings: Any = None

    def cli(self, *args: str) -> None:
        command = [sys.executable, "-m", "mlflow_stack", "--env-file", str(self.root / ".env")]
        result = subprocess.run(
            [*command, *args, "--data-dir", str(self.root / "data")],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mlflow-stack {' '.join(args)} failed:\n{result.stderr}")

    def start(self) -> Running:
        self.cli("up")
        self.settings = Settings.from_env(merged_environment(self.root / ".env", self.env))
        s = self.settings
        records = [
            r
            for p in sorted((self.root / "data" / "run").glob("*.json"))
            if (r := ProcessRecord.load(p))
        ]
        return Running(
            self.key,
            self.title,
            s.tracking_uri,
            (s.admin_username, s.admin_password),
            f"postgresql+psycopg2://{s.postgres_user}@127.0.0.1:{s.postgres_port}/{s.postgres_db}",
            s.postgres_password,
            s.s3_bucket,
            s3_client(s, timeout=300),
            records,
        )

    def stop_server_only(self) -> None:
        """Stop the MLflow server, keeping PostgreSQL and S3 up for set-up (b)."""
        self.cli("down", "mlflow")

    def stop(self) -> None:
        self.cli("down")


class StockOnStackParts:
    """Stock ``mlflow server`` on the PostgreSQL and S3 servers of a running mlflow-stack."""

    key = "b"
    title = "stock, PostgreSQL + S3"
    database = "bench_stock"
    bucket = "bench-stock"

    def __init__(self, python: Path, root: Path, parts: MlflowStack) -> None:
        self.server = StockServer(python, root, self.key)
        self.parts = parts

    def start(self) -> Running:
        s = self.parts.settings
        conn = connect(s, "postgres")
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{self.database}"')
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        conn.close()
        s3 = s3_client(s, timeout=300)
        s3.create_bucket(Bucket=self.bucket)
        db_url = (
            f"postgresql+psycopg2://{s.postgres_user}@127.0.0.1:{s.postgres_port}/{self.database}"
        )
        uri, record = self.server.launch(
            ["--backend-store-uri", db_url, "--artifacts-destination", f"s3://{self.bucket}"],
            {
                "PGPASSWORD": s.postgres_password,
                "AWS_ACCESS_KEY_ID": s.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
                "AWS_DEFAULT_REGION": s.s3_region,
                "MLFLOW_S3_ENDPOINT_URL": s.s3_endpoint_url,
            },
        )
        return Running(
            self.key, self.title, uri, None, db_url, s.postgres_password, self.bucket, s3, [record]
        )

    def stop(self) -> None:
        self.server.stop()
