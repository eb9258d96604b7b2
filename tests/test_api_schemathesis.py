"""Property-based API test: schemathesis against a real `liverec serve`.

The server's own /openapi.json drives it: for every operation, generated requests
(valid ones and ones that break the schema) must never get a 5xx other than a
documented 503, and every reply must have a documented status, content type and a
body that fits the documented schema. The server runs with raised per-address
limits (events, GET requests): schemathesis sends every request from one address,
and the rate limits are tested elsewhere (test_limits, test_security).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .servers import LiverecServer

EXAMPLES = 25  # per operation and mode: about 20 s on a busy two-core machine
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server() -> Iterator[LiverecServer]:
    srv = LiverecServer(
        "memory://",
        address_events_per_s=100_000,
        address_events_burst=100_000,
        get_requests_per_s=100_000,
        get_requests_burst=100_000,
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
def test_no_operation_answers_with_a_server_error_or_off_schema(
    server: LiverecServer, mode: schemathesis.GenerationMode
) -> None:
    api = schemathesis.openapi.from_url(server.base + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 10, [op.label for op in operations]
    for operation in operations:
        inputs = [operation.query, operation.path_parameters, operation.body]
        if mode == schemathesis.GenerationMode.NEGATIVE and not any(len(i) for i in inputs):
            continue  # nothing to break (GET /healthz)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],  # a failure is reported as found, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.base, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # no value of its inputs breaks the schema (any string is an
            if mode != schemathesis.GenerationMode.NEGATIVE:  # item id, say)
                raise
        except Exception as exc:
            exc.add_note(f"operation: {operation.label} ({mode})")
            raise
