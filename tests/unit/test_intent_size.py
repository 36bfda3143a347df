"""The size cap every intake door shares: MAX_INTENT_BYTES."""

from __future__ import annotations

import base64

import orjson
import pytest

from dispatcher.errors import IntentRefused
from dispatcher.intents import (
    MAX_ATTACHMENT_BYTES,
    MAX_INTENT_BYTES,
    MAX_TEXT_LENGTH,
    check_size,
    parse_intent,
)
from dispatcher.producer import Producer


def largest_valid_intent() -> dict[str, object]:
    """The largest attachment and the longest text, in characters that encode widest."""
    return {
        "id": "largest-intent",
        "recipients": ["alice"],
        "text": "€" * MAX_TEXT_LENGTH,
        "attachment": {
            "filename": "big.bin",
            "contentType": "application/octet-stream",
            "data": base64.b64encode(b"\xff" * MAX_ATTACHMENT_BYTES).decode(),
        },
    }


def test_the_largest_valid_intent_fits() -> None:
    """An intent at every content limit encodes under MAX_INTENT_BYTES and is accepted."""
    intent = parse_intent(largest_valid_intent())
    assert len(orjson.dumps(intent.to_wire())) < MAX_INTENT_BYTES
    assert check_size(intent) is intent


def test_an_intent_over_the_cap_is_refused_naming_the_limit() -> None:
    """Recipients' data can grow an intent past the cap: refused with the limit named."""
    data = {"blob": "x" * (MAX_INTENT_BYTES // 2)}
    intent = parse_intent(
        {
            "template": "welcome",
            "recipients": [
                {"identifier": "alice", "data": data},
                {"identifier": "bob", "data": data},
            ],
        }
    )
    with pytest.raises(IntentRefused) as caught:
        check_size(intent)
    [problem] = caught.value.problems
    assert problem.startswith("intent: is ")
    assert f"the limit of {MAX_INTENT_BYTES} bytes (16 MiB)" in problem


def test_the_producer_refuses_it_before_touching_redis() -> None:
    """Producer.check (used by the CLI, the HTTP intake and dispatcher.enqueue) applies the
    cap; the refusal comes before any Redis call, so no server is needed."""
    producer = Producer("redis://127.0.0.1:1/0", "ns", "notifications")
    oversized = {
        "recipients": ["alice"],
        "text": "hi",
        "devicesData": {"ios": {"customData": {"blob": "x" * MAX_INTENT_BYTES}}},
    }
    try:
        with pytest.raises(IntentRefused, match=r"^intent: is \d+ bytes encoded as JSON"):
            producer.enqueue(oversized)
    finally:
        producer.close()
