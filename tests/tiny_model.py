"""The tiny GRU4Rec the model tests train: synthetic chain sessions and a small config.

Trains in about a second on one thread; the served lists on it are checked against
exact scoring (tests/test_gru_serving.py), so it stays deterministic per seed.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from liverec.model.config import TrainConfig
from liverec.model.data import Sessions
from liverec.model.gru4rec import GRU4RecConfig


def synthetic_sessions(n_sessions: int = 400, seed: int = 0) -> Sessions:
    """Sessions that walk chains c0 -> c1 -> ... of 8 related items in 6 families."""
    rng = random.Random(seed)
    sessions = []
    for _ in range(n_sessions):
        fam = rng.randrange(6)
        start = rng.randrange(4)
        length = rng.randint(2, 5)
        sessions.append([f"f{fam}-{(start + j) % 8}" for j in range(length)])
    return Sessions.from_lists(sessions)


def walks(n: int, seed: int) -> Sessions:
    """Walks over 20 families of 10 items with noise and repeats: 200 items (the
    replay tests' data: long enough sessions for Recall@20 to mean something)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        fam, pos = rng.randrange(20), rng.randrange(10)
        walk = []
        for _ in range(rng.randint(2, 7)):
            walk.append(f"i{fam}-{pos}")
            r = rng.random()
            pos = (pos + (1 if r < 0.6 else 2 if r < 0.8 else 0)) % 10
            if rng.random() < 0.1:
                fam = rng.randrange(20)
        out.append(walk)
    return Sessions.from_lists(out)


# The replay tests' GRU: 32 units, 3 epochs on `walks(1500, 1)`.
REPLAY_CONFIG = TrainConfig(
    model=GRU4RecConfig(layers=(32,), dropout_p_embed=0.0, dropout_p_hidden=0.1),
    loss="cross-entropy",
    n_sample=32,
    batch_size=32,
    n_epochs=3,
    learning_rate=0.1,
    momentum=0.0,
    threads=1,
)


def tiny_config(seed: int = 1, **changes: Any) -> TrainConfig:
    """24 units, cross-entropy, 4 epochs, one thread; `changes` replace fields."""
    config = TrainConfig(
        model=GRU4RecConfig(layers=(24,), dropout_p_embed=0.0, dropout_p_hidden=0.0),
        loss="cross-entropy",
        n_sample=8,
        batch_size=16,
        n_epochs=4,
        learning_rate=0.1,
        momentum=0.0,
        seed=seed,
        threads=1,
    )
    return dataclasses.replace(config, **changes)


def train_tiny(out_dir: Path, seed: int = 1, data_seed: int = 0) -> Path:
    """A tiny checkpoint trained on `synthetic_sessions(seed=data_seed)`, saved in out_dir."""
    from liverec.model.train import train

    train(synthetic_sessions(seed=data_seed), tiny_config(seed), out_dir=out_dir, progress=False)
    return out_dir
