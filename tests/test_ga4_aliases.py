"""GA4 e-commerce event names as actions, and the rating scale: the codec with plain
function calls, then one real server for what is recorded and answered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from liverec import protocol
from liverec.errors import ProtocolError
from liverec.types import ACTIONS

from .servers import LiverecServer
from .wsclient import Client

LIMITS = protocol.Limits()


def _event(action: str, **extra: object) -> protocol.EventMsg:
    msg = protocol.parse_event({"id": "e", "action": action, "item_id": "i", **extra}, LIMITS)
    return msg


@pytest.mark.parametrize(
    ("ga4", "ours"),
    [
        ("view_item", "view"),
        ("select_item", "click"),
        ("select_promotion", "click"),
        ("add_to_wishlist", "click"),
        ("add_to_cart", "add_to_cart"),
        ("remove_from_cart", "remove_from_cart"),
        ("purchase", "purchase"),
    ],
)
def test_ga4_names_map_to_our_actions(ga4: str, ours: str) -> None:
    msg = _event(ga4)
    assert (msg.action, msg.item_id, msg.ignored) == (ours, "i", False)


@pytest.mark.parametrize("ga4", ["view_item_list", "view_cart", "begin_checkout", "refund"])
def test_ga4_names_without_one_item_are_ignored(ga4: str) -> None:
    msg = protocol.parse_event({"id": "e", "action": ga4}, LIMITS)  # no item_id needed
    assert msg.ignored and msg.id == "e"


def test_every_alias_is_an_action_or_ignored_and_unknown_names_are_refused() -> None:
    assert all(target is None or target in ACTIONS for target in protocol.GA4_ALIASES.values())
    for action in ACTIONS:
        assert not _event(action, rating=3).ignored
    with pytest.raises(ProtocolError) as info:
        _event("login")
    assert info.value.code == "bad_action" and "GA4" in info.value.message


@pytest.mark.parametrize(("rating", "ok"), [(1, True), (5, True), (3.5, True), (0.5, False),
                                            (5.5, False), (1e6, False), (-1e6, False)])  # fmt: skip
def test_rating_scale(rating: float, ok: bool) -> None:
    if ok:
        assert _event("rate", rating=rating).rating == rating
    else:
        with pytest.raises(ProtocolError) as info:
            _event("rate", rating=rating)
        assert info.value.code == "bad_field" and info.value.ref == "e"


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer("memory://").start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_ga4_names_over_the_socket_and_http(server: LiverecServer) -> None:
    async with await Client.open(server.ws_url) as c:
        welcome, _ = await c.hello()
        sid = welcome["session_id"]
        await c.event("cam-1", "view_item")
        await c.send({"type": "event", "id": "bc", "action": "begin_checkout"})
        assert await c.recv() == {"type": "ack", "id": "bc", "ignored": True}
        await c.event("cam-1", "add_to_cart")  # its ack comes next: no recs for "bc"
    status, body = server.post_json(
        "/v1/events",
        {
            "session_id": sid,
            "events": [
                {"id": "h1", "action": "select_item", "item_id": "lens-2"},
                {"id": "h2", "action": "view_cart"},
            ],
        },
    )
    assert status == 200, body
    assert body["acked"] == ["h1", "h2"] and body["ignored"] == ["h2"]
    status, body = server.get_json(f"/v1/sessions/{sid}")
    assert status == 200 and body["items"] == ["cam-1", "cam-1", "lens-2"]
    metrics = server.get_text("/metrics")
    assert 'liverec_events_total{action="view"} 1' in metrics
    assert 'liverec_events_total{action="click"} 1' in metrics
