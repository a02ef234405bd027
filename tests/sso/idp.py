"""A real OpenID provider for the SSO tests: panva's ``oidc-provider`` (provider/server.mjs) run
by Debian's Node.js on loopback, configured from Python.

- The issuer is ``http://127.0.0.1:<port>``; discovery, JWKS, authorization, token and
  end-session endpoints are the provider's own.
- One confidential web client (``mlflow`` by default): code flow, PKCE S256 required,
  ``client_secret_basic`` at the token endpoint.
- Users sign in through a form of ours that checks the password (ids ``username``,
  ``password``, button ``sign-in``; a refusal shows ``#login-error``); consent is granted
  without a page. The ID token carries ``preferred_username`` (= the login), ``name``,
  ``email``, ``email_verified``, ``groups`` and the nonce.
- Service clients get RS256 JWT access tokens from the ``client_credentials`` grant. The
  ``resource`` parameter must be an absolute URI: ``urn:audience:NAME`` gives ``aud`` NAME
  (:meth:`Provider.resource_for`), any other URI is the ``aud`` itself, and no ``resource``
  gives ``aud`` = the web client's id. Tokens carry ``preferred_username`` and ``groups``.
- ``PUT /test/groups/<id>`` (bearer: the handle's admin secret) changes groups while running.

The RSA key and the cookie keys are made once per handle, so tokens issued before a
:meth:`Provider.stop` still verify after the next :meth:`Provider.start`, on the same port.
The node packages live in ``<venv>/oidc-provider`` (``make install`` puts them there); when
they are missing or older than provider/package-lock.json, the handle runs ``npm ci`` itself.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from mlflow_stack.native.processes import quiet_port, tail

PROVIDER_DIR = Path(__file__).resolve().parent / "provider"
SERVER_SCRIPT = PROVIDER_DIR / "server.mjs"
LOCK_FILES = ("package.json", "package-lock.json")
#: The lock an install was made from, copied into node_modules once `npm ci` succeeded (the
#: Makefile writes it too).
INSTALLED_MARKER = ".mlflow-stack-lock.json"
#: Resource indicators are absolute URIs; this prefix stands for a plain audience name.
AUDIENCE_URN = "urn:audience:"
START_TIMEOUT = 30.0

log = logging.getLogger(__name__)


class ProviderError(RuntimeError):
    """The provider could not be installed, started or asked; the message says why."""


@dataclass
class User:
    """A person who signs in; ``preferred_username`` is the login. An empty ``email`` or
    ``name`` becomes ``<login>@example.test`` or the login."""

    login: str
    password: str
    groups: list[str]
    email: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.email = self.email or f"{self.login}@example.test"
        self.name = self.name or self.login


@dataclass
class Service:
    """A script's client: ``client_credentials`` tokens living ``ttl`` seconds, whose
    ``preferred_username`` is the client id."""

    client_id: str
    secret: str
    groups: list[str]
    ttl: int = 300


def modules_home() -> Path:
    """Where the provider's node_modules are installed: ``<venv>/oidc-provider``, as the
    Makefile does, or a user cache outside a virtualenv."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "oidc-provider"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "mlflow-stack" / "oidc-provider"


