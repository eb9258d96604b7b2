"""`liverec learn --once`, `liverec models list|show|rollback`, and a server that learns
by itself (`learn_in_serve`): the served model changes under an open socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main
from liverec.learn.registry import Registry
from liverec.store import StoreLimits, open_store
from liverec.types import Event

from .servers import LiverecServer
from .test_learn import NEW, OLD, walks
from .wsclient import Client

# the tiny training parameters of tests/test_learn.py, as `--learn-set` overrides
TINY = (
    "model.layers=24,model.dropout_p_embed=0,model.dropout_p_hidden=0,loss=cross-entropy,"
    "n_sample=8,batch_size=16,learning_rate=0.1,momentum=0"
)
LEARN_FLAGS = [
    "--learn-set",
    TINY,
    "--learn-epochs",
    "4",
    "--learn-min-holdout-cases",
    "20",
    "--learn-holdout-fraction",
    "0.15",
]


async def record(url: str, events: list[Event]) -> None:
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        await store.record_events(events)
    finally:
        await store.close()


def learn_once(url: str, models: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert (
        liverec_main(["learn", "--once", "--store", url, "--models", str(models), *LEARN_FLAGS])
        == 0
    )
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_learn_once_then_list_show_and_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, models = f"embedded://{tmp_path}/live.db", tmp_path / "models"
    asyncio.run(record(url, walks(400, OLD, seed=1, t0=1000.0)))
    first = learn_once(url, models, capsys)
    assert first["decision"] == "promoted" and str(first["reason"]).startswith("first model")
    asyncio.run(record(url, walks(400, OLD + NEW, seed=2, t0=9000.0)))
    second = learn_once(url, models, capsys)  # the restarted learner resumes its window
    assert second["decision"] == "promoted", second["reason"]
    v1, v2 = str(first["version"]), str(second["version"])

    assert liverec_main(["models", "list", "--models", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["version", "status", "mode"]
    assert lines[1].split()[:3] == [v1, "promoted", "initial"]
    assert lines[2].split()[:4] == ["*", v2, "promoted", "finetune"]

    assert liverec_main(["models", "rollback", "--models", str(models), "--reason", "bad CTR"]) == 0
    assert capsys.readouterr().out.strip() == f"serving {v1} (was {v2})"
    assert Registry(models).current() == v1
    assert liverec_main(["models", "show", v2, "--models", str(models)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "rolled-back" and shown["reason"] == f"bad CTR (to {v1})"
    assert shown["current"] is False and shown["parent"] == v1 and shown["new_items"] == 16
    assert liverec_main(["models", "list", "--json", "--models", str(models)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["current"]) for r in listed] == [(v1, True), (v2, False)]
    # nothing left to roll back to: an error, not a traceback
    assert liverec_main(["models", "rollback", "--models", str(models)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err


async def test_server_with_the_learner_inside_switches_models_under_open_sockets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, models = f"embedded://{tmp_path}/live.db", tmp_path / "models"
    await record(url, walks(400, OLD, seed=1, t0=1000.0))
    first = await asyncio.to_thread(learn_once, url, models, capsys)  # bootstrap
    # shoppers of a new product line, to be sent through the HTTP API
    events = walks(150, NEW, seed=7, t0=0.0)
    server = LiverecServer(
        url,
        model_path=str(models),
        model_poll_s=0.05,
        learn_in_serve="true",
        learn_min_events=len(events),  # one round, once all have arrived
        learn_interval_s="none",
        learn_poll_s=0.05,
        learn_set=TINY,
        learn_epochs=4,
        learn_min_holdout_cases=10,
        learn_holdout_fraction=0.05,  # 28 of 550 sessions: only new ones, and most new
        # ones are in the training part
        address_events_per_s=1e6,
        address_events_burst=100_000,
    ).start()
    try:
        async with await Client.open(server.ws_url) as watcher:
            welcome, _ = await watcher.hello(k=5)
            assert welcome["model"] == first["version"]
            by_session: dict[str, list[dict[str, object]]] = {}
            for e in events:
                frame = {"id": e.id, "action": "view", "item_id": e.item_id}
                by_session.setdefault(e.session_id, []).append(frame)
            for frames in by_session.values():  # one new session each (the server names it)
                status, body = server.post_json("/v1/events", {"events": frames})
                assert status == 200, body
            registry = Registry(models)
            deadline = time.monotonic() + 180  # a training round on a busy machine
            for _ in itertools.count():
                if registry.current() != first["version"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            second = registry.current()
            assert second != first["version"], server.log()
            assert registry.get(second or "").new_items == 16
            # the socket opened before the promotion is still served, by the new model (once
            # loaded: its scoring worker imports torch, slow on a busy machine)
            deadline = time.monotonic() + 120
            for n in itertools.count():
                _, recs = await watcher.event("n0-1", id=f"w{n}")
                if recs["model"] == second or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert recs["model"] == second
            assert "n0-2" in [r["item_id"] for r in recs["items"]]
    finally:
        server.stop()
    assert "Traceback" not in server.log() and "ERROR" not in server.log(), server.log()
