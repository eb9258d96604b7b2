"""Bounded influence in the learner's training data.

Owns: what of the event window may become training (and held-out) sessions. The
rule mirrors the online recommender's (docs/security.md, "Bounded influence"); per
contributor, a signed-in user else a session:

* consecutive events on the same item are one step (a hundred views of an item teach
  the model no more than one);
* an item appears at most `item_repeats` times (a contributor bouncing between two
  items adds a few transitions, not thousands);
* at most `max_items` distinct items count; events on further items are left out.

So one contributor adds at most item_repeats * max_items steps to a window, whatever
it sends. A session begun anonymously and claimed by a user counts with the user from
the user's first event on it: its steps per item are added to the user's (capped at
item_repeats), as in recommend/influence.py. O(events) time, O(contributors * max_items) memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError
from ..store.base import LoggedEvent


def bounded_events(
    events: Sequence[LoggedEvent], item_repeats: int, max_items: int
) -> list[LoggedEvent]:
    """The events that count, in their order (see the module docstring)."""
    if item_repeats < 1 or max_items < 1:
        raise ConfigError("item_repeats and max_items must be >= 1")
    last: dict[str, str] = {}  # contributor -> its last kept item
    counts: dict[str, dict[str, int]] = {}  # contributor -> item -> steps kept
    kept: list[LoggedEvent] = []
    for logged in events:
        e = logged.event
        key = "u:" + e.user_id if e.user_id is not None else "s:" + e.session_id
        if e.user_id is not None and "s:" + e.session_id in counts:  # claimed just now
            _claim(counts, last, key, "s:" + e.session_id, item_repeats)
        if last.get(key) == e.item_id:
            continue
        seen = counts.setdefault(key, {})
        n = seen.get(e.item_id, 0)
        if n >= item_repeats or (n == 0 and len(seen) >= max_items):
            continue
        seen[e.item_id] = n + 1
        last[key] = e.item_id
        kept.append(logged)
    return kept


def _claim(
    counts: dict[str, dict[str, int]], last: dict[str, str], user: str, session: str, cap: int
) -> None:
    """Move a claimed session's steps into its user's, per item added and capped."""
    moved = counts.pop(session)
    mine = counts.setdefault(user, {})
    for item, n in moved.items():
        mine[item] = min(cap, mine.get(item, 0) + n)
    previous = last.pop(session, None)
    if previous is not None:
        last.setdefault(user, previous)
