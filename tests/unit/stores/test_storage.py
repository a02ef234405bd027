"""The S3 side of ``serve``: the client's configuration, the server's environment, and
ensure_bucket() against a real S3 on a loopback socket (moto's server): the bucket created when
missing and kept when present, and one clear line for every way S3 can say no.

Answers moto does not give on demand (a 500, a lost creation race, a closed connection) come
from a tiny HTTP server on a loopback socket.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from mlflow_stack.errors import StackError
from mlflow_stack.native.processes import free_port
from mlflow_stack.settings.contract import Settings
from mlflow_stack.stores.storage import ensure_bucket, s3_client, s3_environment
from tests.conftest import WITH_S3, make_settings

HINT = "(check MLFLOW_STACK_S3_ENDPOINT_URL, or raise MLFLOW_STACK_WAIT_TIMEOUT)"


@pytest.fixture(autouse=True)
def no_aws_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what the settings say: no credentials, endpoint or profile from this machine."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role look-up
    # boto3's default session keeps the credentials it found first: each test starts afresh.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def on(url: str, **overrides: str) -> Settings:
    """Settings for ``url`` with a bucket of its own and a short wait."""
    return make_settings(
        **{
            "MLFLOW_STACK_S3_ENDPOINT_URL": url,
            "MLFLOW_STACK_S3_BUCKET": f"bucket-{uuid.uuid4().hex[:12]}",
            "MLFLOW_STACK_WAIT_TIMEOUT": "1",
            **overrides,
        }
    )


def buckets(settings: Settings) -> list[str]:
    return [bucket["Name"] for bucket in s3_client(settings).list_buckets()["Buckets"]]


@pytest.fixture
def checked_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on moto checks every request's signature against the IAM users it knows."""
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


@dataclass
class Endpoint:
    url: str
    seen: list[str] = field(default_factory=list)  # "METHOD path" of every request

    @property
    def methods(self) -> list[str]:
        return [request.split()[0] for request in self.seen]


