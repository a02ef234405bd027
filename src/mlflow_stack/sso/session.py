"""The signed cookies of single sign-on (itsdangerous, keyed by MLFLOW_FLASK_SERVER_SECRET_KEY,
which every worker and replica shares):

- ``mlflow_stack_session``: a signed-in browser's user and groups, for
  MLFLOW_STACK_OIDC_SESSION_TTL seconds after the sign-in; then the browser is sent to the
  provider again, which answers with the groups of that moment;
- ``mlflow_stack_signin``: one sign-in under way (state, nonce, PKCE verifier, the page to
  return to), for ten minutes, sent back only to ``/auth/callback``.

Both are HttpOnly (no script reads them), SameSite=Lax (another site's form or script cannot
send them; following a link here does), and Secure when MLFLOW_STACK_PUBLIC_URL is https://.
The values are signed, not encrypted: they hold a username and group names, never a token or a
secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from mlflow_stack.sso.config import CALLBACK_PATH, SignOnConfig
from mlflow_stack.sso.identity import Identity

SESSION_COOKIE = "mlflow_stack_session"
SIGNIN_COOKIE = "mlflow_stack_signin"
SIGNIN_TTL = 600


@dataclass(frozen=True)
class SignIn:
    state: str
    nonce: str
    verifier: str
    next: str


class Cookies:
    def __init__(self, config: SignOnConfig) -> None:
        self.config = config
        self._session = URLSafeTimedSerializer(config.secret_key, salt="mlflow-stack-session")
        self._signin = URLSafeTimedSerializer(config.secret_key, salt="mlflow-stack-signin")

    # --- the signed-in browser ---

    def session(self, identity: Identity) -> str:
        value = self._session.dumps(
            {"u": identity.username, "g": sorted(identity.groups), "a": identity.admin}
        )
        return self._cookie(SESSION_COOKIE, value, "/", self.config.session_ttl)

    def identity(self, cookie_header: str | None) -> Identity | None:
        """The identity of a valid, unexpired session cookie in ``cookie_header``, else None."""
        raw = _read(cookie_header, SESSION_COOKIE)
        if raw is None:
            return None
        try:
            data: Any = self._session.loads(raw, max_age=self.config.session_ttl)
        except BadSignature:  # also SignatureExpired
            return None
        try:
            return Identity(str(data["u"]), frozenset(map(str, data["g"])), bool(data["a"]))
        except (KeyError, TypeError):
            return None

    def end_session(self) -> str:
        return self._cookie(SESSION_COOKIE, "", "/", 0)

    # --- a sign-in under way ---

    def signin(self, flow: SignIn) -> str:
        value = self._signin.dumps(
            {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "x": flow.next}
        )
        return self._cookie(SIGNIN_COOKIE, value, CALLBACK_PATH, SIGNIN_TTL)

    def flow(self, cookie_header: str | None) -> SignIn | None:
        raw = _read(cookie_header, SIGNIN_COOKIE)
        if raw is None:
            return None
        try:
            data: Any = self._signin.loads(raw, max_age=SIGNIN_TTL)
            return SignIn(str(data["s"]), str(data["n"]), str(data["v"]), str(data["x"]))
        except (BadSignature, KeyError, TypeError):
            return None

    def end_signin(self) -> str:
        return self._cookie(SIGNIN_COOKIE, "", CALLBACK_PATH, 0)

    def _cookie(self, name: str, value: str, path: str, max_age: int) -> str:
        cookie: SimpleCookie = SimpleCookie()
        cookie[name] = value
        morsel = cookie[name]
        morsel["path"] = path
        morsel["max-age"] = str(max_age)
        morsel["httponly"] = True
        morsel["samesite"] = "Lax"
        if self.config.secure_cookies:
            morsel["secure"] = True
        return morsel.OutputString()


def _read(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` (the signed values need no quoting; other cookies of
    the header, well-formed or not, are passed over)."""
    for part in (cookie_header or "").split(";"):
        key, equals, value = part.strip().partition("=")
        if equals and key == name and value:
            return value
    return None
