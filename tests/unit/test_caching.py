"""The bounded cache behind the auth layer's kept reads: kept for its time and no longer,
dropped at once by a change, and never refilled by a read that raced the change."""

from __future__ import annotations

import threading

from mlflow_stack.caching import BoundedCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_kept_for_its_time_and_read_again_after() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(2.0, clock=clock)
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    assert cache.get("k", load) == 1
    clock.now += 1.9
    assert cache.get("k", load) == 1  # kept
    clock.now += 0.1
    assert cache.get("k", load) == 2  # 2 s old: read again
    assert len(loads) == 2


def test_forget_all_drops_every_value_at_once() -> None:
    cache: BoundedCache[str, str] = BoundedCache(60.0)
    cache.get("a", lambda: "old a")
    cache.get("b", lambda: "old b")
    cache.forget_all()
    assert cache.peek("a") == (False, None)
    assert cache.get("b", lambda: "new b") == "new b"


def test_a_read_that_began_before_a_change_is_returned_but_not_kept() -> None:
    cache: BoundedCache[str, str] = BoundedCache(60.0)
    reading, changed = threading.Event(), threading.Event()

    def slow_read() -> str:
        reading.set()
        changed.wait(5)
        return "state before the change"

    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(cache.get("k", slow_read)))
    reader.start()
    reading.wait(5)
    cache.forget_all()  # the change lands while the read is under way
    changed.set()
    reader.join(5)
    assert result == ["state before the change"]
    assert cache.peek("k") == (False, None)
    assert cache.get("k", lambda: "state after") == "state after"


def test_forget_drops_one_key() -> None:
    cache: BoundedCache[str, str] = BoundedCache(60.0)
    cache.put("a", "1")
    cache.put("b", "2")
    cache.forget("a")
    assert cache.peek("a") == (False, None)
    assert cache.peek("b") == (True, "2")


def test_the_oldest_go_first_when_it_is_full() -> None:
    cache: BoundedCache[int, int] = BoundedCache(60.0, max_entries=3)
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 3
    assert [cache.peek(key)[0] for key in range(5)] == [False, False, True, True, True]


def test_with_no_time_nothing_is_kept() -> None:
    cache: BoundedCache[str, int] = BoundedCache(0.0)
    calls = iter(range(10))
    assert cache.get("k", lambda: next(calls)) == 0
    assert cache.get("k", lambda: next(calls)) == 1
    assert len(cache) == 0
