"""Admission: who may connect, and which received frames are taken.

Owns: the per-address token buckets (LRU-bounded), flood penalties, the refusal of
new connections (shutdown, capacity, per-address limits, an address over its rate),
and the per-frame admission of a connection (its bucket, then its address's), with
the rate_limited error frames and the cut-off of a connection that keeps flooding.
`SessionManager` is an `Admission`; the edge asks it before and after the upgrade.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable

from . import frames, protocol, schema
from .config import Settings
from .errors import ProtocolError, RateLimited
from .live import Connection, TokenBucket
from .metrics import Metrics

RATE_ERRORS_SENT = 3  # rate_limited error frames per run of refused events; then silence


class Admission:
    """Connection and frame admission for the connections of this process."""

    def __init__(
        self, settings: Settings, metrics: Metrics, monotonic: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.monotonic = monotonic
        self.limits = schema.limits_of(settings)
        self.connections: set[Connection] = set()
        self.address_connections: dict[str, int] = {}
        self.address_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.accepting = True

    def refusal(self, address: str) -> str | None:
        """Why a new connection from `address` is refused now, or None to admit it."""
        if not self.accepting:
            return "server shutting down"
        if len(self.connections) >= self.settings.max_connections:
            return "server at capacity"
        if self.address_connections.get(address, 0) >= self.settings.max_connections_per_address:
            return "too many connections from this address"
        bucket = self.address_buckets.get(address)
        if bucket is not None and bucket.peek(self.monotonic()) < 1.0:
            return "this address is over its event rate"
        return None

    def penalty_left(self, address: str) -> float:
        """Seconds an address cut off for flooding must still wait (0: none). Checked
        before the WebSocket handshake, so a flooder's reconnects cost an HTTP reply.
        A penalised address is one whose event bucket is below zero (see penalize)."""
        bucket = self.address_buckets.get(address)
        if bucket is None:
            return 0.0
        return max(0.0, -bucket.peek(self.monotonic()) / bucket.rate)

    def penalize(self, address: str) -> None:
        """Refuse new sockets from `address` for flood_penalty_s, and empty its event
        bucket so that it refills only after the penalty: a flooder that comes back gets
        the sustained rate, never a fresh burst (measured: the bursts of returning
        flooders doubled the other clients' p99, docs/reliability.md). Both are one
        state: the bucket set to -(flood_penalty_s x rate), back at 0 when it ends."""
        if self.settings.flood_penalty_s <= 0:
            return
        now = self.monotonic()
        bucket = self._address_bucket(address, now)
        bucket.tokens = -self.settings.flood_penalty_s * bucket.rate
        bucket.last = now

    def address_allows(self, address: str, events: int = 1) -> bool:
        """Take `events` tokens from the address's bucket (shared by its connections)."""
        now = self.monotonic()
        bucket = self._address_bucket(address, now)
        return all(bucket.take(now) for _ in range(events))

    def _address_bucket(self, address: str, now: float) -> TokenBucket:
        """The address's bucket, made full on first use; LRU-bounded."""
        bucket = self.address_buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(
                self.settings.address_events_per_s, self.settings.address_events_burst, now
            )
            self.address_buckets[address] = bucket
            if len(self.address_buckets) > self.settings.max_tracked_addresses:
                self.address_buckets.popitem(last=False)
        else:
            self.address_buckets.move_to_end(address)
        return bucket

    def _admit(self, conn: Connection) -> bool:
        """Take one token for a received frame, of any kind, from the connection's
        bucket and then from its address's; False when either is empty."""
        assert conn.bucket is not None
        if conn.bucket.take(self.monotonic()) and self.address_allows(conn.address):
            conn.limited = 0
            return True
        return False

    def _refuse(self, conn: Connection, data: str | bytes) -> None:
        """Drop a frame over the rate. The first RATE_ERRORS_SENT of a run are told
        (naming the event); the rest are dropped unread, a flood must not cost us a
        frame each; more than events_burst in a run closes the connection (1013)."""
        conn.limited += 1
        if conn.limited > self.settings.events_burst:
            raise RateLimited("frame rate limit exceeded repeatedly")
        if conn.limited > RATE_ERRORS_SENT:
            self.metrics.errors.inc("rate_limited")
            return
        ref = None
        with contextlib.suppress(ProtocolError):
            msg, _ = protocol.decode(data, self.limits)
            ref = msg.id if isinstance(msg, protocol.EventMsg) else None
        message = f"more than {self.settings.events_per_s:g} frames/s; frame dropped, send it later"
        self.metrics.errors.inc("rate_limited")
        conn.push(frames.Error("rate_limited", message, ref))
