"""The benchmark matrix's own logic (bench/matrix.py, bench/traffic.py): traffic shapes
draw what they name, bursts keep the mean rate, and each cell's store state is what
the cell says, built through the real store API into a fresh embedded store."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import matrix  # noqa: E402
import traffic  # noqa: E402
from liverec.store import open_store  # noqa: E402
from liverec.store.base import StoreLimits  # noqa: E402

from .servers import free_port  # noqa: E402

IDS = [f"item-{i}" for i in range(100)]


def test_shapes_draw_what_they_name() -> None:
    catalog = traffic.Catalog(len(IDS), 1.0, seed=1)
    hot = traffic.walker("hot", IDS, catalog, random.Random(1), "a")
    views = Counter(hot() for _ in range(10_000))
    assert 0.48 < views[IDS[0]] / 10_000 < 0.53  # 50% plus its uniform share
    unseen = traffic.walker("unseen", IDS, catalog, random.Random(1), "a")
    other = traffic.walker("unseen", IDS, catalog, random.Random(1), "b")
    drawn = [unseen() for _ in range(1000)] + [other() for _ in range(1000)]
    assert len(set(drawn)) == 2000 and not set(drawn) & set(IDS)
    uniform = traffic.walker("uniform", IDS, catalog, random.Random(1), "a")
    assert len({uniform() for _ in range(5000)}) == len(IDS)
    structured = traffic.walker("structured", IDS, catalog, random.Random(1), "a")
    steps = [structured() for _ in range(5000)]
    follows = sum(
        int(b.split("-")[1]) in catalog.related[int(a.split("-")[1])]
        for a, b in itertools.pairwise(steps)
    )
    assert follows / len(steps) > 0.45  # half of the steps go to a related item


def test_bursts_keep_the_mean_rate_and_burst_tenfold() -> None:
    rnd, due, sends = random.Random(3), 0.0, []
    while due < 1000.0:  # one socket, mean interval 1 s, 100 burst periods
        sends.append(due)
        due = traffic.next_due(due, 1.0, rnd, matrix.BURST)
    assert 950 < len(sends) < 1050
    _, on_s, period_s = matrix.BURST
    inside = sum(t % period_s < on_s for t in sends)
    rate_in, rate_out = inside / (100 * on_s), (len(sends) - inside) / (100 * (period_s - on_s))
    assert 8 < rate_in / rate_out < 12


async def test_state_is_built_as_the_cell_names_it(tmp_path: Path) -> None:
    ids = [f"item-{i}" for i in range(matrix.ITEMS)]
    cell = matrix.Cell("t", catalog="half", catalog_size=8000, out_of_stock=0.9, log_events=2500)
    url = f"embedded://{tmp_path}/bench.db"
    note = await matrix.build_state(cell, url, ids, seed=1)
    assert "catalog 8000 items" in note and "log 2500 events" in note
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        _, items = await store.all_items()
        assert len(items) == 8000
        assert sum(i in items for i in ids) == matrix.ITEMS // 2
        out = sum(not item["in_stock"] for item in items.values()) / len(items)
        assert 0.88 < out < 0.92
        assert await store.count_events() == 2500
        logged = {e.event.item_id for e in await store.read_tail(2500)}
        assert logged <= set(ids)
    finally:
        await store.close()


async def test_a_fresh_cell_writes_nothing(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/bench.db"
    assert await matrix.build_state(matrix.Cell("default"), url, IDS, seed=1) == "fresh"
    store = open_store(url, StoreLimits())
    await store.open()
    try:
        assert await store.count_events() == 0 and await store.catalog_version() == 0
    finally:
        await store.close()


def test_several_load_generators_merge_into_one_distribution(tmp_path: Path) -> None:
    import load

    files = []
    for j, values in enumerate(([1.0, 2.0, 3.0], [10.0, 20.0])):
        files.append(tmp_path / f"{j}.json")
        files[-1].write_text(str(values))
    part = {
        "events_sent_window": 3, "events_sent_total": 4, "events_per_s": 1.0, "recs_per_s": 1.0,
        "lost": 0, "superseded": 0, "acks": 3, "closed_early": 0, "client_cpu_s": 0.1,
        "errors": {"rate_limited": 1}, "send_lag_p99_ms": 1.0,
    }  # fmt: skip
    merged = load.merge_results([part, {**part, "lost": 1}], files)
    assert merged["lost"] == 1 and merged["errors"] == {"rate_limited": 2}
    assert merged["p50_ms"] == 10.0 and merged["max_ms"] == float("inf")
    assert merged["events_sent_window"] == 6 and merged["clients"] == 2


def test_profile_charges_each_sample_to_the_innermost_liverec_function(tmp_path: Path) -> None:
    raw = tmp_path / "cell.txt"
    raw.write_text(
        "main (liverec/cli.py:1);serve (liverec/sessions.py:9);pick (liverec/online.py:4);"
        "nlargest (heapq.py:500) 6\n"
        "main (liverec/cli.py:1);serve (liverec/sessions.py:9);pick (liverec/online.py:7) 2\n"
        "main (liverec/cli.py:1);serve (liverec/sessions.py:12) 1\n"
        "_run_once (asyncio/base_events.py:1922);select (selectors.py:468) 1\n"
    )
    assert matrix.top_frames(raw) == [
        ("pick (liverec/online.py)", 0.8),
        ("serve (liverec/sessions.py)", 0.1),
        ("select (selectors.py)", 0.1),
    ]


def test_a_cell_is_done_by_issue_14s_limits_against_the_floor() -> None:
    echo = {"p99_ms": 3.0, "server_cpu_ms_per_event": 0.2, "kib_per_idle_socket": 25.0}
    fast = {
        "p50_ms": 1.0, "p99_ms": 8.9, "max_ms": 20.0, "server_cpu_ms_per_event": 0.39,
        "lost": 0, "events_per_s": 1000.0, "kib_per_idle_socket": 30.0,
        "server_runq_wait_share": 0.1,
    }  # fmt: skip
    cell = matrix.Cell("default")
    row = matrix.row(cell, fast, echo, "fresh")
    assert row["done"] and row["p99_vs_echo"] == 8.9 / 3.0
    assert not matrix.row(cell, {**fast, "p99_ms": 9.1}, echo, "fresh")["done"]  # > 3x floor
    assert not matrix.row(cell, {**fast, "server_cpu_ms_per_event": 0.41}, echo, "")["done"]
    lost = matrix.row(cell, {**fast, "lost": 1, "p99_ms": float("inf")}, echo, "fresh")
    assert not lost["done"] and lost["p99_vs_echo"] == float("inf")
    crowd = matrix.Cell("5k", load="5k")  # 25 ms, 3x the floor; CPU not judged
    busy = {**fast, "p99_ms": 24.0, "server_cpu_ms_per_event": 1.0}
    assert matrix.row(crowd, busy, {**echo, "p99_ms": 9.0}, "")["done"]
    assert not matrix.row(crowd, busy, {**echo, "p99_ms": 11.0}, "")["floor_ok"]
    idle = matrix.Cell("idle", load="idle10k")
    assert not matrix.row(idle, fast, echo, "fresh")["done"]  # 30 KiB > the floor's 25
    assert matrix.row(idle, {**fast, "kib_per_idle_socket": 25.0}, echo, "fresh")["done"]


def test_the_node_client_reads_the_python_clients_schedule(tmp_path: Path) -> None:
    import load

    cfg = {"sockets": 7, "rate": 14.0, "warmup": 1.0, "duration": 2.0, "items": 50,
           "zipf": 1.0, "seed": 3, "warm_events": 5, "traffic": "structured",
           "burst": list(matrix.BURST), "tag": "1-"}  # fmt: skip
    load.write_schedule(cfg, tmp_path / "s.json")
    plan = json.loads((tmp_path / "s.json").read_text())
    catalog = load.traffic_catalog(cfg)
    assert plan["warm"] == traffic.warm_items(catalog, 3, 5)
    assert [e[0] for e in plan["events"]] == sorted(e[0] for e in plan["events"])
    for i in range(7):  # each socket's sends, numbered from 0, as the Python client's
        mine = [(k, [at, item]) for at, s, k, item in plan["events"] if s == i]
        sends = traffic.schedule("structured", catalog, 3, i, "1-", 0.5, 3.0, matrix.BURST)
        assert mine == [(k, [at, item]) for k, (at, item) in enumerate(sends)]
    # 14 events/s on average, but the run starts with a burst: 10x the base rate of
    # 14 * 10 / 28 events/s for 2 s, then the base rate for 1 s: about 105 events
    assert 85 < len(plan["events"]) < 125


@pytest.mark.parametrize("client", ["python", "node"])
def test_each_load_client_drives_the_echo_floor_to_the_same_counts(client: str) -> None:
    import load

    if client == "node" and (
        shutil.which("node") is None or not (BENCH / "node_modules" / "ws").is_dir()
    ):
        pytest.skip("node or bench/node_modules (npm ci --prefix bench) missing")
    procs = load.Procs()
    port = free_port()
    try:
        server = procs.start(load.server_cmd("echo", port, "memory://", []))
        load.wait_healthy(server, port)
        cfg = {"url": f"ws://127.0.0.1:{port}/v1/ws", "sockets": 20, "rate": 40.0,
               "warmup": 0.5, "duration": 2.0, "drain": 10.0, "items": 100, "zipf": 1.0,
               "seed": 1, "warm_events": 10, "client": client}  # fmt: skip
        res = load.drive(procs, server.pid, port, load.split(cfg, 2), False, 0.1)
    finally:
        procs.stop_all()
    assert res["sockets"] == 20 and res["clients"] == 2
    assert res["lost"] == 0 and res["errors"] == {} and res["closed_early"] == 0
    # every event of the run was acked, and every one of the window has a latency
    assert res["acks"] == res["events_sent_total"] > res["events_sent_window"] > 40
    assert 0 < res["p50_ms"] <= res["p99_ms"] <= res["max_ms"] < 10_000


def test_the_5k_cell_takes_one_node_client_or_four_python_ones() -> None:
    import argparse

    args = argparse.Namespace(
        clients=None, client="node", warmup=1.0, duration=2.0, drain=1.0, seed=1
    )
    cell = matrix.Cell("5k", load="5k")
    (node,) = matrix.client_cfgs(cell, 80, args, IDS)
    assert node["client"] == "node" and node["sockets"] == 5000 and node["rate"] == 2000.0
    python = matrix.client_cfgs(
        cell, 80, argparse.Namespace(**{**vars(args), "client": "python"}), IDS
    )
    assert [c["sockets"] for c in python] == [1250] * 4 and {c["client"] for c in python} == {
        "python"
    }
    three = matrix.client_cfgs(cell, 80, argparse.Namespace(**{**vars(args), "clients": 3}), IDS)
    assert sum(c["sockets"] for c in three) == 5000 and sum(c["rate"] for c in three) == 2000.0
