"""`liverec serve --workers N`: N server processes on one machine, one listening socket.

Owns: binding the socket once in a supervisor process, forking the workers that
serve it (the kernel hands each new connection to one of them), passing SIGTERM and
SIGINT on to them, and starting a worker again when one dies of a signal (killed,
out of memory). A worker that exits with an error (a bad setting, the store
unreachable at start) stops them all: it would fail the same way again.

Workers share nothing but the store and models/: each has its own online model (kept
in step by following the shared log, liverec.recommend.follower), its own catalog
cache and its own sessions; a browser that reconnects to another worker resumes its
session from the store.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from ..config import Settings
from ..errors import LiverecError

log = logging.getLogger("liverec.workers")


def bind(settings: Settings) -> socket.socket:
    """The listening socket every worker accepts on."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # says TCP; without it Nagle and delayed ACKs held each small frame ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def supervise(settings: Settings, serve: Callable[[socket.socket], int]) -> int:
    """Fork `settings.workers` processes running `serve(sock)`; return once all ended."""
    sock = bind(settings)
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = serve(sock)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except (LiverecError, OSError) as exc:  # failed to start: one line, as `liverec`
                print(f"liverec: error: worker {number}: {exc}", file=sys.stderr)
                code = 2
            except BaseException:
                log.exception("worker %d failed", number)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = number

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(settings.workers):
        start(number)
    log.info("liverec: %d workers on %s:%d", settings.workers, settings.host, settings.port)
    result = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        number = children.pop(pid, -1)
        code = os.waitstatus_to_exitcode(status)
        if stopping or number < 0:
            continue
        if code < 0:  # died of a signal: start it again
            log.warning(
                "worker %d (pid %d) died of signal %d; starting it again", number, pid, -code
            )
            start(number)
        elif code != 0:
            log.error("worker %d (pid %d) exited with %d; stopping", number, pid, code)
            result = code
            stop(signal.SIGTERM, None)
    sock.close()
    return result
