"""Reads kept for a bounded time: what the auth layer asks on every request.

A :class:`BoundedCache` keeps a loaded value for at most ``ttl`` seconds, so a change made by
another process is seen within that bound. :meth:`BoundedCache.forget_all` drops every entry
at once, for changes made in this process; a value whose load began before the last
``forget_all`` is returned to its caller but not kept, so a read racing a change cannot keep
the old state alive for another ``ttl``.

Entries are bounded in number too: the oldest go first when ``max_entries`` is reached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._generation = 0

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The kept value for ``key``, or ``load()``'s (kept unless forgotten meanwhile)."""
        found, value = self.peek(key)
        if found:
            return value
        with self._lock:
            generation = self._generation
        value = load()
        self._keep(key, value, generation)
        return value

    def peek(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` when a value younger than ``ttl`` is kept; ``(False, None)``."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            if now - entry[0] >= self.ttl:
                del self._entries[key]
                return False, None
            return True, entry[1]

    def put(self, key: K, value: V) -> None:
        """Keep a value the caller read itself: one that does not change once it exists (a
        run's experiment), as a ``forget`` racing the caller's read is not seen here."""
        with self._lock:
            generation = self._generation
        self._keep(key, value, generation)

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._generation += 1

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _keep(self, key: K, value: V, generation: int) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        with self._lock:
            if generation != self._generation:
                return
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
