"""A promotion into the models/ registry reaches every serving process through the
store's pub/sub (liverec.notify), not at the next poll: two `liverec serve` on one
private redis-server, `liverec learn --once` promoting a second version, then
`liverec models rollback --store` going back to the first."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main

from .servers import LiverecServer
from .test_learn import NEW, OLD, walks
from .test_learn_cli import learn_once, record
from .wsclient import Client

DEADLINE_S = 90.0  # far below model_poll_s below: only a notice can make it


async def served_model(server: LiverecServer, wanted: str) -> str:
    """The model of the recs one shopper gets, once it is `wanted` or the deadline passed
    (a new version's scoring worker starts torch: slow on a busy machine)."""
    async with await Client.open(server.ws_url) as shopper:
        await shopper.hello(k=5)
        deadline = time.monotonic() + DEADLINE_S
        for n in itertools.count():
            _, recs = await shopper.event("f1-2", id=f"m{n}")
            if recs["model"] == wanted or time.monotonic() > deadline:
                return str(recs["model"])
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def test_a_promotion_by_the_learner_is_served_by_every_process(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    await record(redis_url, walks(400, OLD, seed=1, t0=1000.0))
    first = await asyncio.to_thread(learn_once, redis_url, models, capsys)
    assert first["decision"] == "promoted"
    settings = {"model_path": str(models), "model_poll_s": 3600, "warm_events": 0}
    a = LiverecServer(redis_url, **settings).start(timeout=90)
    b = LiverecServer(redis_url, **settings).start(timeout=90)
    try:
        for server in (a, b):
            assert await served_model(server, str(first["version"])) == first["version"]
        await record(redis_url, walks(400, OLD + NEW, seed=2, t0=9000.0))
        second = await asyncio.to_thread(learn_once, redis_url, models, capsys)
        assert second["decision"] == "promoted", second["reason"]
        for server in (a, b):
            assert await served_model(server, str(second["version"])) == second["version"], (
                server.log()
            )
        # an operator's rollback, announced on the same store: back to the first at once
        args = ["models", "rollback", "--models", str(models), "--store", redis_url]
        assert await asyncio.to_thread(liverec_main, args) == 0
        for server in (a, b):
            assert await served_model(server, str(first["version"])) == first["version"], (
                server.log()
            )
    finally:
        a.stop()
        b.stop()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()
