"""The bounded outbound queue, in process: a newer recs frame replaces an unsent one,
and a client that does not read is cut off (SlowConsumer) instead of buffered.

A fake transport whose `send` waits on a gate stands for a socket whose peer does not
read; everything else is the shipped `Connection` and `Outbox`."""

from __future__ import annotations

import asyncio
import json

import pytest

from liverec.config import Settings
from liverec.errors import SlowConsumer
from liverec.frames import PONG, Ack, Recs, Welcome
from liverec.live import Connection, Outbox
from liverec.metrics import Metrics


class GatedTransport:
    """`send` blocks until the gate opens; what was sent is kept in order."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[str | bytes] = []
        self.more: list[bool] = []  # each send's "another frame follows at once"
        self.waiting = asyncio.Event()  # set once a send is blocked on the gate

    async def receive(self) -> str | bytes | None:
        return None

    async def send(self, data: str | bytes, more: bool = False) -> None:
        self.waiting.set()
        await self.gate.wait()
        self.sent.append(data)
        self.more.append(more)


def recs(n: int) -> Recs:
    return Recs("s", f"e{n}", (), "m")


def ack(n: int) -> Ack:
    return Ack(f"e{n}")


def test_newer_recs_frame_replaces_an_unsent_one() -> None:
    replaced: list[int] = []
    box = Outbox(4, lambda: replaced.append(1))
    box.put(recs(1))
    box.put(ack(2))
    box.put(recs(2))  # recs(1) was not sent yet: it goes, the ack stays
    assert box.frames == [ack(2), recs(2)]
    assert len(replaced) == 1
    box.put(ack(3))
    box.put(ack(4))
    assert box.frames == [ack(2), recs(2), ack(3), ack(4)]


def test_a_recs_frame_never_replaces_other_kinds() -> None:
    box = Outbox(4, lambda: None)
    welcome = Welcome("s", False, "m")
    box.put(welcome)  # hello's welcome is queued just before the first recs frame
    box.put(recs(0))
    box.put(PONG)
    box.put(recs(1))
    assert box.frames == [welcome, PONG, recs(1)]


def test_outbox_full_of_acks_raises_slow_consumer() -> None:
    box = Outbox(3, lambda: None)
    for n in range(3):
        box.put(ack(n))
    with pytest.raises(SlowConsumer):
        box.put(ack(3))
    # a recs frame replacing a queued one needs no room of its own
    box = Outbox(2, lambda: None)
    box.put(ack(0))
    box.put(recs(0))
    box.put(recs(1))
    assert box.frames == [ack(0), recs(1)]


async def test_connection_sends_only_the_newest_recs_to_a_stalled_peer() -> None:
    transport = GatedTransport()
    metrics = Metrics()
    conn = Connection(transport, Settings(outbound_queue=8), metrics, "127.0.0.1")
    conn.push(Welcome("s", False, "m"))
    await transport.waiting.wait()  # the writer holds the welcome; the peer is not reading
    for n in range(5):
        conn.push(ack(n))
        conn.push(recs(n))
    transport.gate.set()
    assert conn.writer is not None
    await conn.writer
    sent = [json.loads(d) for d in transport.sent]
    # every ack, in order; of the recs frames only the newest
    expected = [Welcome("s", False, "m"), *map(ack, range(5)), recs(4)]
    assert sent == [frame.wire() for frame in expected]
    assert "liverec_replaced_recs_total 4" in metrics.render()
    # the welcome went alone; of the rest every frame but the last says another
    # follows, so the socket writes them together
    assert transport.more == [False] + [True] * 5 + [False]


async def test_an_events_ack_and_recs_are_handed_over_as_one_write() -> None:
    transport = GatedTransport()
    transport.gate.set()
    conn = Connection(transport, Settings(), Metrics(), "127.0.0.1")
    conn.push(ack(1))
    conn.push(recs(1))
    assert conn.writer is not None
    await conn.writer
    conn.push(PONG)  # alone in the queue: nothing follows it
    assert conn.writer is not None
    await conn.writer
    assert [json.loads(d)["type"] for d in transport.sent] == ["ack", "recs", "pong"]
    assert transport.more == [True, False, False]


async def test_connection_raises_slow_consumer_once_the_queue_is_full() -> None:
    transport = GatedTransport()
    conn = Connection(transport, Settings(outbound_queue=4), Metrics(), "127.0.0.1")
    conn.push(Welcome("s", False, "m"))
    await transport.waiting.wait()
    for n in range(4):
        conn.push(ack(n))
    with pytest.raises(SlowConsumer):
        conn.push(ack(4))
    writer = conn.writer
    assert writer is not None
    conn.cancel_writer()  # what the session manager does when the connection ends
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert writer.cancelled() and conn.writer is None and transport.sent == []
