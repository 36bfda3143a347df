"""What intake admits beyond an intent's own schema: limits that are settings. Pure.

The schema (`dispatcher.intents`) holds what Catapush documents; these limits are the
deployment's: how many recipients one intent may carry, and how far ahead it may be
scheduled. Every door checks them (Python, CLI, HTTP), and the worker checks them again for
intents that came from a raw Redis producer, which no intake saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from dispatcher.errors import IntentRefused
from dispatcher.fanout import needs_split, part_count
from dispatcher.intents import Intent

DEFAULT_MAX_RECIPIENTS = 100
DEFAULT_MAX_INTENT_RECIPIENTS = 10_000
DEFAULT_MAX_SCHEDULE_DAYS = 30.0
MS_PER_DAY = 86_400_000
# Every part of a split intent carries its content (text, attachment, data); all the parts
# together may hold at most this much of it, so that one campaign with an attachment cannot
# fill Redis, or a worker's memory while it writes the parts.
MAX_FANOUT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    # Recipients per Catapush message; a larger intent is sent as parts of this size.
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    # Recipients one intent may carry at all.
    max_intent_recipients: int = DEFAULT_MAX_INTENT_RECIPIENTS
    # How far ahead of now `sendAt` may lie.
    max_schedule_ms: int = round(DEFAULT_MAX_SCHEDULE_DAYS * MS_PER_DAY)


def admission_problems(intent: Intent, limits: Limits, *, now_ms: int) -> list[str]:
    """Each way the intent breaks `limits`, as `<field>: <reason>`; empty if none."""
    problems: list[str] = []
    count = len(intent.recipients)
    if count > limits.max_intent_recipients:
        problems.append(
            f"recipients: {count} recipients, more than the {limits.max_intent_recipients} "
            "one intent may carry (DISPATCHER_MAX_INTENT_RECIPIENTS); split it into several "
            "intents"
        )
    elif needs_split(intent, limits.max_recipients):
        parts = part_count(count, limits.max_recipients)
        shared = len(orjson.dumps(intent.model_dump(mode="json", exclude={"recipients"})))
        if parts * shared > MAX_FANOUT_BYTES:
            problems.append(
                f"recipients: {count} recipients make {parts} messages (at most "
                f"{limits.max_recipients} each, DISPATCHER_MAX_RECIPIENTS), each carrying the "
                f"{shared} bytes of content: {parts * shared} bytes in all, more than the "
                f"{MAX_FANOUT_BYTES} allowed; send a link rather than an attachment, or fewer "
                "recipients"
            )
    if intent.send_at is not None and intent.send_at - now_ms > limits.max_schedule_ms:
        days = limits.max_schedule_ms / MS_PER_DAY
        problems.append(
            f"sendAt: is {(intent.send_at - now_ms) / MS_PER_DAY:.1f} days ahead, more than the "
            f"{days:g} days allowed (DISPATCHER_MAX_SCHEDULE_DAYS)"
        )
    return problems


def admit(intent: Intent, limits: Limits, *, now_ms: int) -> Intent:
    """The intent, if it keeps within `limits`; raises `IntentRefused` naming each field."""
    problems = admission_problems(intent, limits, now_ms=now_ms)
    if problems:
        raise IntentRefused(problems)
    return intent
