"""A service's log: written by its supervisor alone, rotated by size, followed like `tail -F`.

``mlflow.log`` is the newest file. When the next lines would take it past ``max_bytes`` it
becomes ``mlflow.log.1``, the older ones move up one and the one beyond ``keep`` is deleted.
Only whole lines are written, so a rotation never splits or drops a line; a single line longer
than ``max_bytes`` gets a file of its own.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_KEEP = 5
#: A line without an end is written out once this long (a child printing without newlines).
PARTIAL_LIMIT = 64 * 1024


def rotated(path: Path, index: int) -> Path:
    """``mlflow.log`` for 0, ``mlflow.log.1`` for 1, ..."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


def parse_size(text: str) -> int:
    """``10M``, ``512K``, ``1G`` or plain bytes (binary units)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    factor = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    try:
        size = int(float(number) * factor)
    except (ValueError, OverflowError):  # OverflowError: "inf", "1e400K"
        raise ValueError(f"not a size: {text!r} (examples: 10M, 512K, 1048576)") from None
    if size < 1024:
        raise ValueError(f"log size {text!r} is below 1K")
    return size


class RotatingLog:
    """Appends output to ``path`` line by line and rotates it by size."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        on_open: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.dropped = 0  # bytes that could not be written (disk full, ...)
        self._on_open = on_open
        self._partial = b""
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        if self._on_open is not None:
            self._on_open(self._fd)

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes) -> None:
        """Append output: whole lines now, a trailing unfinished line once it ends."""
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        complete, self._partial = data[:cut], data[cut:]
        if len(self._partial) >= PARTIAL_LIMIT:
            complete, self._partial = complete + self._partial + b"\n", b""
        self._write_lines(complete)

    def line(self, text: str) -> None:
        """One line of our own, between whole lines of the child's output."""
        self._write_lines(text.rstrip("\n").encode("utf-8", "replace") + b"\n")

    def flush(self) -> None:
        """End and write a pending unfinished line (the child has exited)."""
        if self._partial:
            pending, self._partial = self._partial + b"\n", b""
            self._write_lines(pending)

    def close(self) -> None:
        self.flush()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _write_lines(self, data: bytes) -> None:
        while data:
            room = max(0, self.max_bytes - self._size)
            if len(data) <= room:
                chunk, data = data, b""
            else:
                cut = data.rfind(b"\n", 0, room) + 1
                if cut == 0 and self._size > 0:
                    self._rotate()
                    continue
                if cut == 0:  # one line longer than max_bytes: it gets a file of its own
                    cut = data.find(b"\n") + 1 or len(data)
                chunk, data = data[:cut], data[cut:]
            self._append(chunk)
            if data:
                self._rotate()

    def _append(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                self.dropped += len(view)
                return
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self.keep > 0:
            with contextlib.suppress(OSError):
                rotated(self.path, self.keep).unlink(missing_ok=True)
            for index in range(self.keep - 1, -1, -1):
                with contextlib.suppress(FileNotFoundError):
                    rotated(self.path, index).replace(rotated(self.path, index + 1))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._open()


def follow(path: Path, *, interval: float = 0.5) -> Iterator[str]:
    """Lines appended to ``path`` from now on, across rotations and truncations (`tail -F`);
    a log that is not there yet is shown from its first line once it appears."""
    handle = None
    there_at_start = True
    try:
        while handle is None:
            try:
                handle = path.open("r", encoding="utf-8", errors="replace")
            except FileNotFoundError:
                there_at_start = False  # a log that appears later is read from its start
                time.sleep(interval)
        if there_at_start:
            handle.seek(0, os.SEEK_END)
        while True:
            line = handle.readline()
            if line:
                yield line
                continue
            try:
                current = path.stat()
            except FileNotFoundError:  # between the rename and the new file
                time.sleep(interval / 5)
                continue
            if current.st_ino != os.fstat(handle.fileno()).st_ino:
                yield from handle.readlines()  # the rest of the rotated file
                handle.close()
                handle = path.open("r", encoding="utf-8", errors="replace")
            elif current.st_size < handle.tell():  # truncated in place
                handle.seek(0)
            else:
                time.sleep(interval)
    finally:
        if handle is not None:
            handle.close()
