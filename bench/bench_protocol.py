"""Benchmark of the frame decoder: microseconds per client frame, by frame kind and encoding.

Owns: a fixed set of typical client frames (an event with and without ts, a rate
event, a GA4 alias, a hello, a ping, a feedback), each decoded N times by
`protocol.decode`, beside a baseline from the same run: the bare parse of the same
bytes (`json.loads` / `msgpack.unpackb`) with no validation. The difference is what
the field rules cost. Nothing is asserted; read the numbers.

    nice -n 10 .venv/bin/python bench/bench_protocol.py               # 200k decodes per row
    nice -n 10 .venv/bin/python bench/bench_protocol.py --n 50000 --repeat 5
    --src DIR runs another source tree's decoder (an A/B run of a change)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
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


def best_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best of `repeat` timings of `n` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="decodes per timing")
    parser.add_argument("--repeat", type=int, default=3, help="timings per row (best kept)")
    parser.add_argument("--src", help="decode with this source tree's liverec")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import msgpack

    from liverec import protocol

    limits = protocol.Limits()
    print(f"liverec from {protocol.__file__}")
    print(f"{'frame':<10} {'enc':<8} {'parse µs':>9} {'decode µs':>10} {'rules µs':>9}")
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

            def decode(data: str | bytes = data) -> object:
                return protocol.decode(data, limits)

            base = best_us(parse, args.n, args.repeat)
            full = best_us(decode, args.n, args.repeat)
            print(f"{name:<10} {encoding:<8} {base:>9.2f} {full:>10.2f} {full - base:>9.2f}")


if __name__ == "__main__":
    main()
