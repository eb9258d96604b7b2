"""Plain data types shared by every layer (protocol, store, recommenders, server).

Owns: the shape of an accepted event, a user profile, a stored session and a
recommendation. Imports nothing of ours and no third-party package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

ACTIONS: Final = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "rate")


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted interaction, as validated by the protocol and stamped by the server."""

    id: str  # client-made, unique per session; used to drop duplicates
    session_id: str
    action: str  # one of ACTIONS
    item_id: str
    ts: float  # epoch seconds
    user_id: str | None = None  # only ever set from a verified token
    rating: float | None = None  # set for action == "rate"


@dataclass(slots=True)
class Profile:
    """What the store knows about one signed-in user."""

    user_id: str
    purchases: set[str] = field(default_factory=set)
    ratings: dict[str, float] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)  # item ids, oldest first, bounded
    counters: dict[str, int] = field(default_factory=dict)  # events by action


@dataclass(slots=True)
class SessionRecord:
    """A stored session: who owns it and the ordered items it touched."""

    session_id: str
    user_id: str | None
    items: list[str] = field(default_factory=list)  # oldest first, bounded
    created: float = 0.0
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class Rec:
    item_id: str
    score: float
