"""Where an intent stands, read from the receipts, the dead-letter store, the cancel marks,
the schedule and the status callbacks Catapush sent for it. An intent split into parts
(`dispatcher.fanout`) is reported as a whole and part by part."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis

from dispatcher.fanout import part_id, read_parts_record
from dispatcher.lanes import LANES, lane_queue
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import ReceiptReader

# Messages read per HSCAN call while looking for an intent on the queues.
SCAN_BATCH = 1000


def find_queued(client: redis.Redis, messages_key: str, intent_id: str) -> dict[str, Any] | None:
    """The queued message carrying `intent_id` in the hash `messages_key`, if there is one.

    Scans the bodies: an ops command may take a moment on a long queue, and in exchange
    intake writes nothing beyond the message itself.
    """
    needle = re.compile(rb'"id"\s*:\s*"' + re.escape(intent_id.encode()) + rb'"')
    for _, body in client.hscan_iter(messages_key, count=SCAN_BATCH):
        if needle.search(body) is None:
            continue
        try:
            message: Any = orjson.loads(body)
            intent = message["args"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            continue
        if isinstance(intent, dict) and intent.get("id") == intent_id:
            return cast(dict[str, Any], message)
    return None


def _waiting(
    client: redis.Redis, keys: Keys, queue_name: str, intent_id: str
) -> dict[str, Any] | None:
    for lane in LANES:
        found = _waiting_in(client, keys, lane_queue(queue_name, lane), intent_id)
        if found is not None:
            return found | {"lane": lane}
    return None


def _waiting_in(
    client: redis.Redis, keys: Keys, queue_name: str, intent_id: str
) -> dict[str, Any] | None:
    send_at = client.zscore(keys.schedule(queue_name), intent_id)
    if send_at is not None:
        return {"id": intent_id, "state": "scheduled", "send_at_ms": int(send_at)}
    queued = find_queued(client, f"{keys.queue(queue_name)}.msgs", intent_id)
    if queued is not None:
        return {"id": intent_id, "state": "queued", "attempt": _attempt(queued)}
    delayed = find_queued(client, f"{keys.delay_queue(queue_name)}.msgs", intent_id)
    if delayed is not None:
        eta = delayed.get("options", {}).get("eta")
        report = {"id": intent_id, "state": "retrying", "attempt": _attempt(delayed), "eta_ms": eta}
        if isinstance(eta, int):
            report["eta"] = iso_from_ms(eta)
        return report
    return None


def _attempt(message: dict[str, Any]) -> int:
    kwargs = message.get("kwargs")
    attempt = kwargs.get("attempt", 1) if isinstance(kwargs, dict) else 1
    return attempt if isinstance(attempt, int) else 1


def _delivery(
    client: redis.Redis, keys: Keys, queue_name: str, intent_id: str, *, scan: bool = True
) -> dict[str, Any]:
    receipt = ReceiptReader(client, keys).get(intent_id)
    if receipt is not None:
        return {
            "id": intent_id,
            "state": "sent",
            "message_id": receipt.message_id,
            "sent_at": receipt.sent_at,
            "attempts": receipt.attempts,
        }
    entry = DeadLetters(client, keys).get(intent_id)
    if entry is not None:
        return {
            "id": intent_id,
            "state": "dead",
            "reason": entry.reason,
            "status_code": entry.status_code,
            "title": entry.title,
            "detail": entry.detail,
            "dead_at": entry.dead_at,
        }
    cancelled_at = client.zscore(keys.cancelled, intent_id)
    parts = _parts(client, keys, intent_id)
    if parts is not None:
        return _whole(
            client, keys, queue_name, intent_id, parts, cancelled=cancelled_at is not None
        )
    if cancelled_at is not None:
        return {"id": intent_id, "state": "cancelled", "cancelled_at_ms": int(cancelled_at)}
    if client.exists(keys.claim(intent_id)):
        return {"id": intent_id, "state": "sending"}
    if not scan:
        # A part: its whole was split, so it waits on a queue (a scan per part would read
        # a long queue once for each of them).
        return {"id": intent_id, "state": "waiting"}
    waiting = _waiting(client, keys, queue_name, intent_id)
    return waiting if waiting is not None else {"id": intent_id, "state": "unknown"}


def _parts(client: redis.Redis, keys: Keys, intent_id: str) -> dict[str, Any] | None:
    return read_parts_record(cast(bytes | None, client.get(keys.parts(intent_id))))


def _whole(
    client: redis.Redis,
    keys: Keys,
    queue_name: str,
    intent_id: str,
    record: dict[str, Any],
    *,
    cancelled: bool,
) -> dict[str, Any]:
    """A split intent: the state of each part, and of the whole (one state if every part
    is in it, else `partial`). Once the whole is cancelled, no part still waiting is sent."""
    parts = []
    for index in range(1, record["count"] + 1):
        part = _delivery(client, keys, queue_name, part_id(intent_id, index), scan=False)
        if cancelled and part["state"] == "waiting":
            part["state"] = "cancelled"
        parts.append(part)
    states = {part["state"] for part in parts}
    report: dict[str, Any] = {
        "id": intent_id,
        "state": states.pop() if len(states) == 1 else "partial",
        "recipients": record.get("recipients"),
        "split_at_ms": record.get("split_at_ms"),
        "parts_by_state": _count_states(parts),
        "parts": parts,
    }
    return report


def _count_states(parts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in parts:
        counts[part["state"]] = counts.get(part["state"], 0) + 1
    return counts


def callback_events(client: redis.Redis, keys: Keys, intent_id: str) -> list[Any]:
    """The status callbacks stored for an intent (its id is the `messageRef`), oldest first."""
    events: list[Any] = []
    for raw in cast(list[bytes], client.lrange(keys.callbacks(intent_id), 0, -1)):
        try:
            events.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            # Only the server writes these lists; a foreign entry is shown, not fatal.
            events.append(raw.decode("utf-8", "replace"))
    return events


def intent_status(client: redis.Redis, settings: Settings, intent_id: str) -> dict[str, Any]:
    """The state (sent, dead, cancelled, sending, scheduled, queued, retrying, partial for a
    split intent whose parts differ, waiting for a part not yet sent, or unknown) and every
    callback stored for the intent.

    The state comes from the receipt and the dead letter only: callbacks tell what happened
    on the devices, and an intent may have callbacks but no receipt (a worker killed between
    Catapush's answer and the receipt, or a receipt that expired first).
    """
    keys = Keys(settings.namespace)
    report = _delivery(client, keys, settings.queue, intent_id)
    report["callbacks"] = callback_events(client, keys, intent_id)
    return report


def is_known(report: dict[str, Any]) -> bool:
    """Whether anything at all is recorded for the intent."""
    return report["state"] != "unknown" or bool(report.get("callbacks"))


def _callback_line(event: Any) -> str:
    if not isinstance(event, dict):
        return f"callback: {event}"
    shown = ("messageId", "recipientRef", "fallbackRef")
    extra = " ".join(f"{key}={event[key]}" for key in shown if key in event)
    head = f"callback: {event.get('timestamp', '-')} {event.get('status', '-')} "
    return f"{head}{event.get('recipient', '-')} {extra}".rstrip()


def iso_from_ms(epoch_ms: int) -> str:
    """`2026-03-01T12:00:00.250Z`: an epoch-milliseconds time as people read it, in UTC."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _human_fields(report: dict[str, Any]) -> dict[str, Any]:
    """The report's fields, each epoch-milliseconds time (`*_ms`) shown once, as a time."""
    fields: dict[str, Any] = {}
    for key, value in report.items():
        if key in {"callbacks", "parts"}:
            continue
        if key == "parts_by_state":
            fields["parts"] = ", ".join(f"{count} {state}" for state, count in value.items())
            continue
        if key.endswith("_ms") and isinstance(value, int) and not isinstance(value, bool):
            name = key.removesuffix("_ms")
            fields[name] = report.get(name) or iso_from_ms(value)
        elif key not in fields:
            fields[key] = value
    return fields


def format_status(report: dict[str, Any]) -> list[str]:
    """The report for humans: `key: value` lines (times in UTC, ISO 8601), then one line per
    callback event."""
    lines = [f"{key}: {value}" for key, value in _human_fields(report).items()]
    for part in report.get("parts", []):
        shown = " ".join(
            f"{key}={value}"
            for key, value in _human_fields(part).items()
            if key not in {"id", "state"} and value is not None
        )
        lines.append(f"part {part['id']}: {part['state']} {shown}".rstrip())
    lines.extend(_callback_line(event) for event in report.get("callbacks", []))
    return lines
