"""What SQLite's exceptions mean to the embedded store.

Owns: recognising SQLITE_BUSY (another connection holds the lock SQLite needed) and
mapping sqlite3 exceptions, whether raised on the event loop, the writer thread or
while opening, to the liverec error tree (`StoreUnavailable` for what may pass:
locked, disk full, I/O error, read-only; `StoreError` otherwise).
"""

from __future__ import annotations

import logging
import sqlite3

from ..errors import LiverecError, StoreError, StoreUnavailable

log = logging.getLogger("liverec.store.embedded")  # one logger for the embedded store


def open_error(url: str, exc: BaseException) -> BaseException:
    """The error `open()` raises when the file cannot be opened or set up."""
    if isinstance(exc, OSError | sqlite3.OperationalError):
        return StoreUnavailable(f"cannot open {url}: {exc}")
    return store_error(exc)


def busy(exc: BaseException) -> bool:
    """True when another connection holds the lock SQLite needed (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def store_error(exc: BaseException) -> BaseException:
    """The liverec error a caller sees for an exception raised on the writer thread."""
    if isinstance(exc, LiverecError):
        return exc
    err: StoreError
    if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O error, read-only
        err = StoreUnavailable(f"SQLite: {exc}")
    elif isinstance(exc, sqlite3.Error):
        err = StoreError(f"SQLite: {exc}")
    else:
        log.error("internal error in the embedded store", exc_info=exc)
        err = StoreError(f"internal error: {exc!r}")
    err.__cause__ = exc
    return err
