"""The provider's metadata and keys, fetched over a real socket and kept."""

from __future__ import annotations

import pytest
from joserfc.jwk import RSAKey

from mlflow_stack.sso import provider as module
from mlflow_stack.sso.provider import Metadata, Provider, ProviderUnavailableError
from tests.unit.sso.issuer import Issuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_metadata_is_fetched_once(issuer: Issuer) -> None:
    provider = Provider(issuer.url)
    first = provider.metadata()
    assert first.token_endpoint == issuer.url + "/token"
    assert first.end_session_endpoint == issuer.url + "/session/end"
    assert provider.metadata() is first
    assert issuer.requests.count("/.well-known/openid-configuration") == 1


def test_a_discovery_document_of_another_issuer_is_refused() -> None:
    with pytest.raises(ProviderUnavailableError, match="names the issuer 'https://b'"):
        Metadata.parse({"issuer": "https://b"}, "https://a")
    with pytest.raises(ProviderUnavailableError, match="has no token_endpoint"):
        Metadata.parse({"issuer": "https://a", "authorization_endpoint": "x"}, "https://a")


def test_an_unreachable_provider_is_a_clear_error_tried_again_after_a_pause() -> None:
    clock = Clock()
    provider = Provider("http://127.0.0.1:9", clock=clock)  # discard: nothing listens
    with pytest.raises(ProviderUnavailableError, match="could not be reached"):
        provider.metadata()
    with pytest.raises(ProviderUnavailableError, match="a moment ago"):
        provider.metadata()
    clock.now += module.METADATA_RETRY_AFTER
    with pytest.raises(ProviderUnavailableError, match="could not be reached \\(ConnectionError"):
        provider.metadata()


def test_keys_are_fetched_again_for_an_unknown_kid_at_most_every_30_s(issuer: Issuer) -> None:
    clock = Clock()
    provider = Provider(issuer.url, clock=clock)
    assert [k.kid for k in provider.keys().keys] == [issuer.key.kid]
    rotated = RSAKey.generate_key(2048, auto_kid=True)
    issuer.published.append(rotated)
    provider.keys(rotated.kid)  # too soon: the kept keys
    assert issuer.requests.count("/jwks") == 1
    clock.now += module.REFRESH_AT_MOST_EVERY
    assert rotated.kid in [k.kid for k in provider.keys(rotated.kid).keys]
    assert issuer.requests.count("/jwks") == 2
    provider.keys(issuer.key.kid)  # known: no fetch
    assert issuer.requests.count("/jwks") == 2


def test_keys_are_kept_while_the_provider_is_down(issuer: Issuer) -> None:
    clock = Clock()
    provider = Provider(issuer.url, clock=clock)
    kept = provider.keys()
    issuer.down = True
    clock.now += module.KEYS_KEPT_FOR + 1
    assert provider.keys() is kept


def test_a_bad_answer_is_unavailable(issuer: Issuer) -> None:
    provider = Provider(issuer.url + "/nothing")
    with pytest.raises(ProviderUnavailableError, match="answered HTTP 404"):
        provider.metadata()


def test_a_sign_in_reads_the_metadata_again_and_sees_the_provider_down(issuer: Issuer) -> None:
    provider = Provider(issuer.url)
    kept = provider.metadata()
    assert provider.fresh_metadata() == kept
    assert issuer.requests.count("/.well-known/openid-configuration") == 2
    issuer.down = True
    with pytest.raises(ProviderUnavailableError, match="answered HTTP 503"):
        provider.fresh_metadata()
    assert provider.metadata() == kept  # tokens are still checked with what was read
