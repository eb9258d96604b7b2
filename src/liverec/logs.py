"""The process's log output: one format for liverec's and uvicorn's lines.

Owns: `setup_logging(level, fmt)` — a single root handler on stderr, text
(`2026-12-05T02:10:00Z INFO liverec.server: ready`) or JSON (one object per line:
`time`, `level`, `logger`, `message`, `exc` when there is a traceback) — uvicorn's
loggers routed through it (uvicorn is started with `log_config=None`), and the
per-connection lines (uvicorn's access lines, WebSocket accepted/open/closed) moved
to DEBUG so that a busy server logs what an operator acts on.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

FORMATS: Final = ("text", "json")
# uvicorn's per-connection lines at INFO (logger "uvicorn.error"); logged at DEBUG here.
_CONNECTION_LINES: Final = ("connection open", "connection closed")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes into "exc" (never across lines)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ConnectionLinesToDebug(logging.Filter):
    """Re-levels uvicorn's per-request and per-socket lines to DEBUG, then lets through
    what is at or above the threshold (uvicorn's loggers emit INFO whatever it is).
    Names uvicorn's general logger "uvicorn" ("uvicorn.error" logs its start-up too)."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error":  # its general logger, errors or not
            record.name = "uvicorn"
        if record.levelno == logging.INFO and _per_connection(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def _per_connection(record: logging.LogRecord) -> bool:
    if record.name == "uvicorn.access":
        return True
    if record.name not in ("uvicorn", "uvicorn.error"):
        return False
    message = str(record.msg)
    return message in _CONNECTION_LINES or '"WebSocket ' in message


def setup_logging(level: str, fmt: str = "text") -> None:
    """Replace the root handlers with one stderr handler in `fmt`; uvicorn's loggers
    propagate to it."""
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        threshold = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ConnectionLinesToDebug(threshold))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # access and socket lines are made at INFO; let them reach the handler's filter
        logger.setLevel(min(threshold, logging.INFO))
