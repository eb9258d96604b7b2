"""GRU4Rec checkpoints.

Owns: the on-disk layout of a trained model (a directory holding `model.safetensors`
with the weights and `meta.json` with the format version, the full training config,
the item id list and provenance), saving, loading with validation (ModelError on any
problem; no pickle anywhere: the model is rebuilt from its config). The step-wise
scorer built from a checkpoint is in scorer.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import ModelError
from . import FORMAT_VERSION, META, WEIGHTS
from .config import TrainConfig
from .data import ItemIndex
from .gru4rec import GRU4Rec


def save_checkpoint(
    out_dir: Path | str,
    model: GRU4Rec,
    config: TrainConfig,
    item_index: ItemIndex,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write weights + metadata into out_dir (created); returns out_dir.

    meta may carry data_fingerprint, evaluation, parent, training, and `name` (default
    "gru4rec"), which starts the version string "<name>-YYYYMMDD-HHMMSS-<hash8>"; its
    hash is of the weights.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(item_index) != model.config.n_items:
        raise ModelError(f"item index has {len(item_index)} items, model {model.config.n_items}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for k in sorted(tensors):
        digest.update(k.encode())
        digest.update(tensors[k].numpy().tobytes())
    now = datetime.now(UTC)
    info: dict[str, Any] = dict(meta or {})
    name = str(info.pop("name", None) or "gru4rec")
    info.update(
        format_version=FORMAT_VERSION,
        kind="gru4rec",
        version=f"{name}-{now:%Y%m%d-%H%M%S}-{digest.hexdigest()[:8]}",
        created=now.isoformat(timespec="seconds"),
        liverec_version=__version__,
        config=config.to_dict(),
        items=list(item_index.ids),
    )
    info.setdefault("parent", None)
    info.setdefault("family", "gru4rec")  # or "hybrid" (recommend/hybrid.py)
    # write to temporary names, then rename: a reader never sees half a checkpoint
    tmp_w, tmp_m = out / (WEIGHTS + ".tmp"), out / (META + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format_version": str(FORMAT_VERSION)})
    tmp_m.write_text(json.dumps(info, indent=1))
    os.chmod(tmp_w, tmp_m.stat().st_mode & 0o777)  # safetensors writes 0600; follow umask
    os.replace(tmp_w, out / WEIGHTS)
    os.replace(tmp_m, out / META)
    return out


def load_checkpoint(
    model_dir: Path | str,
) -> tuple[GRU4Rec, TrainConfig, ItemIndex, dict[str, Any]]:
    """Rebuild the model from meta.json's config and load the weights (eval mode)."""
    d = Path(model_dir)
    wpath, mpath = d / WEIGHTS, d / META
    for p in (mpath, wpath):
        if not p.is_file():
            raise ModelError(f"checkpoint file missing: {p}")
    try:
        meta = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"unreadable {mpath}: {e}") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{mpath} does not hold an object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"unsupported checkpoint format {meta.get('format_version')!r} in {mpath} "
            f"(this liverec reads {FORMAT_VERSION})"
        )
    try:
        config = TrainConfig.from_dict(meta["config"])
        items = [str(i) for i in meta["items"]]
        item_index = ItemIndex(items)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"bad metadata in {mpath}: {e}") from e
    if len(item_index) != config.model.n_items:
        raise ModelError(f"{mpath}: {len(item_index)} item ids for n_items={config.model.n_items}")
    try:
        model = GRU4Rec(config.model)
    except ValueError as e:
        raise ModelError(f"bad model config in {mpath}: {e}") from e
    try:
        tensors = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types
        raise ModelError(f"unreadable weights {wpath}: {e}") from e
    expected = model.state_dict()
    if set(tensors) != set(expected):
        missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
        raise ModelError(f"{wpath}: missing tensors {sorted(missing)}, unexpected {sorted(extra)}")
    for k, v in tensors.items():
        if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
            raise ModelError(
                f"{wpath}: tensor {k} is {v.dtype}{tuple(v.shape)}, "
                f"expected {expected[k].dtype}{tuple(expected[k].shape)}"
            )
    model.load_state_dict(tensors)
    model.eval()
    return model, config, item_index, meta