@contextmanager
def http_server(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[Endpoint]:
    """An HTTP server on 127.0.0.1 that gives every request ``answer(handler)``."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            endpoint.seen.append(f"{self.command} {self.path}")
            self.rfile.read(int(self.headers.get("content-length") or 0))
            answer(self)

        do_HEAD = do_GET = do_PUT = _any  # noqa: N815 - http.server's names

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def reply(handler: BaseHTTPRequestHandler, status: int, code: str = "") -> None:
    body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode() if code else b""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


# --- s3_environment ---


def test_the_server_environment_points_mlflow_at_the_endpoint_path_style() -> None:
    settings = make_settings(MLFLOW_STACK_S3_REGION="eu-west-1")
    assert s3_environment(settings) == {
        "AWS_ACCESS_KEY_ID": WITH_S3["MLFLOW_STACK_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": WITH_S3["MLFLOW_STACK_S3_SECRET_KEY"],
        "AWS_DEFAULT_REGION": "eu-west-1",
        "MLFLOW_S3_ENDPOINT_URL": WITH_S3["MLFLOW_STACK_S3_ENDPOINT_URL"],
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path",
    }


def test_on_aws_the_server_environment_leaves_keys_and_endpoint_empty() -> None:
    aws = make_settings(
        MLFLOW_STACK_S3_ENDPOINT_URL="",
        MLFLOW_STACK_S3_ACCESS_KEY="",
        MLFLOW_STACK_S3_SECRET_KEY="",
    )
    env = s3_environment(aws)
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "auto"
    assert [name for name, value in env.items() if not value] == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL",
    ]


# --- s3_client ---


def test_the_client_signs_path_style_requests_to_the_endpoint_with_the_settings_keys() -> None:
    client = s3_client(make_settings(MLFLOW_STACK_S3_ENDPOINT_URL="http://minio:9000"))
    url = urlsplit(client.generate_presigned_url("get_object", {"Bucket": "mlflow", "Key": "a/b"}))
    assert (url.scheme, url.netloc, url.path) == ("http", "minio:9000", "/mlflow/a/b")
    query = parse_qs(url.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # signature version 4
    assert query["X-Amz-Credential"][0].startswith("access-key-1/")
    assert "/us-east-1/s3/" in query["X-Amz-Credential"][0]


def test_on_aws_the_client_uses_the_regional_endpoint_and_the_default_credential_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-of-the-instance-role")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-of-the-instance-role")
    aws = make_settings(
        MLFLOW_STACK_S3_ENDPOINT_URL="",
        MLFLOW_STACK_S3_ACCESS_KEY="",
        MLFLOW_STACK_S3_SECRET_KEY="",
        MLFLOW_STACK_S3_REGION="eu-central-1",
    )
    client = s3_client(aws)
    assert client.meta.region_name == "eu-central-1"
    url = urlsplit(client.generate_presigned_url("get_object", {"Bucket": "mlflow", "Key": "a"}))
    assert url.netloc.startswith("mlflow.s3.")  # virtual-hosted, as AWS prefers
    assert url.netloc.endswith(".amazonaws.com")
    assert parse_qs(url.query)["X-Amz-Credential"][0].startswith("key-of-the-instance-role/")


def test_the_client_timeouts_and_pool_are_as_asked() -> None:
    config = s3_client(make_settings(), timeout=7, connections=32).meta.config
    assert (config.connect_timeout, config.read_timeout) == (7, 7)  # read defaults to timeout
    assert config.max_pool_connections == 32
    assert config.retries["mode"] == "standard"
    config = s3_client(make_settings(), timeout=2, read_timeout=120).meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 120)
    defaults = s3_client(make_settings()).meta.config
    assert (defaults.connect_timeout, defaults.read_timeout) == (5, 5)


def test_a_silent_server_times_out_after_the_read_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = s3_client(on(url), timeout=5, read_timeout=0.2)
        began = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.head_bucket(Bucket="mlflow")
        assert time.monotonic() - began < 3
    finally:
        listener.close()


def test_attempts_is_how_often_a_failing_request_is_sent() -> None:
    def unavailable(handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 503, "SlowDown")

    with http_server(unavailable) as endpoint:
        client = s3_client(on(endpoint.url), attempts=1)
        with pytest.raises(ClientError, match="SlowDown"):
            client.list_objects_v2(Bucket="mlflow")
    assert len(endpoint.seen) == 1


# --- ensure_bucket on a real S3 ---


def test_a_missing_bucket_is_created_and_an_existing_one_kept(s3_url: str) -> None:
    settings = on(s3_url)
    assert settings.s3_bucket not in buckets(settings)

    assert ensure_bucket(settings) is True
    assert settings.s3_bucket in buckets(settings)
    s3_client(settings).put_object(Bucket=settings.s3_bucket, Key="kept", Body=b"1")

    assert ensure_bucket(settings) is False
    listed = s3_client(settings).list_objects_v2(Bucket=settings.s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["kept"]


@pytest.mark.parametrize(("region", "location"), [("eu-west-1", "eu-west-1"), ("us-east-1", None)])
def test_on_aws_the_bucket_is_created_in_the_region(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, region: str, location: str | None
) -> None:
    # Empty MLFLOW_STACK_S3_ENDPOINT_URL means AWS; botocore's own endpoint variable sends
    # these AWS requests to moto instead. us-east-1 takes no LocationConstraint (AWS and moto
    # refuse one naming it).
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
    settings = on("", MLFLOW_STACK_S3_REGION=region)

    assert ensure_bucket(settings) is True

    answer = s3_client(settings).get_bucket_location(Bucket=settings.s3_bucket)
    assert answer["LocationConstraint"] == location


@pytest.mark.usefixtures("checked_credentials")
def test_refused_credentials_end_the_wait_at_once_naming_the_variables(s3_url: str) -> None:
    settings = on(s3_url, MLFLOW_STACK_WAIT_TIMEOUT="30")  # keys moto does not know
    began = time.monotonic()
    with pytest.raises(StackError) as raised:
        ensure_bucket(settings)
    assert time.monotonic() - began < 5
    assert str(raised.value) == (
        f"S3 at {s3_url} refused MLFLOW_STACK_S3_ACCESS_KEY/MLFLOW_STACK_S3_SECRET_KEY for "
        f"bucket {settings.s3_bucket!r} (HTTP 403)"
    )
    assert WITH_S3["MLFLOW_STACK_S3_SECRET_KEY"] not in str(raised.value)


def test_keys_that_may_not_create_the_bucket_get_a_clear_error(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    iam = boto3.client(
        "iam",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin-secret",
    )
    user = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="no-new-buckets",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "s3:CreateBucket", "Resource": "*"},
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    settings = on(
        s3_url,
        MLFLOW_STACK_S3_ACCESS_KEY=key["AccessKeyId"],
        MLFLOW_STACK_S3_SECRET_KEY=key["SecretAccessKey"],
    )

    with pytest.raises(StackError) as raised:
        ensure_bucket(settings)

    assert str(raised.value) == (
        f"cannot create bucket MLFLOW_STACK_S3_BUCKET={settings.s3_bucket!r} on S3 at {s3_url}: "
        "AccessDenied"
    )


def test_no_credentials_at_all_is_a_clear_error(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
    settings = on("", MLFLOW_STACK_S3_ACCESS_KEY="", MLFLOW_STACK_S3_SECRET_KEY="")
    with pytest.raises(
        StackError, match=r"^no S3 credentials: set MLFLOW_STACK_S3_ACCESS_KEY and "
    ):
        ensure_bucket(settings)


# --- ensure_bucket when S3 is not there yet, or answers oddly ---


def test_an_unreachable_endpoint_is_waited_for_then_named_with_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(StackError) as raised:
        ensure_bucket(on(url))
    assert time.monotonic() - began < 3
    text = str(raised.value)
    assert text.startswith(f"S3 at {url} did not become ready within 1 s: ")
    assert "Could not connect to the endpoint URL" in text
    assert text.endswith(HINT)
    assert "\n" not in text


def test_a_server_error_is_retried_until_the_timeout() -> None:
    def failing(handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 500, "InternalError")

    with http_server(failing) as endpoint:
        settings = on(endpoint.url)
        with pytest.raises(StackError) as raised:
            ensure_bucket(settings)
    assert str(raised.value) == (
        f"S3 at {settings.s3_endpoint_url} did not become ready within 1 s: HTTP 500 from HEAD "
        f"bucket {settings.s3_bucket!r} {HINT}"
    )
    assert len(endpoint.seen) >= 2  # asked again
    assert set(endpoint.methods) == {"HEAD"}  # and never tried to create it


def test_a_bucket_created_meanwhile_by_another_server_is_kept() -> None:
    # HEAD says missing, but another server's CREATE wins the race.
    def raced(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "HEAD":
            reply(handler, 404)
        else:
            reply(handler, 409, "BucketAlreadyOwnedByYou")

    with http_server(raced) as endpoint:
        assert ensure_bucket(on(endpoint.url)) is False
    assert endpoint.methods == ["HEAD", "PUT"]


def test_a_bucket_name_taken_by_someone_else_is_a_clear_error() -> None:
    def taken(handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 404 if handler.command == "HEAD" else 409, "BucketAlreadyExists")

    with http_server(taken) as endpoint:
        settings = on(endpoint.url)
        with pytest.raises(StackError, match=r": BucketAlreadyExists$") as raised:
            ensure_bucket(settings)
    assert f"MLFLOW_STACK_S3_BUCKET={settings.s3_bucket!r}" in str(raised.value)


def test_an_endpoint_that_drops_the_connection_is_waited_for() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drop_every_connection() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=drop_every_connection)
    thread.start()
    try:
        settings = on(f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(StackError, match="did not become ready within 1 s"):
            ensure_bucket(settings)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
