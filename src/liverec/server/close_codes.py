"""WebSocket close codes: the one place that knows them.

Owns: the close codes both WebSocket endpoints (/v1/ws, /v1/feed) send, and the
mapping from the errors that end a connection to a code and a reason. The session
layer raises `errors.Abuse` and `ProtocolError` subclasses; only the server edge
turns them into close codes (docs/protocol.md lists them for clients).
"""

from __future__ import annotations

from typing import Final

from ..errors import (
    FrameTooLarge,
    HelloTimeout,
    IdleTimeout,
    ProtocolError,
    RateLimited,
    SlowConsumer,
)

CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008  # no hello in time, foreign origin, operator token missing
CLOSE_TOO_BIG: Final = 1009  # frame over max_frame_bytes
CLOSE_INTERNAL: Final = 1011  # a bug: logged with its traceback
CLOSE_RESTART: Final = 1012  # server shutting down
CLOSE_TRY_LATER: Final = 1013  # connection limit, flooding, client not reading
# (an address cut off for flooding gets HTTP 429 before the handshake for flood_penalty_s)


def close_code_for(exc: BaseException) -> tuple[int, str]:
    """The close code and reason for an error that ends a connection."""
    if isinstance(exc, FrameTooLarge):
        return CLOSE_TOO_BIG, "frame too large"
    if isinstance(exc, HelloTimeout):
        return CLOSE_POLICY, "no hello in time"
    if isinstance(exc, RateLimited):
        return CLOSE_TRY_LATER, "rate limit exceeded"
    if isinstance(exc, SlowConsumer):
        return CLOSE_TRY_LATER, "client not reading"
    if isinstance(exc, IdleTimeout):
        return CLOSE_NORMAL, "idle timeout"
    if isinstance(exc, ProtocolError):
        return CLOSE_POLICY, exc.code
    return CLOSE_INTERNAL, "internal error"
