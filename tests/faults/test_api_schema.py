"""schemathesis against a real `dispatcher serve`: requests generated from `/openapi.json`
(valid and invalid ones), and every answer checked against the document: no server error,
no status, content type or body the document does not allow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_server import SECRET, ServerProcess

TOKEN = "schema-fuzz-token-00000001"
# Examples per operation and generation mode: 15 operations, two modes.
EXAMPLES = 15
MIN_REQUESTS = 300
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = pytest.mark.fault


@pytest.fixture
def server(settings_env: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        {**settings_env, "DISPATCHER_API_TOKENS": TOKEN, "DISPATCHER_CALLBACK_SECRET": SECRET}
    )
    process.wait_listening()
    yield process
    process.close()


def test_generated_requests_get_answers_the_document_allows(
    server: ServerProcess, report: Any
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16
    sent: dict[str, int] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(20240501)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                case.call_and_validate(
                    base_url=server.url, headers=headers, checks=CHECKS, timeout=30
                )
                label = case.operation.label
                sent[label] = sent.get(label, 0) + 1

            try:
                call()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label

    total = sum(sent.values())
    report("requests", total)
    report("operations", len(sent))
    server.stop()
    errors = [e for e in server.events() if e.get("level") == "error"]
    report("server errors logged", len(errors))
    assert total >= MIN_REQUESTS
    assert not [e for e in errors if e.get("event") == "request.failed"]
