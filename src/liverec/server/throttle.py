"""Rate-limited logging for warnings an attacker can repeat at will.

Owns: `LogThrottle` — one line per key per `log_repeat_s` (a refused origin, a cut
slow client, descriptor exhaustion), the next one saying how many were not logged.
Keys are bounded (the oldest forgotten), and all keys together log at most
MAX_LINES lines per interval, so a stream of distinct keys (origins are chosen by
the client) costs neither memory nor log space without bound.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

MAX_KEYS = 1024
MAX_LINES = 20  # per interval, all keys together


class LogThrottle:
    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key: (time, skipped)
        self._window = (float("-inf"), 0)  # (start, lines logged in it)

    def should_log(self, key: str) -> int | None:
        """None to stay quiet; otherwise the number of lines skipped since the last one."""
        now = time.monotonic()
        last, skipped = self._last.pop(key, (float("-inf"), 0))
        start, lines = self._window
        if now - start >= self.interval_s:
            start, lines = now, 0
        quiet = now - last < self.interval_s or lines >= MAX_LINES
        self._last[key] = (last, skipped + 1) if quiet else (now, 0)
        if len(self._last) > MAX_KEYS:
            self._last.popitem(last=False)
        if quiet:
            return None
        self._window = (start, lines + 1)
        return skipped

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        skipped = self.should_log(key)
        if skipped is None:
            return
        if skipped:
            msg += " (%d more like it not logged)"
            args = (*args, skipped)
        self.logger.log(level, msg, *args)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, key, msg, *args)
