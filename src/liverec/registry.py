"""The live-session registry and the one open path for a session.

Owns: the sessions live in this process (shared by their connections here), and
`SessionRegistry.open`, the one way a session is opened, by a hello and by the HTTP
API alike: a new one with a server-issued id, the one live here, or one rebuilt from
the store after the owner check (`ownership.check_owner`, fail closed). A session
opened with `keep` (a hello) is registered here until its last connection releases
it; without (HTTP) it lives for the request. The socket loop is sessions.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Settings
from .errors import StoreUnavailable
from .live import LiveSession
from .ownership import check_owner, check_session_id, new_session_id, open_owned
from .pipeline import Pipeline
from .recommend.base import Recommender
from .store.base import Store

COLD_START_ID = "-"  # the session of a read with no session: nothing issued, nothing stored


class SessionRegistry:
    """The sessions live in this process and the one path that opens a session."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recommender: Recommender,
        pipeline: Pipeline,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.recommender = recommender
        self.pipeline = pipeline  # its store health: a failure is counted and logged once
        self.clock = clock
        self.sessions: dict[str, LiveSession] = {}

    async def open(
        self, session_id: str | None, user_id: str | None, *, write: bool, keep: bool = False
    ) -> LiveSession | None:
        """The session `session_id` opened by `user_id` (None: anonymous).

        With no `session_id`: a new session with a server-issued id when `write`,
        else a cold-start session that is neither issued nor stored (a read).
        Otherwise the session live here or rebuilt from the store, None when the
        store does not know it. `write` opens it for use (refreshes its expiry; a
        signed-in user claims an anonymous session). With `keep` (a hello) the
        session is registered here and a returning user's history seeds it; a new
        session is then served from memory through a store outage (the store learns
        it from its first recorded event), where without `keep` StoreUnavailable
        propagates. A signed-in user's session carries the user's purchases and
        ratings. Raises ProtocolError for an id the server did not issue, Forbidden
        for another user's session, StoreUnavailable when the owner cannot be checked.
        A session live here with an owner needs no store read (an owner never
        changes), so its owner is served through a store outage.
        """
        now = self.clock()
        if session_id is None:
            if not write:
                return LiveSession(COLD_START_ID, user_id, [])
            return await self._new(user_id, now, keep)
        held = self.sessions.get(check_session_id(session_id))
        if held is not None and held.user_id is not None:
            check_owner(held.user_id, user_id)
            return held
        # the store decides: an anonymous session may have been claimed meanwhile
        record = await open_owned(self.store, session_id, user_id, now, write=write)
        if record is None:
            return None
        live = self.sessions.get(session_id)  # it may have opened here during the await
        if live is None:
            # after a write open the stored owner is `user_id` (or the session is anonymous)
            live = LiveSession(session_id, user_id, list(record.items))
            if user_id is not None:
                await self._load_profile(live, user_id, seed=keep)
            return self.sessions.setdefault(session_id, live) if keep else live
        if write and live.user_id is None and user_id is not None:  # claimed just now
            live.user_id = user_id
            if keep:
                await self._load_profile(live, user_id)
        check_owner(live.user_id, user_id)
        return live

    def release(self, live: LiveSession) -> None:
        """One connection of `live` is gone; the last one drops it from this process."""
        live.connections -= 1
        if live.connections <= 0:
            self.sessions.pop(live.session_id, None)
            self.recommender.forget(live.session_id)

    async def _new(self, user_id: str | None, now: float, keep: bool) -> LiveSession:
        session_id = new_session_id()
        try:
            await self.store.open_session(session_id, user_id, now)
        except StoreUnavailable:
            if not keep:
                raise
            # A new id has no owner to check. Served from memory; the store learns the
            # session (with its owner) from the first event it records.
            self.pipeline.store_failed()
        live = LiveSession(session_id, user_id, [])
        if user_id is not None:
            await self._load_profile(live, user_id, seed=keep)
        if keep:
            self.sessions[session_id] = live
        return live

    async def _load_profile(self, live: LiveSession, user_id: str, seed: bool = False) -> None:
        """Purchases and ratings always; with `seed`, a session of a returning user
        with no items yet also starts from the user's recent interactions."""
        try:
            profile = await self.store.get_profile(user_id)
        except StoreUnavailable:
            self.pipeline.store_failed()
            return
        live.purchases |= profile.purchases
        live.ratings.update(profile.ratings)
        keep = self.settings.profile_seed_items
        if seed and keep and not live.items:
            live.history = profile.recent[-keep:]
