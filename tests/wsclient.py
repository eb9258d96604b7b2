"""A small protocol-v1 client over a real `websockets` connection, for tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect

_ids = itertools.count(1)


class Client:
    def __init__(self, ws: ClientConnection, binary: bool = False) -> None:
        self.ws = ws
        self.binary = binary

    @classmethod
    async def open(cls, url: str, binary: bool = False, **kwargs: Any) -> Client:
        ws = await connect(url, open_timeout=10, **kwargs)
        return cls(ws, binary)

    async def send(self, frame: Any) -> None:
        if self.binary:
            await self.ws.send(msgpack.packb(frame, use_bin_type=True))
        else:
            await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            assert self.binary, "server answered a JSON client in binary"
            out: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        else:
            assert not self.binary, "server answered a msgpack client in text"
            out = json.loads(raw)
        return out

    async def recv_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Next frame of this type; other frames in between are returned in .skipped."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def hello(self, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        await self.send({"type": "hello", **fields})
        welcome = await self.recv()
        assert welcome["type"] == "welcome", welcome
        recs = await self.recv()
        assert recs["type"] == "recs", recs
        return welcome, recs

    async def event(self, item_id: str, action: str = "view", **fields: Any) -> tuple[dict, dict]:
        """Send one event; return (ack, recs)."""
        event_id = fields.pop("id", None) or f"e{next(_ids)}"
        await self.send(
            {"type": "event", "id": event_id, "action": action, "item_id": item_id, **fields}
        )
        ack = await self.recv()
        assert ack == {"type": "ack", "id": event_id} or (
            ack.get("type") == "ack" and ack["id"] == event_id
        ), ack
        recs = await self.recv()
        assert recs["type"] == "recs" and recs["for_event"] == event_id, recs
        return ack, recs

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
