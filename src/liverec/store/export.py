"""Export the event log as JSONL: the training data of the session models.

Owns: the `liverec export-events` file layout — one JSON object per line with the
fields id, session_id, action, item_id, ts, user_id, rating (null when absent), in
log order. `liverec.model.data.load_sessions(path, fmt="liverec")` reads it back.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .base import Store

PAGE = 5000


async def export_events(
    store: Store,
    out: str | Path,
    after: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Write every logged event after `after` to `out` (.gz compresses); returns the count.
    `on_batch(n)` is told the size of each page written (progress)."""
    path = Path(out)
    tmp = path.with_name(path.name + ".tmp")
    await store.open()
    count = 0
    try:
        with _open_text(tmp, gz=path.suffix == ".gz") as fh:
            cursor = after
            while True:
                batch = await store.read_events(after=cursor, limit=PAGE)
                if not batch:
                    break
                for logged in batch:
                    e = logged.event
                    fh.write(
                        json.dumps(
                            {
                                "id": e.id,
                                "session_id": e.session_id,
                                "action": e.action,
                                "item_id": e.item_id,
                                "ts": e.ts,
                                "user_id": e.user_id,
                                "rating": e.rating,
                            },
                            separators=(",", ":"),
                        )
                        + "\n"
                    )
                count += len(batch)
                cursor = batch[-1].position
                if on_batch is not None:
                    on_batch(len(batch))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        await store.close()
    return count


def _open_text(path: Path, gz: bool) -> IO[str]:
    # Blocking file I/O is fine here: export runs in the CLI, not in the server.
    if gz:
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")  # the caller closes it
