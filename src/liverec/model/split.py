"""Train/test splits for offline evaluation.

Owns: the temporal split of the GRU4Rec papers (`time_split`), the file-order split
for data without timestamps (`last_fraction`), and the cleaning both share: the
training set keeps sessions of at least `min_length` events; test events whose
item never occurs in the (cleaned) training set are dropped, then test sessions
shorter than 2 events (nothing left to predict).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .data import DataError, Sessions

DAY_S = 86400.0


def time_split(
    sessions: Sessions,
    days: float = 1.0,
    min_length: int = 2,
    by: Literal["start", "end"] = "start",
) -> tuple[Sessions, Sessions]:
    """Sessions that start (`by="start"`) in the last `days` days before the latest
    event form the test set, the others the training set.

    session-rec and the GRU4Rec preprocessing scripts decide by a session's last
    event instead (`by="end"`); on clickstream data both give nearly the same split.
    Raises `DataError` when the data has no timestamps (use `last_fraction`)."""
    if days <= 0:
        raise DataError(f"days must be positive, got {days}")
    if not sessions.timed:
        raise DataError("the data has no timestamps: split by file order (last_fraction)")
    t = sessions.start_times() if by == "start" else sessions.end_times()
    boundary = float(np.max(sessions.times)) - days * DAY_S
    is_test = t >= boundary
    return clean(sessions.select(~is_test), sessions.select(is_test), min_length)


def last_fraction(
    sessions: Sessions, fraction: float = 0.1, min_length: int = 2
) -> tuple[Sessions, Sessions]:
    """The last `fraction` of the sessions (in their stored order) is the test set."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    n_test = round(sessions.n_sessions * fraction)
    is_test = np.zeros(sessions.n_sessions, dtype=bool)
    if n_test:
        is_test[-n_test:] = True
    return clean(sessions.select(~is_test), sessions.select(is_test), min_length)


def clean(train: Sessions, test: Sessions, min_length: int = 2) -> tuple[Sessions, Sessions]:
    """Drop short training sessions, then unseen test items and short test sessions."""
    train = train.select(train.lengths() >= min_length)
    known = np.isin(test.items, np.unique(train.items))
    return train, test.filter_events(known, min_length=2)
