"""`liverec export-events` writes the event log so that the model loaders read it back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liverec.cli import main as liverec_main
from liverec.model.formats import load_sessions
from liverec.store import StoreLimits, open_store
from liverec.types import Event


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_export_then_load_sessions(tmp_path: Path, suffix: str) -> None:
    url = f"embedded://{tmp_path}/x.db"

    async def fill() -> None:
        store = open_store(url, StoreLimits())
        await store.open()
        for s in range(3):
            for j in range(4):
                await store.record_event(
                    Event(f"e{j}", f"s{s}", "view", f"i{s}-{j}", 1_700_000_000.0 + 10 * s + j)
                )
        await store.record_event(
            Event("r", "s0", "rate", "i0-0", 1_700_000_100.0, user_id="u1", rating=4.0)
        )
        await store.close()

    asyncio.run(fill())
    out = tmp_path / f"events{suffix}"
    assert liverec_main(["export-events", "--store", url, "--out", str(out)]) == 0
    sessions = load_sessions(out, fmt="liverec")
    assert sessions.n_sessions == 3 and sessions.n_events == 13
    assert sessions.session(1).tolist() == ["i1-0", "i1-1", "i1-2", "i1-3"]
    assert load_sessions(out).n_events == 13  # auto-detected
