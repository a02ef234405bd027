"""What several unit test folders share: a real S3 API on loopback, and a small OpenID provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.sso.issuer import Issuer, serve_issuer


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """A real S3 API on 127.0.0.1 (moto's server, in a thread of this process), one per session;
    each test makes a bucket of its own."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """Discovery, JWKS and a token endpoint on 127.0.0.1, with a key of its own, per test."""
    yield from serve_issuer()
