"""Regression guard for the keep-alive stall: with `--workers N`, uvicorn's listener has
proto=0, asyncio then leaves Nagle on, and every request after the first on a connection
waited ~40 ms for the client's delayed ACK (uvicorn #3149). uvloop, which the image and the
native runtime install, sets TCP_NODELAY itself.

And a kept-alive connection outlives a pause longer than uvicorn's default 5 s, so that a client
(or a load balancer) never sends a request on a connection the server is closing."""

from __future__ import annotations

import socket
import statistics
import time
from urllib.parse import urlsplit

from tests.conftest import LiveStack


def health(conn: socket.socket, host: str, port: int) -> None:
    conn.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    response = b""
    while not response.endswith(b"OK"):
        chunk = conn.recv(65536)
        assert chunk, "server closed the connection"
        response += chunk


def keep_alive_latencies(host: str, port: int, count: int = 40) -> list[float]:
    timings = []
    with socket.create_connection((host, port), timeout=10) as conn:
        for _ in range(count):
            began = time.perf_counter()
            health(conn, host, port)
            timings.append((time.perf_counter() - began) * 1000)
    return timings


def test_requests_on_a_kept_alive_connection_are_not_delayed(stack: LiveStack) -> None:
    url = urlsplit(stack.tracking_uri)
    timings = keep_alive_latencies(url.hostname, url.port)
    later = timings[5:]  # Linux ACKs the first segments of a connection at once
    assert statistics.median(later) < 15, f"median {statistics.median(later):.1f} ms: stall is back"
    assert sorted(later)[len(later) * 9 // 10] < 30


def test_a_kept_alive_connection_outlives_a_pause_of_several_seconds(stack: LiveStack) -> None:
    url = urlsplit(stack.tracking_uri)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        health(conn, url.hostname, url.port)
        time.sleep(7)  # uvicorn's default closed it after 5 s
        health(conn, url.hostname, url.port)  # the same socket: no reconnect happened
