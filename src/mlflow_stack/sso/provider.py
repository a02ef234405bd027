"""The OpenID provider as this server knows it: its metadata (discovery) and its signing keys
(JWKS), fetched when first needed and kept.

The keys are fetched again when a token names a key id that is not among them (the provider
rotated its keys), at most once every :data:`REFRESH_AT_MOST_EVERY` seconds so that tokens
with made-up key ids cannot make this server hammer the provider, and every
:data:`KEYS_KEPT_FOR` seconds otherwise. While the provider cannot be reached, tokens signed
with the keys already fetched keep being checked (and accepted until they expire); sign-in,
which needs the provider, shows a page saying it cannot be reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds for each request to the provider
KEYS_KEPT_FOR = 3600.0
REFRESH_AT_MOST_EVERY = 30.0
METADATA_RETRY_AFTER = 5.0  # after a failed discovery, the next request tries again


class ProviderUnavailableError(Exception):
    """The provider could not be reached, or answered something that is not usable."""


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None

    @classmethod
    def parse(cls, document: Any, issuer: str) -> Metadata:
        if not isinstance(document, dict):
            raise ProviderUnavailableError("its discovery document is not a JSON object")
        if document.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
            raise ProviderUnavailableError(
                f"its discovery document names the issuer {document.get('issuer')!r}, "
                f"not {issuer!r} (MLFLOW_STACK_OIDC_ISSUER)"
            )
        try:
            return cls(
                issuer=document["issuer"],
                authorization_endpoint=document["authorization_endpoint"],
                token_endpoint=document["token_endpoint"],
                jwks_uri=document["jwks_uri"],
                end_session_endpoint=document.get("end_session_endpoint"),
            )
        except KeyError as missing:
            raise ProviderUnavailableError(
                f"its discovery document has no {missing.args[0]}"
            ) from None


def _get_json(session: requests.Session, url: str) -> Any:
    try:
        response = session.get(url, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise ProviderUnavailableError(
            f"{url} could not be reached ({type(error).__name__})"
        ) from None
    if response.status_code != 200:
        raise ProviderUnavailableError(f"{url} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ProviderUnavailableError(f"{url} did not answer JSON") from None


class Provider:
    """Metadata and keys of one issuer, shared by the threads of a worker."""

    def __init__(
        self,
        issuer: str,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.session = session or requests.Session()
        self.clock = clock
        self._lock = threading.Lock()
        self._metadata: Metadata | None = None
        self._metadata_failed_at: float | None = None
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._keys_tried_at: float | None = None

    def metadata(self) -> Metadata:
        with self._lock:
            if self._metadata is not None:
                return self._metadata
            failed = self._metadata_failed_at
            if failed is not None and self.clock() - failed < METADATA_RETRY_AFTER:
                raise ProviderUnavailableError(f"{self.issuer} could not be reached a moment ago")
            try:
                self._metadata = self._read_metadata()
            except ProviderUnavailableError:
                self._metadata_failed_at = self.clock()
                raise
            return self._metadata

    def fresh_metadata(self) -> Metadata:
        """The metadata read again now: a sign-in asks first, so that a provider that went
        down is a page of this server's saying so, not the browser's "connection refused"."""
        metadata = self._read_metadata()
        with self._lock:
            self._metadata, self._metadata_failed_at = metadata, None
        return metadata

    def _read_metadata(self) -> Metadata:
        url = self.issuer + "/.well-known/openid-configuration"
        return Metadata.parse(_get_json(self.session, url), self.issuer)

    def keys(self, kid: str | None = None) -> KeySet:
        """The provider's keys; fetched again when ``kid`` is not among them (rate-limited),
        or when they are older than KEYS_KEPT_FOR. The kept keys when that fails."""
        with self._lock:
            kept, fetch = self._keys, self._should_fetch(kid)
            if fetch:
                self._keys_tried_at = self.clock()
        if not fetch:
            if kept is None:
                raise ProviderUnavailableError(f"the keys of {self.issuer} could not be fetched")
            return kept
        try:
            fetched = self._fetch_keys()
        except ProviderUnavailableError as error:
            if kept is None:
                raise
            log.warning("kept the provider's keys fetched before: %s", error)
            return kept
        with self._lock:
            self._keys, self._keys_at = fetched, self.clock()
        return fetched

    def _should_fetch(self, kid: str | None) -> bool:
        now = self.clock()
        if self._keys is None:
            tried = self._keys_tried_at
            return tried is None or now - tried >= METADATA_RETRY_AFTER
        stale = now - self._keys_at > KEYS_KEPT_FOR
        unknown = kid is not None and not _has_kid(self._keys, kid)
        tried = self._keys_tried_at
        return (stale or unknown) and (tried is None or now - tried >= REFRESH_AT_MOST_EVERY)

    def _fetch_keys(self) -> KeySet:
        document = _get_json(self.session, self.metadata().jwks_uri)
        try:
            return KeySet.import_key_set(document)
        except Exception as error:  # noqa: BLE001 - joserfc raises several kinds for bad sets
            raise ProviderUnavailableError(f"its JWKS cannot be read: {error}") from None


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)
