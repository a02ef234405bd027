"""The Host check (DNS-rebinding protection): which ``Host`` headers the server answers.

MLflow's own check matches text patterns such as ``10.*`` and ``192.168.*``, so that any
private address is accepted, but it also accepts ``10.evil.example`` or
``192.168.1.attacker.example``: names an attacker can point at the server through a victim's
browser, which is exactly what the check exists to stop. Here private and loopback addresses
are accepted only as literal IP addresses; names are accepted only when they are ``localhost``
or listed in MLFLOW_STACK_ALLOWED_HOSTS (``*`` wildcards allowed, any port).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections.abc import Iterable

from mlflow_stack.server.asgi import ASGIApp, Receive, Scope, Send, header, respond

log = logging.getLogger(__name__)

#: Literal addresses always accepted: loopback, RFC 1918, unique local IPv6, unspecified.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "0.0.0.0/32",
        "::1/128", "fc00::/7",
    )
)  # fmt: skip
#: Paths answered whatever the Host header: container and load-balancer health checks.
EXEMPT_PATHS = frozenset({"/health", "/health/live", "/version"})
INVALID_HOST = b"Invalid Host header - possible DNS rebinding attack detected"


def split_host(value: str) -> tuple[str, str]:
    """(host, port) of a Host header; IPv6 literals keep no brackets; port may be ''."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", ""
        return host, rest[1:]
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host, port
    return value, ""


def is_private_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in PRIVATE_NETWORKS)


class HostPolicy:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(pattern.lower() for pattern in patterns)
        self.any = "*" in self.patterns

    def allows(self, value: str) -> bool:
        if self.any:
            return True
        value = value.strip().lower()
        host, port = split_host(value)
        if not host or (port and not 0 < int(port) < 65536):
            return False
        if host == "localhost" or is_private_literal(host):
            return True
        return any(
            fnmatch.fnmatchcase(value if ":" in pattern else host, pattern)
            for pattern in self.patterns
        )


class HostCheck:
    """ASGI middleware: 403 for a Host header the policy refuses (health paths exempt)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        raw = header(scope, b"host") or b""
        value = raw.decode("latin-1")
        if not self.policy.allows(value):
            log.warning("refused a request for Host %r", value)
            await respond(send, 403, INVALID_HOST)
            return
        await self.app(scope, receive, send)
