"""The exception tree of liverec.

Owns: every error a caller may want to tell apart. Only the server edge maps these
to WebSocket close codes and HTTP statuses; nothing below it knows about either.
"""

from __future__ import annotations


class LiverecError(Exception):
    """Base of every error raised on purpose by liverec."""


class ConfigError(LiverecError):
    """A setting has an invalid value."""


class ProtocolError(LiverecError):
    """A client frame is malformed or breaks a rule; the connection may stay open.

    `code` is the stable machine-readable code sent in the error frame; `ref` names
    the offending event id when one could be read.
    """

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class FrameTooLarge(ProtocolError):
    """A frame exceeds the size limit (abuse: closes with 1009)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("frame_too_large", f"frame of {size} bytes exceeds the limit of {limit}")


class Forbidden(LiverecError):
    """Identity or ownership check failed (bad token, session owned by someone else)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StoreError(LiverecError):
    """The profile store could not carry out an operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the operation may be retried later."""


class ModelError(LiverecError):
    """A model checkpoint is missing, malformed or incompatible."""


class Abuse(LiverecError):
    """A client broke a limit badly enough that its connection is closed.

    The server edge maps each subclass to a WebSocket close code.
    """


class HelloTimeout(Abuse):
    """No valid hello frame within the allowed time."""


class RateLimited(Abuse):
    """The client kept sending past its event rate limit."""


class SlowConsumer(Abuse):
    """The client stopped reading and its bounded outbound queue is full."""


class IdleTimeout(LiverecError):
    """The client sent nothing for longer than the idle timeout (a normal close)."""


class ServerBusy(LiverecError):
    """The server is at its connection limit or shutting down."""
