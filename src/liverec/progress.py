"""Progress of long commands (train, catalog import, export-events) that fits the terminal.

Owns: `progress(total, desc, unit)` — a tqdm bar when stderr is a terminal, and
otherwise (piped, in a log, under docker) one plain line every `LINE_EVERY_S`
seconds and one at the end, so that a log never fills with redrawn bars. Both
offer `update(n)`, `set_postfix(**fields)` and a `with` block.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Final, TextIO

LINE_EVERY_S: Final = 10.0  # a line at most this often when stderr is not a terminal


class LineProgress:
    """Plain progress lines: `desc: 1,234/5,000 ev (25%), 410 ev/s, loss=1.23`."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        stream: TextIO,
        every_s: float = LINE_EVERY_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.every_s, self.clock = every_s, clock
        self.n = 0
        self.postfix = ""
        self.started = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def set_postfix(self, refresh: bool = True, **fields: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in fields.items())

    def _line(self, now: float, done: bool = False) -> None:
        if self.total:
            count = f"{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            count = f"{self.n:,} {self.unit}"
        rate = self.n / max(now - self.started, 1e-9)
        parts = [count, f"{rate:,.0f} {self.unit}/s"] + ([self.postfix] if self.postfix else [])
        end = " done" if done else ""
        print(f"{self.desc}:{end} {', '.join(parts)}", file=self.stream, flush=True)

    def close(self) -> None:
        self._line(self.clock(), done=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()


class NoProgress:
    """Nothing shown (`--quiet`)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **fields: Any) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(
    total: int | None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Any:
    """A tqdm bar on a terminal, `LineProgress` elsewhere, `NoProgress` when disabled."""
    out = stream or sys.stderr
    if not enabled:
        return NoProgress()
    if out.isatty():
        from tqdm import tqdm

        return tqdm(
            total=total, desc=desc, unit=unit, unit_scale=True, file=out, dynamic_ncols=True
        )
    return LineProgress(total, desc, unit, out)
