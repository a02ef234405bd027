"""Tokens checked against a provider's published keys over a real socket (tests/unit/sso's
issuer): every way a token can be wrong is refused with a reason, and a good one passes."""

from __future__ import annotations

import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from mlflow_stack.sso import tokens
from mlflow_stack.sso.provider import Provider, ProviderUnavailableError
from tests.unit.sso.issuer import Issuer, b64, claims_of


def check(issuer: Issuer, token: str, **options: object) -> dict:
    return tokens.verify(token, Provider(issuer.url), audience="mlflow", **options)  # type: ignore[arg-type]


def refused(issuer: Issuer, token: str, **options: object) -> str:
    with pytest.raises(tokens.TokenRefusedError) as raised:
        check(issuer, token, **options)
    return str(raised.value)


def test_a_good_token_gives_its_claims(issuer: Issuer) -> None:
    claims = check(issuer, issuer.token())
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["ml-team"]


def test_an_audience_among_several_is_enough(issuer: Issuer) -> None:
    assert check(issuer, issuer.token({"aud": ["other", "mlflow"]}))["aud"] == ["other", "mlflow"]


def test_an_expired_token_is_refused(issuer: Issuer) -> None:
    past = int(time.time()) - 60
    token = issuer.token({"iat": past - 300, "exp": past})
    assert refused(issuer, token) == "the token has expired"


def test_the_leeway_is_a_few_seconds_only(issuer: Issuer) -> None:
    now = int(time.time())
    assert check(issuer, issuer.token({"exp": now - 2}))  # within the leeway
    assert (
        refused(issuer, issuer.token({"exp": now - tokens.LEEWAY - 2})) == "the token has expired"
    )


def test_a_token_signed_with_another_key_is_refused(issuer: Issuer) -> None:
    forger = RSAKey.generate_key(2048, auto_kid=True)
    assert "key the provider does not publish" in refused(issuer, issuer.token(key=forger))


def test_a_token_signed_with_another_key_under_a_published_kid_is_refused(issuer: Issuer) -> None:
    forger = RSAKey.generate_key(2048)
    token = jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, {"iss": issuer.url}, forger)
    assert refused(issuer, token) == "the token's signature does not verify"


def test_another_audience_is_refused(issuer: Issuer) -> None:
    assert "audience is not this server's" in refused(issuer, issuer.token({"aud": "other-api"}))


def test_another_issuer_is_refused(issuer: Issuer) -> None:
    token = issuer.token({"iss": "https://evil.example.com"})
    assert refused(issuer, token) == "the token's issuer is not MLFLOW_STACK_OIDC_ISSUER"


def test_a_token_without_expiry_is_refused(issuer: Issuer) -> None:
    claims = claims_of(issuer.token())
    del claims["exp"]
    no_exp = jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, claims, issuer.key)
    assert refused(issuer, no_exp) == "the token has no exp claim"


def test_alg_none_is_refused(issuer: Issuer) -> None:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "mlflow", "exp": now + 300, "preferred_username": "alice"}
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert refused(issuer, unsigned) == "the token's algorithm 'none' is not accepted"


def test_a_shared_secret_algorithm_is_refused(issuer: Issuer) -> None:
    # HS256 keyed with the provider's public key: the classic confusion attack
    secret = OctKey.import_key(json.dumps(issuer.key.as_dict(private=False)).encode())
    token = jwt.encode({"alg": "HS256", "kid": issuer.key.kid}, {"iss": issuer.url}, secret)
    assert refused(issuer, token) == "the token's algorithm 'HS256' is not accepted"


@pytest.mark.parametrize("value", ["", "abc", "a.b", "a.b.c.d.e", "x" * 20_000])
def test_what_is_not_a_signed_jwt_is_refused(issuer: Issuer, value: str) -> None:
    assert refused(issuer, value) == "the token is not a signed JWT"


def test_the_nonce_must_be_the_sign_ins(issuer: Issuer) -> None:
    token = issuer.token({"nonce": "n-1"})
    assert check(issuer, token, nonce="n-1")["nonce"] == "n-1"
    assert "nonce" in refused(issuer, token, nonce="n-2")


def test_no_keys_yet_and_no_provider_is_unavailable_not_refused(issuer: Issuer) -> None:
    issuer.down = True
    with pytest.raises(ProviderUnavailableError):
        check(issuer, issuer.token())
