"""Where an MLflow artifact URI keeps its objects in the server's artifact bucket.

The server proxies artifacts (``--serve-artifacts``), so runs and experiments record URIs like
``mlflow-artifacts:/3/<run id>/artifacts``, relative to ``--artifacts-destination``
(``s3://<bucket>``). A URI that names the bucket itself (``s3://<bucket>/...``) is resolved too;
any other location (another bucket, a local path) is not the server's to delete.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

PROXIED_SCHEME = "mlflow-artifacts"


@dataclass(frozen=True)
class Destination:
    """The S3 location proxied artifacts are stored under (``--artifacts-destination``)."""

    bucket: str
    prefix: str = ""  # "" or "some/path/"

    @classmethod
    def parse(cls, uri: str) -> Destination:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"artifacts destination {uri!r} is not an s3://bucket[/path] URI")
        return cls(parts.netloc, _key(parts.path))

    def prefix_of(self, artifact_uri: str | None) -> str | None:
        """The key prefix (ending in /) holding ``artifact_uri``'s objects in :attr:`bucket`,
        or None when they are not in it, or when the URI names the whole destination (which
        garbage collection must never empty)."""
        if not artifact_uri:
            return None
        parts = urlsplit(artifact_uri)
        if parts.scheme == PROXIED_SCHEME:
            key = self.prefix + _key(parts.path)
        elif parts.scheme in ("s3", "s3a") and parts.netloc == self.bucket:
            key = _key(parts.path)
            if not key.startswith(self.prefix):
                return None
        else:
            return None
        if key == self.prefix:
            return None
        return key


def _key(path: str) -> str:
    """A normalised key prefix ending in /, or "" for the root ('..' cannot climb out)."""
    normal = posixpath.normpath("/" + path).strip("/")
    return f"{normal}/" if normal and normal != "." else ""


def overlaps(first: str, second: str) -> bool:
    """Whether either key prefix contains the other."""
    return first.startswith(second) or second.startswith(first)
