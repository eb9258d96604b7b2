"""Benchmark of the frame decoder: microseconds per client frame, by frame kind and encoding.

Owns: a fixed set of typical client frames (an event with and without ts, a rate
event, a GA4 alias, a hello, a ping, a feedback), each decoded N times by
`protocol.decode`, beside a baseline from the same run: the bare parse of the same
bytes (`json.loads` / `msgpack.unpackb`) with no validation. The difference is what
the field rules cost. With `--baseline-src DIR` a second decoder (another source
tree's, e.g. the main branch's) is timed in the same process, interleaved with this
one row by row, so a busy machine slows both alike. Nothing is asserted.

    nice -n 10 .venv/bin/python bench/bench_protocol.py               # 200k decodes per row
    git archive main src | tar -x -C /tmp/main      # then, this tree against main's:
    nice -n 10 .venv/bin/python bench/bench_protocol.py --baseline-src /tmp/main/src

On a busy shared machine wall-clock rows move by tens of percent between runs;
`--loop FRAME:ENC:N` only decodes that frame N times (no output), for an instruction
count under valgrind, which load does not change (subtract a run with N=0):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/bench_protocol.py --loop event:json:5000   # "Collected : ..."
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FRAMES: dict[str, dict[str, Any]] = {
    "event": {"type": "event", "id": "ev-1042", "action": "view", "item_id": "sku-18233"},
    "event+ts": {
        "type": "event",
        "id": "ev-1043",
        "action": "add_to_cart",
        "item_id": "sku-18233",
        "ts": 1767225600.25,
    },
    "rate": {"type": "event", "id": "ev-7", "action": "rate", "item_id": "sku-9", "rating": 4},
    "ga4": {"type": "event", "id": "ev-8", "action": "view_item", "item_id": "sku-9"},
    "hello": {"type": "hello", "k": 8, "placement": "product-page"},
    "ping": {"type": "ping"},
    "feedback": {"type": "feedback", "kind": "click", "recs_id": "r5", "item_id": "sku-9"},
}


def best_us(fn: Callable[[], object], n: int) -> float:
    """One timing of `n` calls, in microseconds per call."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def load_other(src: str) -> Any:
    """Another tree's liverec.protocol, imported as the package `liverec_baseline`
    (the codec's imports are relative, so it resolves within that tree)."""
    package = Path(src) / "liverec"
    spec = importlib.util.spec_from_file_location(
        "liverec_baseline", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["liverec_baseline"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("liverec_baseline.protocol")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="decodes per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per row (best kept)")
    parser.add_argument("--baseline-src", help="also time this source tree's decoder")
    parser.add_argument("--loop", help="FRAME:ENC:N: only decode that frame N times")
    args = parser.parse_args()
    import msgpack

    from liverec import protocol

    if args.loop:
        name, encoding, count = args.loop.split(":")
        frame = FRAMES[name]
        raw = json.dumps(frame, separators=(",", ":")) if encoding == "json" else None
        loop_data = raw if raw is not None else msgpack.packb(frame, use_bin_type=True)
        loop_limits = protocol.Limits()
        for _ in range(int(count)):
            protocol.decode(loop_data, loop_limits)
        return

    decoders = {"this": (protocol, protocol.Limits())}
    if args.baseline_src:
        other = load_other(args.baseline_src)
        decoders["baseline"] = (other, other.Limits())
    print(f"this: {protocol.__file__}; baseline: {args.baseline_src or '-'}")
    names = "".join(f" {name + ' µs':>12}" for name in decoders)
    print(f"{'frame':<10} {'enc':<8} {'parse µs':>9}{names}")
    for name, frame in FRAMES.items():
        for encoding in ("json", "msgpack"):
            data: str | bytes
            if encoding == "json":
                data = json.dumps(frame, separators=(",", ":"))
                text = data

                def parse(text: str = text) -> object:
                    return json.loads(text)
            else:
                data = msgpack.packb(frame, use_bin_type=True)
                packed = data

                def parse(packed: bytes = packed) -> object:
                    return msgpack.unpackb(packed, raw=False, strict_map_key=True)

            best = {key: float("inf") for key in ("parse", *decoders)}
            for _ in range(args.repeat):  # interleaved: one timing of each per round
                best["parse"] = min(best["parse"], best_us(parse, args.n))
                for key, (module, limits) in decoders.items():

                    def decode(
                        data: str | bytes = data, m: Any = module, lim: Any = limits
                    ) -> object:
                        return m.decode(data, lim)

                    best[key] = min(best[key], best_us(decode, args.n))
            row = "".join(f" {best[key]:>12.2f}" for key in decoders)
            print(f"{name:<10} {encoding:<8} {best['parse']:>9.2f}{row}")


if __name__ == "__main__":
    main()
