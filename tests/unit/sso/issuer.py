"""A small OpenID provider for the unit tests of single sign-on (the ``issuer`` fixture of
tests/unit/conftest.py): discovery, JWKS and a token endpoint served over a real socket, and
tokens signed with its key (joserfc). The browser flows run against a real provider
(oidc-provider) in tests/sso."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import RSAKey

from mlflow_stack.sso.config import GroupGrant, SignOnConfig


@dataclass
class Issuer:
    url: str
    key: RSAKey
    published: list[RSAKey]
    requests: list[str] = field(default_factory=list)
    down: bool = False
    #: What the token endpoint answers: (status, JSON body); the forms it got.
    token_answer: tuple[int, dict[str, Any]] = (400, {"error": "invalid_grant"})
    token_forms: list[dict[str, list[str]]] = field(default_factory=list)
    token_auth: list[str] = field(default_factory=list)

    def token(
        self, claims: dict[str, Any] | None = None, *, key: RSAKey | None = None, **header: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": "mlflow",
            "iat": now,
            "exp": now + 300,
            "preferred_username": "alice",
            "groups": ["ml-team"],
            **(claims or {}),
        }
        signer = key or self.key
        return jwt.encode({"alg": "RS256", "kid": signer.kid, **header}, payload, signer)


def b64(data: dict[str, Any]) -> str:
    """A JSON object as a JWT part (base64url, no padding), for tokens built by hand."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without checking it."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def config(issuer: str, **changes: Any) -> SignOnConfig:
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": "mlflow",
        "client_secret": "a-client-secret",
        "public_url": "https://mlflow.example.com",
        "scopes": ("openid", "profile", "email"),
        "username_claims": ("preferred_username",),
        "groups_claims": ("groups",),
        "admin_groups": frozenset({"ml-admins"}),
        "grants": (
            GroupGrant("ml-team", "EDIT", "EDIT"),
            GroupGrant("analysts", "READ", "NO_PERMISSIONS"),
        ),
        "audience": "mlflow",
        "session_ttl": 3600,
        "secret_key": "a-secret-key-for-tests",
        "admin_username": "admin",
    }
    values.update(changes)
    return SignOnConfig(**values)


def serve_issuer() -> Iterator[Issuer]:
    key = RSAKey.generate_key(2048, auto_kid=True)
    state: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            current = state["issuer"]
            current.requests.append(self.path)
            if current.down:
                self.send_error(503)
                return
            if self.path == "/.well-known/openid-configuration":
                body = {
                    "issuer": current.url,
                    "authorization_endpoint": current.url + "/auth",
                    "token_endpoint": current.url + "/token",
                    "jwks_uri": current.url + "/jwks",
                    "end_session_endpoint": current.url + "/session/end",
                }
            elif self.path == "/jwks":
                body = {"keys": [k.as_dict(private=False) for k in current.published]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            current = state["issuer"]
            length = int(self.headers.get("content-length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            current.token_forms.append(form)
            current.token_auth.append(self.headers.get("authorization", ""))
            status, answer = current.token_answer
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["issuer"] = Issuer(f"http://127.0.0.1:{server.server_port}", key, [key])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state["issuer"]
    finally:
        server.shutdown()
        server.server_close()
