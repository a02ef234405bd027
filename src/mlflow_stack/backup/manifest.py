"""The backup's table of contents (``manifest.json``) and the checks a restore relies on."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow_stack.errors import StackError

FORMAT = 1
MANIFEST = "manifest.json"
OBJECTS = "objects"
DUMPS = {"tracking": "tracking.dump", "auth": "auth.dump"}
_CHUNK = 1 << 20


def check_key(key: str) -> PurePosixPath:
    """The object key as a relative path that stays inside ``objects/``; StackError otherwise.

    Keys that cannot be mirrored as files are refused rather than renamed: a backup must
    restore every key exactly.
    """
    path = PurePosixPath(key)
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\0" in key
        or "\\" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise StackError(f"object key {key!r} cannot be stored as a file below {OBJECTS}/")
    return path


def object_file(root: Path, key: str) -> Path:
    return root / OBJECTS / check_key(key)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Database:
    name: str
    file: str
    alembic_revision: str | None
    bytes: int
    sha256: str


@dataclass
class StoredObject:
    key: str
    size: int
    sha256: str


@dataclass
class Manifest:
    created: str
    mlflow_version: str
    postgres_server_version: int
    pg_dump_version: int
    bucket: str
    databases: dict[str, Database] = field(default_factory=dict)
    objects: list[StoredObject] = field(default_factory=list)
    format: int = FORMAT

    @property
    def object_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["objects"] = {
            "count": len(self.objects),
            "bytes": self.object_bytes,
            "items": data["objects"],
        }
        return data

    def write(self, root: Path) -> None:
        """Written last, atomically: a directory with a manifest is a complete backup."""
        temporary = root / (MANIFEST + ".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(root / MANIFEST)

    @classmethod
    def read(cls, root: Path) -> Manifest:
        path = root / MANIFEST
        if not root.is_dir():
            raise StackError(f"{root} is not a directory")
        if not path.is_file():
            raise StackError(f"{root} has no {MANIFEST}: it is not a complete backup")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise StackError(
                    f"{path} is not a valid manifest: its JSON is a {type(data).__name__}, "
                    "not an object"
                )
            if data.get("format") != FORMAT:
                raise StackError(
                    f"{path} has format {data.get('format')!r}; this version reads {FORMAT}"
                )
            objects = [StoredObject(**item) for item in data["objects"]["items"]]
            databases = {role: Database(**data["databases"][role]) for role in DUMPS}
            manifest = cls(
                created=data["created"],
                mlflow_version=data["mlflow_version"],
                postgres_server_version=int(data["postgres_server_version"]),
                pg_dump_version=int(data["pg_dump_version"]),
                bucket=data["bucket"],
                databases=databases,
                objects=objects,
            )
            count = int(data["objects"]["count"])
            if len(objects) != count:
                raise StackError(f"{path} lists {len(objects)} objects but says {count}")
            for item in objects:
                check_key(item.key)
        except StackError:
            raise
        except (ValueError, KeyError, TypeError) as error:
            raise StackError(f"{path} is not a valid manifest: {error!r:.200}") from None
        return manifest

    def verify(self, root: Path) -> None:
        """Every dump and object present, with the size and sha256 the manifest records."""
        for role, database in self.databases.items():
            if database.file != DUMPS[role]:
                raise StackError(f"{MANIFEST} names {database.file!r} for the {role} dump")
            _verify_file(root / database.file, database.bytes, database.sha256, database.file)
        for item in self.objects:
            _verify_file(object_file(root, item.key), item.size, item.sha256, f"object {item.key}")


def _verify_file(path: Path, size: int, sha256: str, what: str) -> None:
    if not path.is_file() or path.is_symlink():
        raise StackError(f"the backup is damaged: {what} is missing ({path})")
    if path.stat().st_size != size:
        raise StackError(
            f"the backup is damaged: {what} has {path.stat().st_size} bytes, "
            f"the manifest says {size}"
        )
    if sha256_of(path) != sha256:
        raise StackError(f"the backup is damaged: {what} does not match its sha256")
