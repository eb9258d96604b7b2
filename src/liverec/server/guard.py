"""Start-up errors as one line: checks before uvicorn starts, and the lifespan guard.

Owns: `preflight(settings)` — what can be checked without I/O before the server binds
(the store URL parses to a known scheme, named paths exist) — and `StartupGuard`, an
ASGI wrapper that keeps a start-up failure (store unreachable, bad checkpoint) from
being logged as a traceback by Starlette and uvicorn; `liverec serve` then reports
it in one line and exits non-zero.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..errors import ConfigError, LiverecError
from ..store import limits_from, open_store

_FAILED_LINE = "Application startup failed. Exiting."


def preflight(settings: Settings) -> None:
    """Raise ConfigError, naming the setting, for what is wrong before anything starts."""
    try:
        store = open_store(settings.store_url, limits_from(settings))  # parses; opens nothing
    except ConfigError as exc:
        raise ConfigError(f"store_url: {exc}") from None
    if settings.workers > 1 and not store.shared_log:
        raise ConfigError(
            f"workers: {settings.workers} processes need a store they share (redis:// or "
            "redis+cluster://); the embedded store belongs to one process"
        )
    for name in ("model_path", "ab_model_path", "web_dir"):
        value = getattr(settings, name)
        if value is not None and not Path(value).is_dir():
            raise ConfigError(f"{name}: no such directory: {value}")
    if settings.vsknn_data is not None and not Path(settings.vsknn_data).is_file():
        raise ConfigError(f"vsknn_data: no such file: {settings.vsknn_data}")


class StartupGuard:
    """Passes everything to `app`; a LiverecError or OSError raised while the app starts
    is kept (not logged with a traceback) and re-raised by `raise_startup_error` once
    uvicorn has given up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: BaseException | None = None
        logging.getLogger("uvicorn.error").addFilter(self._quiet_failure_line)

    def _quiet_failure_line(self, record: logging.LogRecord) -> bool:
        return not (self.error is not None and record.msg == _FAILED_LINE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        started = False
        failed: list[Message] = []

        async def send_checked(message: Message) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.complete":
                started = True
            if message["type"] == "lifespan.startup.failed":
                failed.append(message)  # Starlette puts the traceback in "message"
                return
            await send(message)

        try:
            await self.app(scope, receive, send_checked)
        except (LiverecError, OSError) as exc:
            if started:
                raise
            self.error = exc
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        for message in failed:  # an error we do not know: uvicorn logs it as it is
            await send(message)

    def raise_startup_error(self) -> None:
        if self.error is not None:
            raise self.error
