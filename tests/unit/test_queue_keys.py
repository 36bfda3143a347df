"""Queue key names and the pure helpers of the queue protocol (no Redis)."""

from __future__ import annotations

import orjson
import pytest
from dramatiq.common import dq_name, q_name
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.store.keys import Keys, canonical_queue_name, delay_queue_name
from dispatcher.store.queue import promoted_body, served_queues

QUEUE_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9._-]{0,20}", fullmatch=True)


def test_queue_keys_are_dramatiqs() -> None:
    """A dramatiq producer and broker write and read exactly these names."""
    keys = Keys("ns")
    assert keys.queue("notifications") == "ns:notifications"
    assert keys.queue_messages("notifications") == "ns:notifications.msgs"
    assert keys.delay_queue("notifications") == "ns:notifications.DQ"
    assert keys.delay_queue_messages("notifications") == "ns:notifications.DQ.msgs"
    assert keys.queue_messages("notifications.DQ") == "ns:notifications.DQ.msgs"
    assert keys.acks("w-1", "notifications.DQ") == "ns:__acks__.w-1.notifications.DQ"
    assert keys.heartbeats == "ns:__heartbeats__"
    assert keys.workers == "ns:__workers__"


@given(QUEUE_NAMES)
def test_queue_names_agree_with_dramatiq(name: str) -> None:
    assert delay_queue_name(name) == dq_name(name)
    assert canonical_queue_name(name) == q_name(name)
    assert delay_queue_name(delay_queue_name(name)) == delay_queue_name(name)


def test_the_delay_queue_of_a_delay_queue_is_itself() -> None:
    assert Keys("ns").delay_queue("notifications.DQ") == "ns:notifications.DQ"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (b'["q", "q.DQ"]', ["q", "q.DQ"]),
        (b"[]", []),
        (None, ("mine", "mine.DQ")),
        (b"not json", ("mine", "mine.DQ")),
        (b'{"q": 1}', ("mine", "mine.DQ")),
        (b'["q", 2]', ("mine", "mine.DQ")),
    ],
)
def test_a_registry_entry_names_the_queues_or_falls_back(
    entry: bytes | None, expected: object
) -> None:
    """A worker missing from the registry, or with an entry unreadable, is swept from ours."""
    assert served_queues(entry, default=("mine", "mine.DQ")) == expected


def test_a_promoted_message_loses_its_eta_and_takes_its_new_id() -> None:
    delayed = orjson.dumps(
        {
            "queue_name": "q.DQ",
            "actor_name": "deliver",
            "args": [{"id": "x"}],
            "kwargs": {"attempt": 2},
            "options": {"eta": 123, "redis_message_id": "old", "other": True},
            "message_id": "m",
        }
    )
    promoted = orjson.loads(promoted_body(delayed, "q", "new"))
    assert promoted["queue_name"] == "q"
    assert promoted["options"] == {"other": True, "redis_message_id": "new"}
    assert promoted["kwargs"] == {"attempt": 2}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"options": 3}', b"{}"])
def test_an_unreadable_delayed_message_is_promoted_as_it_is(body: bytes) -> None:
    assert promoted_body(body, "q", "new") == body