def _installed(home: Path) -> bool:
    """Whether ``home`` holds a finished ``npm ci`` of the current lock: the copy of the lock
    written into node_modules after it (``npm ci`` removes node_modules first)."""
    marker = home / "node_modules" / INSTALLED_MARKER
    return (
        marker.is_file()
        and marker.read_bytes() == (PROVIDER_DIR / "package-lock.json").read_bytes()
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_node_modules(home: Path | None = None) -> Path:
    """The node_modules folder holding oidc-provider at the locked version; ``npm ci`` into
    ``home`` first when it is missing or stale (one process at a time, for xdist)."""
    home = home or modules_home()
    if _installed(home):
        return home / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise ProviderError(
            "npm is not installed: install Debian's nodejs and npm, then make install"
        )
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".install.lock"):
        if not _installed(home):
            for name in LOCK_FILES:
                shutil.copyfile(PROVIDER_DIR / name, home / name)
            log.info("npm ci of the test OpenID provider into %s", home)
            done = subprocess.run(
                [npm, "ci", "--silent", "--no-audit", "--no-fund", "--prefix", str(home)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                output = (done.stderr or done.stdout)[-3000:]
                raise ProviderError(f"npm ci of the test OpenID provider failed:\n{output}")
            shutil.copyfile(
                PROVIDER_DIR / "package-lock.json", home / "node_modules" / INSTALLED_MARKER
            )
    return home / "node_modules"


def _request(method: str, url: str, **options: Any) -> requests.Response:
    """One request to the provider, never through a proxy of the environment (loopback);
    a session of its own, so that threads (a relying party's) may ask at the same time."""
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, url, **options)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_private_jwk(kid: str) -> dict[str, str]:
    """A new 2048-bit RSA signing key as a private JWK (RS256)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = key.private_numbers(), key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": _b64(public.n),
        "e": _b64(public.e),
        "d": _b64(private.d),
        "p": _b64(private.p),
        "q": _b64(private.q),
        "dp": _b64(private.dmp1),
        "dq": _b64(private.dmq1),
        "qi": _b64(private.iqmp),
    }


class Provider:
    """The provider's handle: :meth:`start`, :meth:`stop` (and at interpreter exit), groups
    changed while it runs, tokens and keys as served."""

    def __init__(
        self,
        data_dir: Path,
        *,
        users: list[User],
        services: list[Service],
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str],
        client_id: str = "mlflow",
        client_secret: str | None = None,
        port: int | None = None,
        access_token_ttl: int = 300,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.users = {user.login: user for user in users}
        self.services = {service.client_id: service for service in services}
        self.redirect_uris = list(redirect_uris)
        self.post_logout_redirect_uris = list(post_logout_redirect_uris)
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(32)
        self.port = port or quiet_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.access_token_ttl = access_token_ttl
        self.admin_secret = secrets.token_urlsafe(32)
        self._jwk = rsa_private_jwk(kid=secrets.token_hex(8))
        self._cookie_keys = [secrets.token_urlsafe(32)]
        self._process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    # --- paths ---

    @property
    def log_path(self) -> Path:
        return self.data_dir / "idp.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "idp.json"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @staticmethod
    def resource_for(audience: str) -> str:
        """The ``resource`` parameter that asks for a token whose ``aud`` is ``audience``."""
        return audience if ":" in audience else f"{AUDIENCE_URN}{audience}"

    # --- life cycle ---

    def _config(self, modules: Path) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "port": self.port,
            "modules": str(modules),
            "parent_pid": os.getpid(),
            "jwks": {"keys": [self._jwk]},
            "cookie_keys": self._cookie_keys,
            "admin_secret": self.admin_secret,
            "access_token_ttl": self.access_token_ttl,
            "default_audience": self.client_id,
            "client": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
                "post_logout_redirect_uris": self.post_logout_redirect_uris,
            },
            "users": [asdict(user) for user in self.users.values()],
            "services": [asdict(service) for service in self.services.values()],
        }

    def start(self) -> None:
        """Start node and wait (at most 30 s) until discovery answers; a failure raises
        :class:`ProviderError` with the end of the log."""
        if self.running:
            return
        node = shutil.which("node")
        if node is None:
            raise ProviderError("node is not installed: install Debian's nodejs and npm")
        modules = ensure_node_modules()
        self.config_path.touch(mode=0o600)
        self.config_path.write_text(json.dumps(self._config(modules), indent=1))
        with self.log_path.open("ab") as log_file:
            log_file.write(f"--- start on {self.issuer}\n".encode())
            log_file.flush()
            self._process = subprocess.Popen(
                [node, str(SERVER_SCRIPT), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        began = time.monotonic()
        while time.monotonic() - began < START_TIMEOUT:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ProviderError(
                    f"the test OpenID provider exited with {code}:\n{tail(self.log_path, 30)}"
                )
            with contextlib.suppress(requests.RequestException):
                answer = _request(
                    "GET", f"{self.issuer}/.well-known/openid-configuration", timeout=2
                )
                if answer.status_code == 200:
                    log.info(
                        "OpenID provider up on %s in %.2f s", self.issuer, time.monotonic() - began
                    )
                    return
            time.sleep(0.05)
        self.stop()
        raise ProviderError(
            f"the test OpenID provider did not answer within {START_TIMEOUT:g} s:\n"
            f"{tail(self.log_path, 30)}"
        )

    def stop(self) -> None:
        """Stop node; its port then refuses connections. Users, keys and port are kept."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    # --- asking it ---

    def discovery(self) -> dict[str, Any]:
        return self._get_json("/.well-known/openid-configuration")

    def jwks(self) -> dict[str, Any]:
        """The public keys, as served at the discovery's ``jwks_uri``."""
        return self._get_json("/jwks")

    def _get_json(self, path: str) -> dict[str, Any]:
        answer = _request("GET", f"{self.issuer}{path}", timeout=10)
        if answer.status_code != 200:
            raise ProviderError(f"GET {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json()

    def set_groups(self, login_or_client_id: str, groups: list[str]) -> None:
        """A user's or a service client's groups from the next sign-in or token on (and after a
        restart)."""
        targets: list[User | Service] = [
            found
            for found in (self.users.get(login_or_client_id), self.services.get(login_or_client_id))
            if found is not None
        ]
        if not targets:
            raise KeyError(login_or_client_id)
        for target in targets:
            target.groups = list(groups)
        if self.running:
            answer = _request(
                "PUT",
                f"{self.issuer}/test/groups/{login_or_client_id}",
                json=list(groups),
                headers={"Authorization": f"Bearer {self.admin_secret}"},
                timeout=10,
            )
            if answer.status_code != 204:
                raise ProviderError(f"set_groups: {answer.status_code} {answer.text[:500]}")

    def client_credentials_token(self, client_id: str, *, audience: str = "mlflow") -> str:
        """A JWT access token for the service client from the token endpoint, for ``audience``."""
        service = self.services[client_id]
        answer = _request(
            "POST",
            self.token_endpoint,
            data={"grant_type": "client_credentials", "resource": self.resource_for(audience)},
            auth=(service.client_id, service.secret),
            timeout=10,
        )
        if answer.status_code != 200:
            raise ProviderError(
                f"client_credentials for {client_id}: {answer.status_code} {answer.text[:500]}"
            )
        return answer.json()["access_token"]
