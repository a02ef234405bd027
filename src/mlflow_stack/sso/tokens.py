"""ID tokens and access tokens of the provider, checked with joserfc: the signature against
the provider's published keys with an asymmetric algorithm only (never ``none``, never a
shared-secret HS*), then the issuer, the audience, the expiry (and not-before and issued-at),
and for an ID token the nonce of the sign-in it answers. No JWT is parsed by hand here."""

from __future__ import annotations

import hmac
import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)

from mlflow_stack.sso.provider import Provider

#: The algorithms a token may be signed with: public-key ones only.
ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
LEEWAY = 5  # seconds of clock skew allowed between the provider and this server
MAX_LENGTH = 16_384


class TokenRefusedError(Exception):
    """The token is not accepted; the message says why, in words fit for the client."""


def verify(
    token: str,
    provider: Provider,
    *,
    audience: str,
    nonce: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` when it is the provider's, for ``audience``, and in date;
    TokenRefusedError otherwise. ProviderUnavailableError when no key is known yet."""
    if len(token) > MAX_LENGTH or token.count(".") != 2:
        raise TokenRefusedError("the token is not a signed JWT")
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError):
        raise TokenRefusedError("the token is not a signed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise TokenRefusedError(f"the token's algorithm {algorithm!r} is not accepted")
    kid = header.get("kid")
    keys = provider.keys(kid if isinstance(kid, str) else None)
    try:
        decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except InvalidKeyIdError:
        raise TokenRefusedError(
            "the token is signed with a key the provider does not publish"
        ) from None
    except BadSignatureError:
        raise TokenRefusedError("the token's signature does not verify") from None
    except JoseError as error:
        raise TokenRefusedError(f"the token cannot be read ({error.error})") from None
    claims = decoded.claims
    stamp = int(now if now is not None else time.time())
    registry = jwt.JWTClaimsRegistry(
        now=stamp,
        leeway=LEEWAY,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise TokenRefusedError("the token has expired") from None
    except MissingClaimError as error:
        raise TokenRefusedError(f"the token has no {error.claim} claim") from None
    except InvalidClaimError as error:
        raise TokenRefusedError(f"the token's {_claim_words(error.claim)}") from None
    except JoseError as error:
        raise TokenRefusedError(f"the token is not accepted ({error.error})") from None
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise TokenRefusedError("the ID token does not answer this sign-in (nonce)")
    return claims


def _claim_words(claim: str) -> str:
    words = {
        "iss": "issuer is not MLFLOW_STACK_OIDC_ISSUER",
        "aud": "audience is not this server's (MLFLOW_STACK_OIDC_AUDIENCE)",
        "nbf": "time of validity has not begun",
        "iat": "issue time is in the future",
    }
    return words.get(claim, f"claim {claim} is not valid")
