"""Reading and writing queued messages in dramatiq's format (pure, no Redis)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.messages import DELIVER_ACTOR, Queued, Unreadable, message_body, read_message

INTENT = {"id": "order-1", "recipients": ["alice"], "text": "hi"}


def body(**fields: object) -> bytes:
    message = {
        "queue_name": "notifications",
        "actor_name": DELIVER_ACTOR,
        "args": [INTENT],
        "kwargs": {},
        "options": {},
        "message_id": "m-1",
        "message_timestamp": 0,
    }
    message.update(fields)
    return orjson.dumps(message)


def test_a_written_message_reads_back_as_the_same_delivery() -> None:
    """message_body and read_message agree on intent, attempt and eta."""
    written = message_body("notifications.DQ", INTENT, attempt=3, message_id="x", eta_ms=1234)
    assert read_message("notifications.DQ", "x", written) == Queued("x", INTENT, 3, 1234)


def test_a_first_attempt_carries_no_kwargs() -> None:
    """Attempt 1 is written without kwargs, as a plain dramatiq producer would."""
    assert orjson.loads(message_body("q", INTENT, attempt=1, message_id="x"))["kwargs"] == {}


def test_a_plain_dramatiq_message_is_a_first_attempt() -> None:
    """A message from any dramatiq producer, with no attempt, is attempt 1 with no eta."""
    assert read_message("notifications", "r1", body()) == Queued("r1", INTENT, 1, None)


def test_the_delay_queue_shares_the_queue_name() -> None:
    """A message for `notifications` read from `notifications.DQ` is accepted."""
    assert isinstance(read_message("notifications.DQ", "r1", body()), Queued)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "no message body is stored under this id"),
        (b"not json {", "not a dramatiq message: not valid JSON"),
        (b"[1, 2]", "not a dramatiq message: not a JSON object"),
        (body(actor_name="send_email"), "actor_name: 'send_email' is unknown"),
        (body(queue_name="emails"), "queue_name: 'emails' does not match the queue"),
        (body(args={"id": "x"}), "args: must be a list holding the intent"),
        (body(args=[]), "args: expected one argument, the intent; got 0"),
        (body(args=[INTENT, INTENT]), "args: expected one argument, the intent; got 2"),
        (body(kwargs=[1]), "kwargs: must be a JSON object"),
        (body(options="fast"), "options: must be a JSON object"),
    ],
)
def test_foreign_bodies_are_unreadable_with_the_problem_named(raw: bytes, problem: str) -> None:
    """Each kind of foreign message is Unreadable, keeps its raw text, and names the fault."""
    message = read_message("notifications", "r9", raw)
    assert isinstance(message, Unreadable)
    assert message.problem.startswith(problem)
    assert message.raw == raw.decode()
    assert message.redis_id == "r9"


@pytest.mark.parametrize("attempt", [0, -1, "2", True, 1.5, None])
def test_a_nonsense_attempt_counts_as_the_first(attempt: object) -> None:
    """An attempt that is not a positive integer never breaks the budget: it reads as 1."""
    message = read_message("notifications", "r1", body(kwargs={"attempt": attempt}))
    assert isinstance(message, Queued)
    assert message.attempt == 1


@given(st.binary(max_size=300))
def test_any_bytes_read_as_a_delivery_or_an_unreadable_never_an_exception(raw: bytes) -> None:
    """Whatever a foreign producer writes, reading it never raises."""
    assert isinstance(read_message("notifications", "r1", raw), Queued | Unreadable)


def test_a_huge_raw_text_is_kept_up_to_the_limit() -> None:
    """The raw text of an unreadable message is truncated to a bounded size."""
    message = read_message("notifications", "r1", b"x" * 200_000)
    assert isinstance(message, Unreadable)
    assert len(message.raw) == 100_000
