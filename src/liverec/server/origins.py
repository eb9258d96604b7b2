"""Origin policy for WebSocket upgrades and CORS: one normalisation, one decision.

Owns: whether a browser origin may talk to this server. An origin is compared in
one normal form (lower-case scheme and host, default port dropped, IPv6 in
brackets); a malformed one never matches. The server's own origin is the scheme
and Host it was reached at, once the Host passed the `allowed_hosts` list (see
gate.py: a request with another Host never gets here). Other origins only when
listed in `allowed_origins` ("*" allows every origin: not for production; "null"
allows pages opened from file:// and sandboxed frames). Requests without an Origin
come from non-browser clients and are allowed. The list is checked at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError
from .throttle import LogThrottle

log = logging.getLogger("liverec.server")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WS_SCHEMES = {"ws": "http", "wss": "https"}
MAX_ORIGIN_CHARS = 512


def normalise(origin: str) -> str | None:
    """`scheme://host[:port]` in normal form, or None when `origin` is not one.

    "null" (file:// pages, sandboxed frames) stays "null".
    """
    text = origin.strip().lower()
    if text == "null":
        return text
    if len(text) > MAX_ORIGIN_CHARS or not text.isascii():
        return None
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError: "http://h:8000.evil.io", "http://[::1"
    except ValueError:
        return None
    scheme = _WS_SCHEMES.get(parts.scheme, parts.scheme)
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def check_allowed_origins(entries: Iterable[str]) -> frozenset[str]:
    """The `allowed_origins` setting in normal form; ConfigError names a bad entry."""
    normal: set[str] = set()
    for entry in entries:
        if entry == "*":
            normal.add("*")
            continue
        value = normalise(entry)
        if value is None:
            raise ConfigError(
                f"allowed_origins: {entry!r} is not an origin; write scheme://host[:port], "
                f"e.g. 'http://{entry.strip('/')}' or 'https://{entry.strip('/')}'"
            )
        normal.add(value)
    return frozenset(normal)


class OriginPolicy:
    """The decision for one server, shared by the WebSocket endpoints and CORS."""

    def __init__(self, allowed_origins: Iterable[str], log_repeat_s: float) -> None:
        self.allowed = check_allowed_origins(allowed_origins)
        self.allow_all = "*" in self.allowed
        self._refusals = LogThrottle(log, log_repeat_s)

    def listed(self, origin: str) -> bool:
        """Whether `origin` is in `allowed_origins` (CORS: the own origin needs none)."""
        if self.allow_all:
            return True
        normal = normalise(origin)
        return normal is not None and normal in self.allowed

    def allows(self, headers: Mapping[str, str], scheme: str, path: str = "") -> bool:
        """For a WebSocket upgrade: no Origin, the own origin, or a listed one.
        `scheme` is the request's (ws/wss or http/https, after trusted forwarding)."""
        origin = headers.get("origin")
        if origin is None or self.listed(origin):
            return True
        normal = normalise(origin)
        own = normalise(f"{scheme}://{headers.get('host', '')}")
        if normal is not None and normal == own:
            return True
        self._refusals.warning(
            f"origin {origin[:100]!r}",
            "refused origin %r on %s (not this server's and not in allowed_origins)",
            origin[:100],
            path,
        )
        return False
