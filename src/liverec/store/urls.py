"""Store URLs made safe to show.

Owns: `mask_url`, which hides a password in a store URL before it is logged or
printed. Its own module so that the backends (`redis.py`) and the package
(`__init__.py`, which imports the backends lazily) do not import each other.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (safe to log and show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
