"""Bounded influence: how much one session or one signed-in user may teach the
online recommender.

Owns: the action weights, the ledger of what each contributor (a signed-in user,
else a session) has already been credited per item, and the rule that turns an
event into a weight gain. The rule (docs/security.md, "Bounded influence"):

* an event's weight is its action's weight (view/click 1, add to cart 2, purchase 3,
  a rating r counts r - 2 with r taken within 1..5), never above `item_cap`;
* a contributor is credited per item with the strongest weight it has shown for it,
  so repeating actions adds nothing and a stronger action adds only the difference:
  its total gain on one item is at most `item_cap`;
* a contributor gains weight on at most `max_items` distinct items; later items add
  nothing (its total is at most `item_cap * max_items`).

The recommender adds each gain to the item's popularity and, divided by the
distance, to the co-occurrence edges from the contributor's previous items, so no
edge gains more than (1 + reverse weight) * `item_cap` from one contributor.

A session begun anonymously and claimed by a signed-in user (its first signed-in
hello) is one contributor with its user: at the user's first event on it, the
session's anonymous entry moves into the user's, the credits per item added and
capped at `item_cap` (a session's events carry its user from the claim on, an
owner never changes). So a user and all its sessions, claimed ones included, gain
at most `item_cap` per item over at most `max_items` items, except what a session
earned while still anonymous on items the user's other sessions had already been
credited for (an anonymous session is anyone's, bounded on its own).

The ledger keeps `max_contributors` contributors, least recently active dropped;
closing a connection does not clear an entry (a reconnect must not reset it).
Costs O(1) per event; memory ~640 B per contributor of ~5 items (bench_online.py),
so ~64 MB at the default 100,000 contributors.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..errors import ConfigError
from ..types import Event

DEFAULT_ACTION_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "view": 1.0,
        "click": 1.0,
        "add_to_cart": 2.0,
        "purchase": 3.0,
        "remove_from_cart": 0.0,
        "rate": 1.0,  # multiplies (rating - LOW_RATING): 3 -> 1, 4 -> 2, 5 -> 3
    }
)
LOW_RATING: Final = 2.0  # on a 1..5 scale, ratings <= this are "low"
HIGH_RATING: Final = 5.0  # a rating counts at most this, whatever arrived


def _contributor(event: Event) -> str:
    """The ledger key: the user, else the session (ids are printable, never NUL)."""
    return event.session_id if event.user_id is None else "\0" + event.user_id


class Ledger:
    """Per contributor (user, else session): item -> weight credited so far."""

    __slots__ = ("_credits", "action_weights", "item_cap", "max_contributors", "max_items")

    def __init__(
        self,
        item_cap: float = 3.0,
        max_items: int = 50,
        max_contributors: int = 100_000,
        action_weights: Mapping[str, float] = DEFAULT_ACTION_WEIGHTS,
    ) -> None:
        if not (item_cap > 0 and math.isfinite(item_cap)) or min(max_items, max_contributors) < 1:
            raise ConfigError("influence: item_cap must be > 0, max_items and contributors >= 1")
        self.item_cap = item_cap
        self.max_items = max_items
        self.max_contributors = max_contributors
        self.action_weights = dict(action_weights)
        self._credits: OrderedDict[str, dict[str, float]] = OrderedDict()

    def weight(self, event: Event) -> float:
        """How much one event counts on its own, in 0..item_cap."""
        w = self.action_weights.get(event.action, 0.0)
        if event.action == "rate":
            r = event.rating
            if r is None or not math.isfinite(r):
                return 0.0
            w *= max(0.0, min(r, HIGH_RATING) - LOW_RATING)
        return min(max(w, 0.0), self.item_cap)

    def gain(self, event: Event) -> float:
        """The weight this event adds (0 when its contributor has already shown as
        much for the item, or has used up its items), recorded in the ledger."""
        w = self.weight(event)
        if w <= 0.0:
            return 0.0
        key = _contributor(event)
        credits = self._credits.get(key)
        if event.user_id is not None and event.session_id in self._credits:
            credits = self._claim(key, credits, self._credits.pop(event.session_id))
        if credits is None:
            credits = self._credits[key] = {}
            if len(self._credits) > self.max_contributors:
                self._credits.popitem(last=False)
        else:
            self._credits.move_to_end(key)
        had = credits.get(event.item_id)
        if had is None:
            if len(credits) >= self.max_items:
                return 0.0
            had = 0.0
        if w <= had:
            return 0.0
        credits[event.item_id] = w
        return w - had

    def _claim(
        self, key: str, credits: dict[str, float] | None, anonymous: dict[str, float]
    ) -> dict[str, float]:
        """Move a claimed session's anonymous entry into its user's `key`: what
        both were credited per item, added and capped (O(items of the session))."""
        if credits is None:
            credits = self._credits[key] = anonymous
            return credits
        for item, w in anonymous.items():
            credits[item] = min(self.item_cap, credits.get(item, 0.0) + w)
        return credits

    def credited(self, event: Event) -> float:
        """What the event's contributor has been credited for its item so far."""
        return self._credits.get(_contributor(event), {}).get(event.item_id, 0.0)

    def __len__(self) -> int:
        return len(self._credits)
