"""Server frames as typed values: what the session layer returns and queues.

Owns: one frozen dataclass per kind of server frame (welcome, ack, error, recs,
pong). A frame is built once, complete (a recs frame carries its catalog cards when
it is made), and is turned into its wire dict only at the edge, where
`protocol.encode` serialises it. `wire()` yields exactly what the protocol's
builders yield, key order included, so the bytes on the wire do not change
(docs/protocol.md). No I/O, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from . import protocol


@dataclass(frozen=True, slots=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    session_id: str
    resumed: bool
    model: str

    def wire(self) -> dict[str, Any]:
        return protocol.welcome(self.session_id, self.resumed, self.model)


@dataclass(frozen=True, slots=True)
class Ack:
    type: ClassVar[str] = "ack"
    id: str
    duplicate: bool = False
    ignored: bool = False

    def wire(self) -> dict[str, Any]:
        return protocol.ack(self.id, self.duplicate, self.ignored)


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str
    ref: str | None = None

    def wire(self) -> dict[str, Any]:
        return protocol.error(self.code, self.message, self.ref)


@dataclass(frozen=True, slots=True)
class Pong:
    type: ClassVar[str] = "pong"

    def wire(self) -> dict[str, Any]:
        return protocol.pong()


@dataclass(frozen=True, slots=True)
class Recs:
    """A recs frame. `items` are the wire entries ({"item_id", "score"} plus the
    catalog's card fields), complete when the frame is built."""

    type: ClassVar[str] = "recs"
    session_id: str
    for_event: str | None
    items: tuple[dict[str, Any], ...]
    model: str
    recs_id: str | None = None

    def wire(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "recs",
            "session_id": self.session_id,
            "for_event": self.for_event,
            "items": list(self.items),
            "model": self.model,
        }
        if self.recs_id is not None:
            frame["recs_id"] = self.recs_id
        return frame


Frame = Welcome | Ack | Error | Pong | Recs
PONG = Pong()
