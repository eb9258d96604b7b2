"""ownership.py in process: the form of an issued session id, the one owner check,
and `open_owned` against the shipped embedded store (`memory://`). The race where
another process claims a session between the read and the write open is made by
running that claim, on the same store, right after the read: no timing involved."""

from __future__ import annotations

import base64
import string
from typing import Any

import pytest

from liverec.errors import Forbidden, ProtocolError, StoreUnavailable
from liverec.ownership import (
    SESSION_ID_CHARS,
    check_owner,
    check_session_id,
    new_session_id,
    open_owned,
)
from liverec.store import StoreLimits, open_store
from liverec.store.base import Store
from liverec.types import SessionRecord

NOT_ISSUED = "'session_id' was not issued by this server"
NOW = 1_700_000_000.0
ALPHABET = set(string.ascii_letters + string.digits + "-_")


def test_new_ids_are_128_random_bits_in_22_base64url_characters() -> None:
    ids = {new_session_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert len(value) == SESSION_ID_CHARS == 22 and set(value) <= ALPHABET
        assert len(base64.urlsafe_b64decode(value + "==")) == 16
        assert check_session_id(value) == value  # what the server issues, it takes back


@pytest.mark.parametrize(
    "value",
    [
        "A" * 22,  # 16 zero bytes
        "_" * 21 + "w",  # all ones in the 128 bits used
        "abcdefghijklmnopqrstuQ",
    ],
)
def test_any_canonical_22_character_id_has_the_form(value: str) -> None:
    assert check_session_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        b"A" * 22,
        ["A" * 22],
        "",
        "1",
        "A" * 21,
        "A" * 23,
        "A" * 24,
        "123e4567-e89b-12d3-a456-426614174000",  # a UUID
        "A" * 20 + "==",  # padding
        "A" * 21 + "=",
        "A" * 21 + "B",  # unused trailing bits set: not the canonical encoding
        "A" * 21 + "_",
        "AAAA+AAAAAAAAAAAAAAAAA",  # standard base64, not base64url
        "AAAA/AAAAAAAAAAAAAAAAA",
        "A" * 20 + "!!",  # outside the alphabet (the decoder would skip them)
        "A" * 21 + "!",
        "!" * 22,
        "A" * 21 + "é",
    ],
)
def test_anything_else_is_not_an_issued_id(value: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_session_id(value)
    assert (caught.value.code, caught.value.message, caught.value.ref) == (
        "bad_session_id",
        NOT_ISSUED,
        None,
    )


@pytest.mark.parametrize(
    ("owner", "user_id", "exact", "allowed"),
    [
        (None, None, False, True),  # an anonymous session: anyone holding its id
        (None, "alice", False, True),
        ("alice", "alice", False, True),
        ("alice", None, False, False),  # a user's session: that user only
        ("alice", "bob", False, False),
        (None, None, True, True),  # exact: the stored owner must be the caller
        ("alice", "alice", True, True),
        (None, "alice", True, False),  # alice's claim did not hold
        ("alice", None, True, False),
        ("alice", "bob", True, False),
    ],
)
def test_check_owner(owner: str | None, user_id: str | None, exact: bool, allowed: bool) -> None:
    if allowed:
        assert check_owner(owner, user_id, exact=exact) is None
        return
    with pytest.raises(Forbidden) as caught:
        check_owner(owner, user_id, exact=exact)
    assert (caught.value.code, caught.value.message) == (
        "session_forbidden",
        "this session belongs to another user",
    )


def test_check_owner_is_not_exact_unless_asked() -> None:
    check_owner(None, "alice")  # would raise with exact=True


async def stored(store: Store, user_id: str | None) -> str:
    session_id = new_session_id()
    await store.open_session(session_id, user_id, NOW)
    return session_id


async def test_an_id_of_the_wrong_form_is_refused_before_the_store_is_read() -> None:
    closed = open_store("memory://", StoreLimits())  # never opened: every read fails
    with pytest.raises(ProtocolError):
        await open_owned(closed, "not-issued", None, NOW, write=True)
    with pytest.raises(StoreUnavailable):  # fail closed: the owner cannot be checked
        await open_owned(closed, new_session_id(), None, NOW, write=False)


async def test_an_unknown_id_opens_nothing(memory_store: Store) -> None:
    session_id = new_session_id()
    for write in (False, True):
        assert await open_owned(memory_store, session_id, "alice", NOW, write=write) is None
    assert await memory_store.get_session(session_id) is None  # not created by the attempt


async def test_an_anonymous_session_is_read_by_anyone_and_claimed_by_a_write(
    memory_store: Store,
) -> None:
    session_id = await stored(memory_store, None)
    for user_id in (None, "alice"):
        record = await open_owned(memory_store, session_id, user_id, NOW + 5, write=False)
        assert record is not None and record.user_id is None
    after_reads = await memory_store.get_session(session_id)
    assert after_reads is not None
    assert (after_reads.user_id, after_reads.last_seen) == (None, NOW)  # a read changes nothing
    record = await open_owned(memory_store, session_id, "alice", NOW + 10, write=True)
    assert record is not None and (record.user_id, record.last_seen) == ("alice", NOW + 10)
    claimed = await memory_store.get_session(session_id)
    assert claimed is not None and claimed.user_id == "alice"
    for other in (None, "bob"):
        for write in (False, True):
            with pytest.raises(Forbidden):
                await open_owned(memory_store, session_id, other, NOW + 20, write=write)
    kept = await memory_store.get_session(session_id)
    assert kept is not None and (kept.user_id, kept.last_seen) == ("alice", NOW + 10)
    mine = await open_owned(memory_store, session_id, "alice", NOW + 30, write=False)
    assert mine is not None and mine.user_id == "alice"


async def test_an_anonymous_write_open_keeps_the_session_anonymous(memory_store: Store) -> None:
    session_id = await stored(memory_store, None)
    record = await open_owned(memory_store, session_id, None, NOW + 10, write=True)
    assert record is not None and (record.user_id, record.last_seen) == (None, NOW + 10)


async def test_a_claim_by_another_user_between_read_and_write_is_refused(
    memory_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read finds the session anonymous; bob's open, on another process sharing the
    # store, claims it before alice's write open: the owner check after it refuses her.
    read = memory_store.get_session

    async def read_then_bob_claims(session_id: str) -> SessionRecord | None:
        found = await read(session_id)
        await memory_store.open_session(session_id, "bob", NOW + 1)
        return found

    monkeypatch.setattr(memory_store, "get_session", read_then_bob_claims)
    for user_id in ("alice", None):
        session_id = await stored(memory_store, None)
        with pytest.raises(Forbidden):
            await open_owned(memory_store, session_id, user_id, NOW + 2, write=True)
        assert (await read(session_id)).user_id == "bob"  # type: ignore[union-attr]
