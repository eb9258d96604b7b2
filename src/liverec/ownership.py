"""Session ids and ownership: who may open which session.

Owns: issuing session ids, the strict check that refuses ids the server did not
issue, and the one owner check (`check_owner`) that every open path uses:
registry.py's `SessionRegistry.open`, for the WebSocket hello and the HTTP API alike.

Rules (docs/security.md):
- A session id is 128 random bits in base64url (22 characters). The server issues
  it; a client may only bring back one that the store knows. Knowing is the proof
  of issue: the store is shared by every process and survives restarts, so every
  process accepts every other's ids without a shared key.
- Owners are checked against the store, never skipped: when the store cannot be
  read, `StoreUnavailable` propagates and the caller refuses (fail closed).
- An anonymous session opened by a signed-in user is claimed by that user (the
  store records the owner atomically); from then on only that user opens it.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from .errors import Forbidden, ProtocolError
from .store.base import Store
from .types import SessionRecord

SESSION_ID_BYTES = 16  # 128 bits
SESSION_ID_CHARS = 22  # base64url of 16 bytes, unpadded
_NOT_ISSUED = "'session_id' was not issued by this server"


def new_session_id() -> str:
    """A fresh session id: 128 random bits, base64url, 22 characters."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def check_session_id(value: Any) -> str:
    """`value` when it has the exact form of an issued id; raises ProtocolError
    (`bad_session_id`) otherwise ("1", a name, a UUID with dashes, padding...)."""
    if not isinstance(value, str) or len(value) != SESSION_ID_CHARS:
        raise ProtocolError("bad_session_id", _NOT_ISSUED)
    try:
        raw = base64.urlsafe_b64decode(value + "==")
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_session_id", _NOT_ISSUED) from None
    # the canonical encoding only: no '+', '/' or unused trailing bits
    if len(raw) != SESSION_ID_BYTES or base64.urlsafe_b64encode(raw)[:-2].decode() != value:
        raise ProtocolError("bad_session_id", _NOT_ISSUED)
    return value


def check_owner(owner: str | None, user_id: str | None, *, exact: bool = False) -> None:
    """The one owner check: raises Forbidden unless `user_id` (None: anonymous) may
    open a session owned by `owner`. An anonymous session may be opened by anyone
    holding its id; with `exact` (after a write open, where a signed-in user has
    claimed an anonymous session) the stored owner must be `user_id` itself."""
    if owner != user_id and (exact or owner is not None):
        raise Forbidden("session_forbidden", "this session belongs to another user")


async def open_owned(
    store: Store, session_id: str, user_id: str | None, now: float, *, write: bool
) -> SessionRecord | None:
    """The stored session `session_id` opened by `user_id`, or None when the store
    does not know it (never issued, or expired).

    `write` opens it for use (refreshes its expiry; a signed-in user claims an
    anonymous session); otherwise it is only read. Raises ProtocolError for an id
    of the wrong form, Forbidden for another user's session, and StoreUnavailable
    when the owner cannot be checked: the caller must then refuse, not guess.
    """
    check_session_id(session_id)
    found = await store.get_session(session_id)
    if found is None:
        return None
    check_owner(found.user_id, user_id)
    if not write:
        return found
    record, _ = await store.open_session(session_id, user_id, now)
    # claimed by someone else between the two calls (or the claim did not hold)
    check_owner(record.user_id, user_id, exact=True)
    return record
