"""The models/ registry: versions, promotion, rejection, rollback, pruning, the atomic
CURRENT pointer, and the one-learner lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from liverec.errors import ModelError
from liverec.learn import registry as registry_module
from liverec.learn.registry import CURRENT, Registry, learner_lock
from liverec.model.checkpoint import save_checkpoint
from liverec.model.config import TrainConfig
from liverec.model.data import ItemIndex
from liverec.model.gru4rec import GRU4Rec, GRU4RecConfig
from liverec.recommend.gru.served import resolve_checkpoint


def add_version(registry: Registry, seed: int, **fields: object) -> str:
    """A tiny checkpoint added to the registry as a candidate; returns its version."""
    config = TrainConfig(model=GRU4RecConfig(n_items=3, layers=(4,)), seed=seed)
    torch.manual_seed(seed)
    model = GRU4Rec(config.model)
    staged = registry.staging()
    save_checkpoint(staged, model, config, ItemIndex(["a", "b", "c"]))
    return registry.add(staged, **fields).version


def test_add_promote_reject_and_list(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    assert reg.current() is None and reg.records() == [] and reg.latest() is None
    v1 = add_version(reg, 1, mode="initial", window={"events": 10}, metrics={"k": 20})
    v2 = add_version(reg, 2, parent=v1, mode="finetune", new_items=2)
    assert [r.version for r in reg.records()] == [v1, v2]
    assert reg.get(v1).status == "candidate" and reg.get(v1).window == {"events": 10}
    assert not list(reg.root.glob(".staging-*"))  # moved into place by one rename
    reg.promote(v1, "first model")
    assert reg.current() == v1
    assert resolve_checkpoint(reg.root) == (reg.root / v1).resolve()  # what serving loads
    reg.reject(v2, "worse than live")
    r2 = reg.get(v2)
    assert (r2.status, r2.reason, r2.parent, r2.mode, r2.new_items) == (
        "rejected",
        "worse than live",
        v1,
        "finetune",
        2,
    )
    assert [h["status"] for h in r2.history] == ["candidate", "rejected"]
    assert reg.current() == v1  # a rejection does not touch CURRENT
    assert [(c["action"], c["version"], c["previous"]) for c in reg.changes()] == [
        ("promote", v1, None)
    ]
    with pytest.raises(ModelError):
        reg.get("nope")
    with pytest.raises(ModelError):
        reg.promote("nope", "x")


def test_rollback_moves_current_and_is_recorded(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    v1, v2, v3 = (add_version(reg, s) for s in (1, 2, 3))
    with pytest.raises(ModelError):
        reg.rollback()  # nothing served yet
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    reg.promote(v3, "better still")
    back = reg.rollback(reason="bad CTR")
    assert back.version == v2 and reg.current() == v2
    assert reg.get(v3).status == "rolled-back" and reg.get(v3).reason == f"bad CTR (to {v2})"
    assert reg.get(v2).status == "promoted" and reg.get(v2).reason == f"bad CTR (from {v3})"
    # again: v3 is skipped (rolled back), so the one before v2 is v1
    assert reg.rollback().version == v1 and reg.current() == v1
    assert reg.get(v2).status == "rolled-back"
    # an explicit version may be served again, even a rolled-back one
    assert reg.rollback(v3, reason="operator").version == v3 and reg.current() == v3
    actions = [(c["action"], c["version"], c["previous"]) for c in reg.changes()]
    assert actions[-3:] == [("rollback", v2, v3), ("rollback", v1, v2), ("rollback", v3, v1)]
    with pytest.raises(ModelError):
        reg.rollback(v3)  # already served
    with pytest.raises(ModelError):
        reg.rollback("nope")


def test_current_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "models")
    v1, v2 = add_version(reg, 1), add_version(reg, 2)
    reg.promote(v1, "first")
    before = set(reg.root.iterdir())

    def crash(src: object, dst: object) -> None:  # the process dies before the rename
        raise OSError("crashed")

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(OSError):
        reg.promote(v2, "better")
    monkeypatch.undo()
    assert (reg.root / CURRENT).read_text() == f"{v1}\n"  # the old pointer, whole
    assert set(reg.root.iterdir()) == before  # no temporary file left behind
    assert reg.get(v2).status == "candidate"  # the registry did not record it either
    reg.promote(v2, "better")
    assert reg.current() == v2


def test_prune_keeps_the_served_and_the_newest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    versions = [add_version(reg, s) for s in range(7)]
    reg.promote(versions[0], "first")
    reg.promote(versions[1], "second")
    for v in versions[2:6]:
        reg.reject(v, "worse")
    reg.rollback(versions[0])  # served: v0; v1 rolled back; v6 still a candidate
    removed = reg.prune(keep=1)
    assert set(removed) == {versions[2], versions[3], versions[4], versions[5]}
    kept = {p.name for p in reg.root.iterdir() if not p.name.startswith(".")}
    assert kept == {versions[0], versions[1], versions[6], CURRENT, "registry.json"}
    assert [r.files for r in reg.records()] == [True, True, False, False, False, False, True]
    with pytest.raises(ModelError, match="pruned"):
        reg.rollback(versions[3])
    assert reg.prune(keep=0) == [versions[1], versions[6]]


def test_one_learner_per_registry(tmp_path: Path) -> None:
    root = tmp_path / "models"
    with learner_lock(root):
        with pytest.raises(ModelError, match="another learner"):
            with learner_lock(root):
                pass
    with learner_lock(root):  # released
        pass


def test_staging_leftovers_are_cleaned(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    half = reg.staging()
    (half / "model.safetensors.tmp").write_bytes(b"half")
    reg.clean_staging()
    assert not half.exists()
    with pytest.raises(ModelError, match="not a checkpoint"):
        reg.add(reg.staging())


def test_listing_and_promoting_models_does_not_import_torch() -> None:
    """`liverec models` and other tools that only read or move registry entries stay
    light: the registry knows the checkpoint file names without the model code."""
    code = (
        "import sys, liverec.learn.registry, liverec.learn.commands, liverec.cli; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
