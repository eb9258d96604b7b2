"""The models/ registry: every model version the learner made, and which one is served.

Owns: the layout of a models/ directory and every write to it.

    models/CURRENT          the served version's directory name: `liverec serve --model
                            models/` loads it and polls it (liverec.recommend.gru.served)
    models/<version>/       a checkpoint (model.safetensors + meta.json)
    models/registry.json    one record per version: parent, data window, metrics,
                            status (candidate, promoted, rejected, rolled-back) and why,
                            with its history; and the log of changes to CURRENT
    models/.lock            flock held by each writer (learner, `liverec models`)
    models/.learner.lock    flock held by the one learner writing here
    models/.staging-*/      candidates being written; removed by the next learner

CURRENT and registry.json are replaced atomically (temporary file, fsync, rename,
fsync of the directory): a reader sees the old or the new pointer, never half of one,
and a crash leaves the old one. A version directory appears by one rename, complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..errors import ModelError
from ..model import META

CURRENT: Final = "CURRENT"  # the same name liverec.recommend.gru.served resolves
REGISTRY: Final = "registry.json"
FORMAT: Final = 1
STATUSES: Final = ("candidate", "promoted", "rejected", "rolled-back")
_STAGING: Final = ".staging-"


def now_iso() -> str:
    """UTC time with milliseconds, the registry's time format."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers and crashes see old or new only."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class VersionRecord:
    """What the registry knows of one version."""

    version: str
    parent: str | None  # the version it was fine-tuned from (None: trained from scratch)
    mode: str  # "finetune" | "retrain" | "initial" (first model, nothing served before)
    created: str  # ISO time
    status: str  # one of STATUSES
    reason: str  # why it has that status
    window: dict[str, Any] = field(default_factory=dict)  # the events it was trained on
    metrics: dict[str, Any] = field(default_factory=dict)  # candidate vs live on the holdout
    items: int = 0  # vocabulary size
    new_items: int = 0  # items its parent did not know
    seconds: float = 0.0  # training and evaluation time
    files: bool = True  # False once its directory was pruned
    history: list[dict[str, str]] = field(default_factory=list)  # {at, status, reason}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class Registry:
    """A models/ directory. Every method re-reads the files: several processes (the
    learner, `liverec models`) may use one registry; writers take `models/.lock`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- reading ------------------------------------------------------------------

    def current(self) -> str | None:
        """The served version (CURRENT), or None when nothing is promoted yet."""
        try:
            name = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name or None

    def records(self) -> list[VersionRecord]:
        """Every version, oldest first."""
        return [VersionRecord.from_dict(d) for d in self._load()["versions"]]

    def changes(self) -> list[dict[str, Any]]:
        """Every change of CURRENT, oldest first: {at, action, version, previous, reason}."""
        changes: list[dict[str, Any]] = self._load()["changes"]
        return changes

    def get(self, version: str) -> VersionRecord:
        for record in self.records():
            if record.version == version:
                return record
        raise ModelError(f"no version {version!r} in the registry at {self.root}")

    def path(self, version: str) -> Path:
        return self.root / version

    def latest(self) -> VersionRecord | None:
        records = self.records()
        return records[-1] if records else None

    # --- writing ------------------------------------------------------------------

    def staging(self) -> Path:
        """A fresh directory inside the registry to write a candidate checkpoint to."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{_STAGING}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def clean_staging(self) -> None:
        """Remove candidates left half-written by a learner that stopped."""
        for path in self.root.glob(_STAGING + "*"):
            shutil.rmtree(path, ignore_errors=True)

    def add(self, staged: Path, **fields: Any) -> VersionRecord:
        """Move the checkpoint written in `staged` to models/<version>/ and record it
        as a candidate; `fields` are VersionRecord fields (parent, mode, window, ...)."""
        try:
            meta = json.loads((staged / META).read_text(encoding="utf-8"))
            version = str(meta["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{staged} is not a checkpoint: {exc}") from exc
        with self._locked() as data:
            taken = {d["version"] for d in data["versions"]}
            name, n = version, 1
            while name in taken or (self.root / name).exists():
                n += 1
                name = f"{version}-{n}"
            os.replace(staged, self.root / name)
            _fsync_dir(self.root)
            now = now_iso()
            record = VersionRecord(
                version=name,
                parent=fields.pop("parent", None),
                mode=fields.pop("mode", "retrain"),
                created=now,
                status="candidate",
                reason=fields.pop("reason", "trained"),
                **fields,
            )
            record.history.append({"at": now, "status": "candidate", "reason": record.reason})
            data["versions"].append(record.to_dict())
        return record

    def promote(self, version: str, reason: str) -> None:
        """Serve `version`: CURRENT names it (atomically); the change is logged."""
        with self._locked() as data:
            self._set_status(data, version, "promoted", reason)
            self._point(data, version, "promote", reason)

    def reject(self, version: str, reason: str) -> None:
        with self._locked() as data:
            self._set_status(data, version, "rejected", reason)

    def rollback(self, version: str | None = None, reason: str = "") -> VersionRecord:
        """Serve `version` again, or the one served before the current one.

        The version rolled back from is marked rolled-back (with `reason`), so a
        later rollback without a version skips it. Returns the record now served."""
        with self._locked() as data:
            current = self.current()
            by_name = {d["version"]: d for d in data["versions"]}
            if version is None:
                version = self._previous(data, current, by_name)
            record = by_name.get(version)
            if record is None:
                raise ModelError(f"no version {version!r} in the registry at {self.root}")
            if not (self.root / version / META).is_file():
                raise ModelError(f"the files of {version} are gone (pruned); cannot serve it")
            if version == current:
                raise ModelError(f"{version} is already served")
            why = reason or "rollback"
            if current is not None and current in by_name:
                self._set_status(data, current, "rolled-back", f"{why} (to {version})")
            self._set_status(data, version, "promoted", f"{why} (from {current})")
            self._point(data, version, "rollback", why)
            return VersionRecord.from_dict(by_name[version])

    def prune(self, keep: int) -> list[str]:
        """Delete the directories of old versions; returns their names. Kept: the
        served one, the `keep` newest that were ever served (rollback targets) and
        the `keep` newest others. Their records stay, with files=False."""
        removed: list[str] = []
        with self._locked() as data:
            current = self.current()
            alive = [d for d in data["versions"] if d.get("files", True)]
            served = [d for d in alive if d["status"] in ("promoted", "rolled-back")]
            others = [d for d in alive if d["status"] not in ("promoted", "rolled-back")]
            kept = {current}
            if keep > 0:
                kept |= {d["version"] for d in served[-keep:] + others[-keep:]}
            for d in alive:
                if d["version"] in kept:
                    continue
                shutil.rmtree(self.root / d["version"], ignore_errors=True)
                d["files"] = False
                removed.append(d["version"])
        return removed

    # --- internals ----------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = self.root / REGISTRY
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "versions": [], "changes": []}
        except (OSError, ValueError) as exc:
            raise ModelError(f"unreadable {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelError(f"{path}: not a registry of format {FORMAT}")
        data.setdefault("versions", [])
        data.setdefault("changes", [])
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The registry data under the writers' lock; saved when the block succeeds."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            yield data
            write_atomic(self.root / REGISTRY, json.dumps(data, indent=1) + "\n")

    @staticmethod
    def _set_status(data: dict[str, Any], version: str, status: str, reason: str) -> None:
        for d in data["versions"]:
            if d["version"] == version:
                d["status"], d["reason"] = status, reason
                d["history"].append({"at": now_iso(), "status": status, "reason": reason})
                return
        raise ModelError(f"no version {version!r} in the registry")

    def _point(self, data: dict[str, Any], version: str, action: str, reason: str) -> None:
        previous = self.current()
        write_atomic(self.root / CURRENT, version + "\n")
        data["changes"].append(
            {
                "at": now_iso(),
                "action": action,
                "version": version,
                "previous": previous,
                "reason": reason,
            }
        )

    def _previous(
        self, data: dict[str, Any], current: str | None, by_name: dict[str, dict[str, Any]]
    ) -> str:
        """The latest version served before `current` that is not rolled back and
        still has its files."""
        for change in reversed(data["changes"]):
            for name in (change["version"], change.get("previous")):
                record = by_name.get(name) if name else None
                if (
                    record is not None
                    and name != current
                    and record["status"] != "rolled-back"
                    and (self.root / name / META).is_file()
                ):
                    return str(name)
        raise ModelError(f"nothing to roll back to in {self.root} (name a version)")


@contextlib.contextmanager
def learner_lock(root: Path) -> Iterator[None]:
    """Held for a learner's lifetime: a second learner on the same models/ fails."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".learner.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelError(f"another learner is writing to {root}") from None
        yield
