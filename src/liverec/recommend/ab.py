"""A/B split of sessions between two recommenders.

Owns: assigning each session to arm A (the live model) or arm B (a candidate) —
stable per session (a hash of its id), B for a configurable share — and routing
every call of that session to its arm. Recs frames name the version that made
them, so click-through rates by model version compare the arms on real traffic.
"""

from __future__ import annotations

import hashlib

from ..types import Event
from .base import RecContext, RecList, Recommender


class ABRecommender(Recommender):
    """Arm B serves `share` of the sessions; both arms share one online fallback,
    which sees every event once (through arm A)."""

    def __init__(self, a: Recommender, b: Recommender, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be in 0..1")
        self.a, self.b, self.share = a, b, share

    def arm(self, session_id: str) -> Recommender:
        digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
        return self.b if int.from_bytes(digest, "big") / 2**64 < self.share else self.a

    @property
    def version(self) -> str:
        return self.a.version

    def version_for(self, session_id: str) -> str:
        return self.arm(session_id).version

    def observe(self, event: Event) -> None:
        self.a.observe(event)

    async def recommend(self, ctx: RecContext) -> RecList:
        return await self.arm(ctx.session_id).recommend(ctx)

    def forget(self, session_id: str) -> None:
        self.a.forget(session_id)
        self.b.forget(session_id)

    def is_ready(self) -> bool:
        return self.a.is_ready() and self.b.is_ready()

    def figures(self) -> dict[str, float]:
        a, b = self.a.figures(), self.b.figures()
        return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}

    async def start(self) -> None:
        await self.a.start()
        await self.b.start()

    async def check_model(self) -> bool:
        a = await self.a.check_model()
        b = await self.b.check_model()
        return a or b

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()
