"""Close codes in one place: every error that ends a connection maps to a code the
metrics know, with the reason clients read (docs/protocol.md)."""

from __future__ import annotations

import pytest

from liverec.errors import (
    FrameTooLarge,
    HelloTimeout,
    IdleTimeout,
    ProtocolError,
    RateLimited,
    SlowConsumer,
)
from liverec.metrics import CLOSE_CODES
from liverec.server import close_codes
from liverec.server.close_codes import close_code_for


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FrameTooLarge(2000, 1000), (1009, "frame too large")),
        (HelloTimeout("late"), (1008, "no hello in time")),
        (RateLimited("flood"), (1013, "rate limit exceeded")),
        (SlowConsumer("full"), (1013, "client not reading")),
        (IdleTimeout("idle"), (1000, "idle timeout")),
        (ProtocolError("bad_frame", "no"), (1008, "bad_frame")),
        (RuntimeError("bug"), (1011, "internal error")),
    ],
)
def test_each_ending_error_has_its_close_code(
    exc: BaseException, expected: tuple[int, str]
) -> None:
    assert close_code_for(exc) == expected


def test_every_close_code_is_a_metrics_label() -> None:
    codes = {v for k, v in vars(close_codes).items() if k.startswith("CLOSE_")}
    assert codes == {1000, 1008, 1009, 1011, 1012, 1013}
    assert {str(c) for c in codes} <= set(CLOSE_CODES)
