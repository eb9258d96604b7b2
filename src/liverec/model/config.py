"""GRU4Rec training parameters: `TrainConfig`, the named presets, and overrides.

Owns: `TrainConfig` (every hyperparameter, the network's included; defaults are the
official tuned Diginetica setting), its dict form stored in checkpoints, the named
presets, and `configure`, the one parser of "KEY=VALUE" overrides used by
`liverec train --set` and the learner's `learn_set`. No torch: checkpoints, training
and the learner all import this module, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .gru4rec import GRU4RecConfig

LOSSES = ("bpr-max", "cross-entropy")
OPTIMIZERS = ("adagrad", "adam")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """All hyperparameters. Defaults: the official tuned Diginetica parameters."""

    model: GRU4RecConfig = field(default_factory=GRU4RecConfig)
    loss: str = "bpr-max"  # "bpr-max" | "cross-entropy"
    elu_param: float = 1.0  # bpr-max scores go through ELU(alpha=elu_param); 0: linear
    bpreg: float = 0.9  # BPR-max score regularisation
    logq: float = 0.0  # cross-entropy popularity (logQ) correction weight
    n_sample: int = 2048  # shared extra negatives per mini-batch
    sample_alpha: float = 0.3  # negatives drawn with probability ~ support^alpha
    sample_chunk: int = 4096  # mini-batches of negatives drawn at once
    batch_size: int = 128
    n_epochs: int = 10
    optimizer: str = "adagrad"  # "adagrad" (with momentum) | "adam"
    learning_rate: float = 0.05
    momentum: float = 0.15  # adagrad only; 0 disables
    nesterov: bool = False  # classical momentum, as the reference; True: Nesterov's
    eps: float = 1e-6  # adagrad: g / sqrt(acc + eps); adam: added to sqrt(v)
    # Step on the mini-batch's loss / batch_size, as the reference, or on its sum.
    # Adagrad sees the scale only through eps: dividing by 128 shrinks the steps of
    # rarely updated rows (their g^2 sums stay near eps). On Diginetica this closed the
    # gap to the reference (docs/model-quality.md).
    batch_mean: bool = True
    shuffle: bool = False  # False: sessions enter slots in data order every epoch
    seed: int = 42
    threads: int = 0  # torch threads; 0: os.cpu_count()

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("batch_size", "n_epochs", "sample_chunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.n_sample < 0 or self.threads < 0:
            raise ValueError("n_sample and threads must be >= 0")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("need learning_rate > 0 and 0 <= momentum < 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"]["layers"] = list(self.model.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        d = dict(d)
        m = dict(d.pop("model", {}))
        if "layers" in m:
            m["layers"] = tuple(int(h) for h in m["layers"])
        known = {f.name for f in dataclasses.fields(cls)}
        known_m = {f.name for f in dataclasses.fields(GRU4RecConfig)}
        unknown = (set(d) - known) | {f"model.{k}" for k in set(m) - known_m}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(model=GRU4RecConfig(**m), **d)


PRESETS: dict[str, TrainConfig] = {
    # official tuned parameters for Diginetica (BPR-max, 512 units): the defaults
    "diginetica": TrainConfig(),
    # official parameters for YooChoose / RSC15 (cross-entropy with logQ, 100 units)
    "rsc15": TrainConfig(
        model=GRU4RecConfig(
            layers=(100,), constrained_embedding=True, dropout_p_embed=0.0, dropout_p_hidden=0.4
        ),
        loss="cross-entropy",
        elu_param=0.0,
        bpreg=0.0,
        logq=1.0,
        n_sample=2048,
        sample_alpha=0.5,
        batch_size=32,
        learning_rate=0.2,
        momentum=0.0,
        n_epochs=10,
        batch_mean=False,  # measured on the YooChoose 100k sample: docs/model-quality.md
    ),
}
PRESETS["yoochoose"] = PRESETS["rsc15"]


def get_preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


def configure(preset: str, overrides: Iterable[str] = (), **fixed: Any) -> TrainConfig:
    """The preset named `preset`, each "KEY=VALUE" of `overrides` applied in order
    (dotted keys reach the network's config: ``model.layers=100``), then the `fixed`
    fields; validated. ValueError naming the problem."""
    config = get_preset(preset)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"need KEY=VALUE, got {item!r}")
        config = override(config, key.strip(), raw.strip())
    config = dataclasses.replace(config, **fixed)
    try:
        config.validate()
    except ValueError as exc:
        raise ValueError(f"invalid parameters: {exc}") from None
    return config


def override(config: Any, key: str, raw: str) -> Any:
    """config with one dotted field replaced by `raw` parsed as that field's type."""
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(config)}
    if head not in fields:
        raise ValueError(f"unknown parameter {key!r}; known: {', '.join(sorted(fields))}")
    current = getattr(config, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{head!r} has no sub-parameters")
        return dataclasses.replace(config, **{head: override(current, rest, raw)})
    value: Any
    try:
        if isinstance(current, bool):
            value = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(raw)
        elif isinstance(current, float):
            value = float(raw)
        elif isinstance(current, tuple):
            value = tuple(int(x) for x in raw.split(",") if x.strip())
        else:
            value = raw
    except ValueError:
        raise ValueError(f"cannot parse {raw!r} for {key!r}") from None
    return dataclasses.replace(config, **{head: value})
