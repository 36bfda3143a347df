"""Fan-out: an intent with more recipients than one message should carry, as parts. Pure.

Catapush documents no limit on recipients per message, but one request with ten thousand
of them is one failure for all ten thousand. The worker splits such an intent into parts of
at most `DISPATCHER_MAX_RECIPIENTS`, each its own queued intent with its own id, so each is
claimed, receipted, retried and dead-lettered on its own, and a replay sends one part only.

A part's id is its `messageRef` at Catapush and its idempotency key here. It is derived
from the intent's id and the part's number alone, so a split done again (a redelivery
after a crash) gives the same ids and nothing goes out twice. The form is `<id>_p<n>`;
when that would pass the 50 characters a `messageRef` may have, the id is shortened and a
digest of it keeps distinct ids apart: `<start of id>-<10 hex>_p<n>`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from dispatcher.intents import Intent, Part

PART_MARK = "_p"
MAX_ID_LENGTH = 50
DIGEST_HEX = 10
# How long the record of a split is kept for `dispatcher status`: past a receipt's default
# retention, so the parts' receipts go first.
PARTS_RECORD_TTL_S = 45 * 86_400


def part_id(intent_id: str, index: int) -> str:
    """The id of part number `index` (from 1) of the intent `intent_id`."""
    suffix = f"{PART_MARK}{index}"
    if len(intent_id) + len(suffix) <= MAX_ID_LENGTH:
        return intent_id + suffix
    digest = hashlib.blake2b(intent_id.encode(), digest_size=DIGEST_HEX // 2).hexdigest()
    keep = MAX_ID_LENGTH - len(suffix) - len(digest) - 1
    return f"{intent_id[:keep]}-{digest}{suffix}"


def part_count(recipients: int, max_recipients: int) -> int:
    return -(-recipients // max_recipients)


def needs_split(intent: Intent, max_recipients: int) -> bool:
    """Whether the intent is a whole one with more recipients than a message carries."""
    return intent.part is None and len(intent.recipients) > max_recipients


def split(intent: Intent, max_recipients: int) -> list[Intent]:
    """The parts of `intent` (which has its id), in order, recipients kept in their order."""
    if intent.id is None:
        raise ValueError("an intent is split only once it has its id")
    recipients = intent.recipients
    count = part_count(len(recipients), max_recipients)
    return [
        intent.model_copy(
            update={
                "id": part_id(intent.id, index),
                "recipients": recipients[(index - 1) * max_recipients : index * max_recipients],
                "part": Part(of=intent.id, index=index, count=count),
            }
        )
        for index in range(1, count + 1)
    ]


def parts_record(count: int, recipients: int, split_at_ms: int) -> bytes:
    """The record of a split that `status` and cancel read: the part ids follow from the
    count."""
    return orjson.dumps({"count": count, "recipients": recipients, "split_at_ms": split_at_ms})


def read_parts_record(raw: bytes | str | None) -> dict[str, Any] | None:
    """A record `parts_record` wrote, its `count` an int; None if absent or unreadable."""
    if raw is None:
        return None
    try:
        record: Any = orjson.loads(raw)
        return {**record, "count": int(record["count"])}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
