"""Backup and restore of a whole stack: both databases (pg_dump custom format) and every
object of the bucket, described by ``manifest.json`` (sizes and sha256 of everything)."""

from mlflow_stack.backup.create import backup
from mlflow_stack.backup.restore import restore

__all__ = ["backup", "restore"]
