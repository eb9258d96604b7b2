"""Offline next-item evaluation, session-parallel, as in the GRU4Rec papers.

Owns: the model-facing `StepScorer` protocol (GRU4Rec and every baseline implement
it), the serving rule shared with the server (`mask_served`), the rank and metric
computation (`ranks`, `evaluate`) and the terminal table (`format_table`).

Protocol, made explicit here because third-party versions get it wrong:
- Test items are encoded with the model's `ItemIndex`; events whose item the model
  does not know are removed, then sessions shorter than 2 events.
- Each test session starts from a cleared state (`new=True` on its first event) and
  every event after its first is a target: the scorer consumes event t and ranks
  the item of event t+1. Each session is evaluated once, in slots of a batch of
  `batch_size` sessions that run in parallel; a finished session's slot is handed
  to the next session (only that slot is reset).
- The target is ranked against ALL `n_items` items. Ties count against the target
  (the reference implementation's "conservative" mode): the 0-based rank is the
  number of items scoring strictly higher plus the number of OTHER items scoring
  exactly the same, i.e. `count(score >= target score) - 1`. A NaN target score
  ranks last.
- A target is a hit at K when rank < K (0-based; ranks 0..K-1 are the K slots of a
  list of K). MRR@K adds 1/(rank+1) for a hit and 0 otherwise. Recall@K and MRR@K
  are averaged over all targets (events), not over sessions.
- Coverage@K: distinct items appearing in any top-K list / n_items.
- `serving_rules=True` first applies the rule the server applies to every list
  (`mask_served`): the item just consumed is never recommended, so a repeated
  click cannot be a hit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from ..errors import ModelError
from .data import ItemIndex, Sessions, encode


class StepScorer(Protocol):
    name: str
    n_items: int  # scores cover item indices 0..n_items-1 of the ItemIndex used

    def reset(self, n_slots: int) -> None:
        """Clear all state; slots 0..n_slots-1 will be used."""
        ...

    def step(self, slots: np.ndarray, items: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Consume one item per slot and score the next item of each.

        slots: (n,) int64 slot ids; items: (n,) int64 item indices consumed now;
        new: (n,) bool, True where the slot starts a new session with this item
        (its state is cleared first). Returns (n, n_items) float32 scores."""
        ...


def mask_served(
    scores: np.ndarray, current: np.ndarray | int, exclude: Collection[int] = ()
) -> np.ndarray:
    """Set to -inf, in place, the items a served list may never hold: the current
    item (the one just consumed) and the items of `exclude` (e.g. purchases).

    `scores` is one row (n_items,) with an int `current`, or a batch (n, n_items)
    with `current` (n,) and `exclude` applied to every row (mask a row view to give
    each row its own exclusions). Returns `scores`."""
    cur = np.asarray(current, dtype=np.int64)
    ex = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
    if scores.ndim == 1:
        scores[int(cur)] = -np.inf
        scores[ex] = -np.inf
    else:
        scores[np.arange(scores.shape[0]), cur] = -np.inf
        scores[:, ex] = -np.inf
    return scores


def ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) int64 pessimistic 0-based ranks of `targets` in `scores` (n, n_items)."""
    rows = np.arange(scores.shape[0])
    target = scores[rows, targets]
    r: np.ndarray = (scores >= target[:, None]).sum(axis=1).astype(np.int64) - 1
    r[np.isnan(target)] = scores.shape[1]
    return r


def evaluate(
    scorer: StepScorer,
    item_index: ItemIndex,
    test: Sessions,
    ks: Sequence[int] = (5, 10, 20),
    batch_size: int = 512,
    serving_rules: bool = False,
    progress: bool = False,
) -> dict[str, float | int]:
    """Recall@K, MRR@K and coverage@K for each K in `ks`, plus `cases` (targets),
    `sessions` and `seconds` (wall time). See the module docstring for the rules."""
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive, got {ks}")
    started = time.perf_counter()
    n_items = int(scorer.n_items)
    offsets, codes, _ = encode(test, item_index, min_length=2, n_items=n_items)
    n_sessions = len(offsets) - 1
    kmax = min(ks[-1], n_items)
    hits = np.zeros(len(ks), dtype=np.int64)
    rr = np.zeros(len(ks), dtype=np.float64)
    shown = [np.zeros(n_items, dtype=bool) for _ in ks]
    cases = 0

    n_slots = max(1, min(batch_size, n_sessions))
    scorer.reset(n_slots)
    pos = np.zeros(n_slots, dtype=np.int64)  # index in `codes` of each slot's input
    end = np.zeros(n_slots, dtype=np.int64)  # one past the slot's session's last event
    new = np.ones(n_slots, dtype=bool)
    first = min(n_slots, n_sessions)
    pos[:first], end[:first] = offsets[:first], offsets[1 : first + 1]
    active = np.zeros(n_slots, dtype=bool)
    active[:first] = True
    next_session = first
    last_report = started
    while active.any():
        slots = np.flatnonzero(active)
        inputs, targets = codes[pos[slots]], codes[pos[slots] + 1]
        scores = scorer.step(slots, inputs, new[slots].copy())
        if scores.shape != (len(slots), n_items):
            raise ModelError(
                f"{scorer.name}: step returned shape {scores.shape}, "
                f"expected {(len(slots), n_items)}"
            )
        if serving_rules:
            if not scores.flags.writeable:
                scores = scores.copy()
            mask_served(scores, inputs)
        r = ranks(scores, targets)
        for j, k in enumerate(ks):
            hit = r < k
            hits[j] += int(hit.sum())
            rr[j] += float((1.0 / (r[hit] + 1)).sum())
        top = _top(scores, kmax)
        for j, k in enumerate(ks):
            shown[j][top[:, : min(k, kmax)].ravel()] = True
        cases += len(slots)

        pos[slots] += 1
        new[slots] = False
        done = slots[pos[slots] + 1 >= end[slots]]
        take = min(len(done), n_sessions - next_session)
        if take:
            refill = done[:take]
            nxt = np.arange(next_session, next_session + take)
            pos[refill], end[refill], new[refill] = offsets[nxt], offsets[nxt + 1], True
            next_session += take
        active[done[take:]] = False
        if progress and time.perf_counter() - last_report > 5.0:
            last_report = time.perf_counter()
            print(
                f"{scorer.name}: {cases} cases, {next_session}/{n_sessions} sessions started",
                file=sys.stderr,
            )

    out: dict[str, float | int] = {}
    for j, k in enumerate(ks):
        out[f"recall@{k}"] = float(hits[j]) / cases if cases else 0.0
        out[f"mrr@{k}"] = float(rr[j]) / cases if cases else 0.0
    for j, k in enumerate(ks):
        out[f"coverage@{k}"] = float(shown[j].sum()) / n_items if n_items else 0.0
    out["cases"] = cases
    out["sessions"] = n_sessions
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of the k best scores of each row, best first."""
    arr = np.ascontiguousarray(scores, dtype=np.float32)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays
        arr = arr.copy()
    t = torch.from_numpy(arr)
    idx: np.ndarray = torch.topk(t, k, dim=1, sorted=True).indices.numpy()
    return idx


def format_table(results: Mapping[str, Mapping[str, object]]) -> str:
    """One row per model: its recall@K, mrr@K and coverage@K, cases and seconds."""
    if not results:
        return "(no results)"
    metrics: list[str] = []
    for res in results.values():
        metrics += [m for m in res if m.split("@")[0] in _METRICS and m not in metrics]
    head = ["model", *metrics, "cases", "seconds"]
    rows = [head]
    for name, res in results.items():
        row = [name]
        row += [f"{_num(res[m]):.4f}" if m in res else "-" for m in metrics]
        row += [str(res.get("cases", "-")), f"{_num(res.get('seconds', 0.0)):.1f}"]
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


_METRICS = ("recall", "mrr", "coverage")


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")
