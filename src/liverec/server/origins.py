"""Origin policy for WebSocket upgrades and CORS.

Owns: the decision whether a browser origin may talk to this server. The server's
own origin (the Host it was reached at) is always allowed; others only when listed
in the `allowed_origins` setting ("*" allows every origin — not for production).
Requests without an Origin header come from non-browser clients and are allowed;
browsers always send one on cross-site WebSocket upgrades.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit


def normalise(origin: str) -> str:
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()
    port = parts.port
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme)
    host = parts.hostname if port in (None, default) else f"{parts.hostname}:{port}"
    return f"{parts.scheme}://{host}"


def origin_allowed(headers: Mapping[str, str], allowed: Iterable[str]) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed:
        return True
    wanted = normalise(origin)
    if wanted in {normalise(a) for a in allowed}:
        return True
    host = headers.get("host", "").lower()
    if not host:
        return False
    # Same origin: the Origin's host[:port] equals the Host header we were reached at.
    own = urlsplit(wanted)
    netloc = own.netloc
    return netloc == host or normalise(f"{own.scheme}://{host}") == wanted
