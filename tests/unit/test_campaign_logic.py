"""Fan-out, scheduling and cancel as pure logic and as deliverer branches, with no I/O:
part ids, splitting, `sendAt` parsing, the admission limits, and what an attempt returns for
a scheduled, split or cancelled intent."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.admission import Limits, admission_problems, admit
from dispatcher.errors import IntentRefused
from dispatcher.fanout import MAX_ID_LENGTH, part_count, part_id, split
from dispatcher.intents import ID_PATTERN, Intent, parse_intent
from dispatcher.outcome import DeadLetter, Sent
from dispatcher.render import remaining_expire_time
from dispatcher.store.receipts import ClaimState
from dispatcher.worker.delivery import SEND_AT_SLACK_MS, Cancelled, Scheduled, Split
from tests.unit.deliveryfakes import NOW_MS, FakeCancels, Rig, intent

pytestmark = pytest.mark.timeout(30)

FAST = settings(max_examples=150, deadline=None, database=None)
ids = st.from_regex(ID_PATTERN, fullmatch=True)


@FAST
@given(intent_id=ids, index=st.integers(min_value=1, max_value=100_000))
def test_a_part_id_is_a_valid_message_ref_derived_from_the_id_alone(
    intent_id: str, index: int
) -> None:
    ref = part_id(intent_id, index)
    assert re.fullmatch(ID_PATTERN, ref)
    assert len(ref) <= MAX_ID_LENGTH
    assert ref == part_id(intent_id, index)
    assert ref.endswith(f"_p{index}")


@FAST
@given(first=ids, second=ids, index=st.integers(min_value=1, max_value=1000))
def test_different_intents_or_parts_get_different_part_ids(
    first: str, second: str, index: int
) -> None:
    if first != second:
        assert part_id(first, index) != part_id(second, index)
    assert part_id(first, index) != part_id(first, index + 1)


def test_a_long_id_is_shortened_with_a_digest() -> None:
    long_id = "a" * 50
    ref = part_id(long_id, 7)
    assert len(ref) == 50
    assert ref.startswith("a" * 36 + "-")
    assert ref.endswith("_p7")
    assert part_id("a" * 49 + "b", 7) != ref


@FAST
@given(
    max_recipients=st.integers(min_value=1, max_value=150),
    beyond=st.integers(min_value=1, max_value=300),
)
def test_split_keeps_every_recipient_once_in_order(max_recipients: int, beyond: int) -> None:
    # `split` is only asked for an intent with more recipients than one message carries.
    recipients = max_recipients + beyond
    whole = parse_intent(
        {"id": "whole-1", "recipients": [f"u{n}" for n in range(recipients)], "text": "hi"}
    )
    parts = split(whole, max_recipients)
    assert len(parts) == part_count(recipients, max_recipients)
    assert [r.identifier for part in parts for r in part.recipients] == [
        f"u{n}" for n in range(recipients)
    ]
    for index, part in enumerate(parts, start=1):
        assert 1 <= len(part.recipients) <= max_recipients
        assert part.id == part_id("whole-1", index)
        assert part.part is not None
        assert (part.part.of, part.part.index, part.part.count) == ("whole-1", index, len(parts))
        # A part is a valid intent on its own: it travels and is replayed as one.
        assert Intent.model_validate(part.to_wire()) == part


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-24T09:00:00Z", 1_798_102_800_000),
        ("2026-12-24T10:00:00+01:00", 1_798_102_800_000),
        ("2026-12-24T09:00:00.250Z", 1_798_102_800_250),
        (1_798_102_800_000, 1_798_102_800_000),
    ],
)
def test_send_at_is_read_as_epoch_milliseconds(value: Any, expected: int) -> None:
    parsed = parse_intent({"recipients": ["a"], "text": "x", "sendAt": value})
    assert parsed.send_at == expected
    assert parsed.to_wire()["sendAt"] == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("tomorrow", "RFC 3339"),
        ("2026-12-24T09:00:00", "offset"),
        ("2026-12-24", "offset"),
        (1_798_102_800, "seconds"),
        (True, "boolean"),
        (1.5e12, "RFC 3339"),
    ],
)
def test_a_bad_send_at_is_refused_naming_the_field(value: Any, words: str) -> None:
    with pytest.raises(IntentRefused) as refused:
        parse_intent({"recipients": ["a"], "text": "x", "sendAt": value})
    [problem] = refused.value.problems
    assert problem.startswith("sendAt: ")
    assert words in problem


def test_admission_names_each_limit_broken() -> None:
    limits = Limits(max_recipients=2, max_intent_recipients=3, max_schedule_ms=1000)
    fine = parse_intent({"recipients": ["a", "b", "c"], "text": "x", "sendAt": NOW_MS + 1000})
    assert admission_problems(fine, limits, now_ms=NOW_MS) == []
    bad = parse_intent({"recipients": ["a", "b", "c", "d"], "text": "x", "sendAt": NOW_MS + 1001})
    with pytest.raises(IntentRefused) as refused:
        admit(bad, limits, now_ms=NOW_MS)
    first, second = refused.value.problems
    assert first.startswith("recipients: 4 recipients, more than the 3")
    assert second.startswith("sendAt: ")
    assert "DISPATCHER_MAX_SCHEDULE_DAYS" in second


def test_expire_time_counts_from_send_at() -> None:
    scheduled = parse_intent(
        {
            "recipients": ["a"],
            "text": "x",
            "expireTime": 60,
            "createdAt": NOW_MS - 3_600_000,
            "sendAt": NOW_MS - 10_000,
        }
    )
    assert remaining_expire_time(scheduled, now_ms=NOW_MS) == 50


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_an_intent_whose_send_at_is_ahead_is_scheduled_without_a_send() -> None:
    rig = Rig()
    result = run(rig.deliverer.attempt(intent(sendAt=NOW_MS + 60_000), 1))
    assert isinstance(result, Scheduled)
    assert (result.intent_id, result.send_at_ms) == ("intent-00001", NOW_MS + 60_000)
    assert rig.sender.sent == []
    assert rig.limiter.acquired == 0


def test_an_intent_due_within_the_slack_is_sent() -> None:
    rig = Rig()
    result = run(rig.deliverer.attempt(intent(sendAt=NOW_MS + SEND_AT_SLACK_MS), 1))
    assert isinstance(result, Sent)


def test_a_raw_intent_scheduled_too_far_ahead_is_dead_lettered_invalid() -> None:
    rig = Rig(limits=Limits(max_schedule_ms=1000))
    result = run(rig.deliverer.attempt(intent(sendAt=NOW_MS + 5000), 1))
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "sendAt" in result.detail


def test_a_large_intent_is_split_and_not_sent_whole() -> None:
    rig = Rig(limits=Limits(max_recipients=2))
    result = run(rig.deliverer.attempt(intent(recipients=["a", "b", "c", "d", "e"]), 1))
    assert isinstance(result, Split)
    assert result.recipients == 5
    assert [part["id"] for part in result.parts] == [
        "intent-00001_p1",
        "intent-00001_p2",
        "intent-00001_p3",
    ]
    assert [part["part"]["count"] for part in result.parts] == [3, 3, 3]
    assert rig.sender.sent == []


def test_a_part_is_never_split_again() -> None:
    rig = Rig(limits=Limits(max_recipients=1))
    part = intent(
        id="intent-00001_p2",
        recipients=["a", "b"],
        part={"of": "intent-00001", "index": 2, "count": 3},
    )
    result = run(rig.deliverer.attempt(part, 1))
    assert isinstance(result, Sent)
    assert rig.sender.sent[0][0]["messageRef"] == "intent-00001_p2"
    assert rig.receipts.parts_of == ["intent-00001"]


def test_a_raw_intent_with_too_many_recipients_is_dead_lettered_invalid() -> None:
    rig = Rig(limits=Limits(max_recipients=1, max_intent_recipients=2))
    result = run(rig.deliverer.attempt(intent(recipients=["a", "b", "c"]), 1))
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "DISPATCHER_MAX_INTENT_RECIPIENTS" in result.detail


def test_a_cancelled_intent_is_dropped_before_the_rate_limit() -> None:
    rig = Rig(cancels=FakeCancels("intent-00001"))
    result = run(rig.deliverer.attempt(intent(), 1))
    assert result == Cancelled("intent-00001")
    assert rig.limiter.acquired == 0
    assert rig.sender.sent == []


def test_a_part_of_a_cancelled_intent_is_dropped_and_marked() -> None:
    cancels = FakeCancels("whole-1")
    rig = Rig(cancels=cancels)
    part = intent(id="whole-1_p1", part={"of": "whole-1", "index": 1, "count": 2})
    result = run(rig.deliverer.attempt(part, 1))
    assert result == Cancelled("whole-1_p1")
    assert cancels.marked == [("whole-1_p1", NOW_MS)]


def test_a_cancel_the_worker_has_not_read_yet_is_caught_by_the_claim() -> None:
    rig = Rig(cancels=FakeCancels())
    rig.receipts.state = ClaimState.CANCELLED
    result = run(rig.deliverer.attempt(intent(), 1))
    assert result == Cancelled("intent-00001")
    assert rig.sender.sent == []


def test_a_split_that_would_copy_too_much_content_is_refused() -> None:
    attachment = {
        "filename": "leaflet.pdf",
        "contentType": "application/pdf",
        "data": "A" * (1024 * 1024),  # 1 MiB of base64
    }
    recipients = [f"u{n}" for n in range(10_000)]
    heavy = parse_intent({"recipients": recipients, "text": "x", "attachment": attachment})
    [problem] = admission_problems(heavy, Limits(), now_ms=NOW_MS)
    assert problem.startswith("recipients: 10000 recipients make 100 messages")
    assert "send a link" in problem
    # The same content to 60 messages' worth stays within the budget.
    lighter = parse_intent(
        {"recipients": recipients[:6_000], "text": "x", "attachment": attachment}
    )
    assert admission_problems(lighter, Limits(), now_ms=NOW_MS) == []
    # A single message carries its content once: no split, no budget.
    alone = parse_intent({"recipients": recipients[:100], "text": "x", "attachment": attachment})
    assert admission_problems(alone, Limits(), now_ms=NOW_MS) == []
