"""Session-parallel mini-batches for GRU4Rec training.

Owns: turning sessions (CSR offsets over encoded items) into a stream of
mini-batches. Each of `batch_size` slots runs one session at a time and yields one
(input, target) pair per step: an event and the next event of the same session.
When a slot's session has no pair left, the next unused session takes the slot and
that row is flagged `new` exactly once, on its first step, so the trainer zeroes
only that slot's hidden state (Hidasi et al., ICLR 2016, section 3.1.1).

Every pair of every session of length >= 2 is yielded exactly once; no pair ever
crosses two sessions. When no session is left to fill a slot, the slot goes idle and
the batches shrink (`slots` names the active ones) until every session is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Batch:
    """One step: row r is slot slots[r] consuming inputs[r] and predicting targets[r]."""

    slots: np.ndarray  # (n,) int64 active slot ids, increasing
    inputs: np.ndarray  # (n,) int64 item indices consumed now
    targets: np.ndarray  # (n,) int64 the next item of the same session
    new: np.ndarray  # (n,) bool: the slot starts a new session with this input
    full: bool  # every slot active (slots == arange(batch_size))


def session_parallel_batches(
    offsets: np.ndarray,
    items: np.ndarray,
    batch_size: int,
    order: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Yield session-parallel batches.

    offsets: (S+1,) CSR offsets; items: (N,) int64 encoded items.
    order: session indices in the order they enter slots (default 0..S-1); sessions
    with fewer than 2 events have no pair and are skipped.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    offsets = np.asarray(offsets, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if order is None:
        order = np.arange(len(offsets) - 1, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    order = order[(offsets[order + 1] - offsets[order]) >= 2]
    starts, ends = offsets[order], offsets[order + 1]  # (S',) per queued session
    n_queue = len(order)
    n_slots = min(batch_size, n_queue)
    if n_slots == 0:
        return
    # per-slot cursor: the index of the event consumed next and its session's end
    pos = starts[:n_slots].copy()  # (n_slots,)
    end = ends[:n_slots].copy()  # (n_slots,)
    new = np.ones(n_slots, dtype=bool)
    active = np.ones(n_slots, dtype=bool)
    next_session = n_slots
    all_slots = np.arange(n_slots, dtype=np.int64)
    full = n_slots == batch_size
    while True:
        if full:
            yield Batch(all_slots, items[pos], items[pos + 1], new, True)
        else:
            idx = np.flatnonzero(active)
            p = pos[idx]
            yield Batch(idx, items[p], items[p + 1], new[idx], False)
        pos += 1
        done = np.flatnonzero(active & (pos + 1 >= end))  # no pair left in this session
        new = np.zeros(n_slots, dtype=bool)
        if len(done):
            k = min(len(done), n_queue - next_session)
            if k:
                fill = done[:k]
                pos[fill] = starts[next_session : next_session + k]
                end[fill] = ends[next_session : next_session + k]
                new[fill] = True
                next_session += k
            if k < len(done):
                active[done[k:]] = False
                full = False
                if not active.any():
                    return
