"""Queued messages, in dramatiq's format: writing one, and reading one back. Pure.

Anything may sit on the queue: producers in any language write raw Redis commands. A body
that is not a dramatiq message for the deliver actor on this queue, with exactly one
argument (the intent), is `Unreadable`, with the problem named; the worker dead-letters it
with its raw text instead of crashing or dropping it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from dramatiq.common import dq_name, q_name

DELIVER_ACTOR = "deliver"
RAW_TEXT_LIMIT = 100_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def message_body(
    queue_name: str, intent: Any, *, attempt: int, message_id: str, eta_ms: int | None = None
) -> bytes:
    """A dramatiq message for the deliver actor, as dramatiq's JSON encoder writes it."""
    options: dict[str, Any] = {"redis_message_id": message_id}
    if eta_ms is not None:
        options["eta"] = eta_ms
    return orjson.dumps(
        {
            "queue_name": queue_name,
            "actor_name": DELIVER_ACTOR,
            "args": [intent],
            "kwargs": {} if attempt == 1 else {"attempt": attempt},
            "options": options,
            "message_id": message_id,
            "message_timestamp": now_ms(),
        }
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to write: its id, the queue it goes on and its body."""

    message_id: str
    queue_name: str
    body: bytes


def outgoing(queue_name: str, intent: Any, *, attempt: int, delay_ms: int) -> Outgoing:
    """The message for an attempt; a delayed one waits on dramatiq's delay queue until its eta."""
    message_id = str(uuid.uuid4())
    if delay_ms > 0:
        target = dq_name(queue_name)
        body = message_body(
            target, intent, attempt=attempt, message_id=message_id, eta_ms=now_ms() + delay_ms
        )
    else:
        target = queue_name
        body = message_body(target, intent, attempt=attempt, message_id=message_id)
    return Outgoing(message_id, target, body)


def scheduled_value(message: Outgoing) -> bytes:
    """How a message waits on the schedule: its id, a line break, its body (see `queue`)."""
    return message.message_id.encode() + b"\n" + message.body


@dataclass(frozen=True, slots=True)
class Queued:
    redis_id: str
    intent: Any
    attempt: int
    eta_ms: int | None


@dataclass(frozen=True, slots=True)
class Unreadable:
    redis_id: str
    raw: str
    problem: str


def read_message(queue_name: str, redis_id: str, body: bytes) -> Queued | Unreadable:
    """Decode the body stored under `redis_id`, fetched from `queue_name`."""

    def unreadable(problem: str) -> Unreadable:
        raw = body.decode("utf-8", errors="replace")[:RAW_TEXT_LIMIT]
        return Unreadable(redis_id, raw, problem)

    if not body:
        return unreadable("no message body is stored under this id")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return unreadable(f"not a dramatiq message: not valid JSON ({exc})")
    if not isinstance(data, dict):
        return unreadable("not a dramatiq message: not a JSON object")
    actor = data.get("actor_name")
    if actor != DELIVER_ACTOR:
        return unreadable(f"actor_name: {actor!r} is unknown, expected {DELIVER_ACTOR!r}")
    queue = data.get("queue_name")
    if not isinstance(queue, str) or q_name(queue) != q_name(queue_name):
        return unreadable(f"queue_name: {queue!r} does not match the queue {q_name(queue_name)!r}")
    args, kwargs = data.get("args"), data.get("kwargs", {})
    options = data.get("options", {})
    if not isinstance(args, list):
        return unreadable("args: must be a list holding the intent")
    if len(args) != 1:
        return unreadable(f"args: expected one argument, the intent; got {len(args)}")
    if not isinstance(kwargs, dict):
        return unreadable("kwargs: must be a JSON object")
    if not isinstance(options, dict):
        return unreadable("options: must be a JSON object")
    attempt = kwargs.get("attempt", 1)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        attempt = 1
    eta = options.get("eta")
    eta_ms = int(eta) if isinstance(eta, int | float) and not isinstance(eta, bool) else None
    return Queued(redis_id, args[0], attempt, eta_ms)
