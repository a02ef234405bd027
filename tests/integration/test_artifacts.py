"""Artifacts go through the server's proxy into the bucket and come back byte-identical.
The client holds no storage credentials at all."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient

from tests.conftest import LiveStack

BIG = 50 * 2**20
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "MLFLOW_S3_ENDPOINT_URL",
)


def cut_off_from_storage(stack: LiveStack, monkeypatch, tmp_path: Path) -> MlflowClient:
    """Make S3 unreachable for this client: no credentials from anywhere, and every HTTP
    request except those to the tracking server (now reached as `localhost`) goes to a dead
    proxy. Whatever works afterwards went through the server. Returns a client for it."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    port = urlsplit(stack.tracking_uri).port
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://localhost:{port}")
    mlflow.set_tracking_uri(f"http://localhost:{port}")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: nothing listens
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "localhost")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast, not after backoff
    return MlflowClient(f"http://localhost:{port}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_files_directories_and_a_50_mb_blob_round_trip(
    stack: LiveStack, experiment_id: str, tmp_path: Path, monkeypatch
) -> None:
    client = cut_off_from_storage(stack, monkeypatch, tmp_path)
    small = tmp_path / "notes.txt"
    small.write_text("trained on january trips\n")
    tree = tmp_path / "preprocessor"
    (tree / "sub").mkdir(parents=True)
    (tree / "vocab.json").write_text('{"PU_DO": 1}')
    (tree / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 16)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG))

    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(str(small))
        mlflow.log_artifacts(str(tree), artifact_path="preprocessor")
        mlflow.log_artifact(str(big), artifact_path="blobs")
    run_id = run.info.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")

    top = {f.path: f for f in client.list_artifacts(run_id)}
    assert set(top) == {"notes.txt", "preprocessor", "blobs"}
    assert top["preprocessor"].is_dir and not top["notes.txt"].is_dir
    nested = {f.path for f in client.list_artifacts(run_id, "preprocessor/sub")}
    assert nested == {"preprocessor/sub/weights.bin"}
    (blob,) = client.list_artifacts(run_id, "blobs")
    assert blob.file_size == BIG

    out = tmp_path / "download"
    whole = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(out)))
    assert (whole / "notes.txt").read_text() == small.read_text()
    assert (whole / "preprocessor" / "vocab.json").read_text() == '{"PU_DO": 1}'
    assert (whole / "preprocessor" / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 16
    assert sha256(whole / "blobs" / "big.bin") == sha256(big)

    # ... and they are objects in the bucket, under the experiment and run (checked by the
    # test itself, which may reach S3 again)
    monkeypatch.undo()
    s3 = stack.s3()
    prefix = f"{experiment_id}/{run_id}/artifacts/"
    listed = s3.list_objects_v2(Bucket=stack.settings.s3_bucket, Prefix=prefix)
    keys = {o["Key"][len(prefix) :]: o["Size"] for o in listed.get("Contents", [])}
    assert keys == {
        "notes.txt": small.stat().st_size,
        "preprocessor/vocab.json": 12,
        "preprocessor/sub/weights.bin": 4096,
        "blobs/big.bin": BIG,
    }
    body = s3.get_object(Bucket=stack.settings.s3_bucket, Key=prefix + "notes.txt")["Body"]
    assert body.read() == small.read_bytes()


def test_a_missing_artifact_is_a_prompt_404_not_a_retried_500(
    stack: LiveStack, client, experiment_id: str
) -> None:
    import time

    import requests

    run = client.create_run(experiment_id)
    url = (
        f"{stack.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/"
        f"{experiment_id}/{run.info.run_id}/artifacts/model"
    )
    began = time.monotonic()
    answer = requests.get(url, auth=stack.admin, timeout=30)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert time.monotonic() - began < 5
