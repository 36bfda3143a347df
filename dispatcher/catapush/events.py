"""Events producers act on, on a capped Redis stream `<namespace>:events`.

Catapush reports identifiers that can no longer receive pushes (`IdentifierNotFound`: no such
user in the app; `iOSErrorInvalidToken` / `AndroidErrorInvalidToken`: the device's push token
is dead, the app was removed) only as status callbacks. Each one becomes one stream entry
with `type`, `identifier`, `status`, `messageId`, `intent_id` (the messageRef; empty without
one), `applicationId` and `timestamp`. Producers read the stream with XREAD or a consumer
group.

Catapush may send a callback twice: an entry is added only if no entry for the same
messageId, status and identifier was added within `DEDUP_TTL_S`. The check and the XADD are
one script, so two copies arriving at once add one entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from dispatcher.callbacks import CallbackEvent
from dispatcher.store.keys import Keys

# Catapush status -> event type.
EVENT_TYPES: Final[Mapping[str, str]] = {
    "IdentifierNotFound": "identifier_not_found",
    "iOSErrorInvalidToken": "invalid_push_token",
    "AndroidErrorInvalidToken": "invalid_push_token",
}
# About this many entries are kept (MAXLEN ~ trims whole nodes, so a few more may stay).
DEFAULT_STREAM_MAXLEN: Final = 100_000
# Repeats of a callback come within minutes or hours; a week bounds the markers kept.
DEDUP_TTL_S: Final = 7 * 24 * 3600

# KEYS: seen marker, stream. ARGV: marker ttl s, maxlen, then field, value, ...
# Returns the new entry's id, or nil when the event was added already.
_PUBLISH = """
if not redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
return redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
"""


def event_fields(event: CallbackEvent) -> dict[str, str] | None:
    """The stream entry for a callback, or None when its status is not an event."""
    kind = EVENT_TYPES.get(event.status)
    if kind is None:
        return None
    return {
        "type": kind,
        "identifier": event.recipient,
        "status": event.status,
        "messageId": event.message_id,
        "intent_id": event.message_ref or "",
        "applicationId": event.application_id,
        "timestamp": event.timestamp,
    }


def dedup_digest(fields: Mapping[str, str]) -> str:
    # NUL cannot occur in a callback value that passed parsing as text, so joins are unique.
    joined = "\0".join((fields["messageId"], fields["status"], fields["identifier"]))
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:32]


async def publish_event(
    redis: Any, keys: Keys, event: CallbackEvent, *, maxlen: int = DEFAULT_STREAM_MAXLEN
) -> str | None:
    """Add the callback's event to the stream; the entry id, or None when the callback is
    not an event or its event is on the stream already. Raises Redis errors as they come,
    so the callback can be answered 503 and sent again."""
    fields = event_fields(event)
    if fields is None:
        return None
    args: list[str | int] = [DEDUP_TTL_S, maxlen]
    for name, value in fields.items():
        args += [name, value]
    entry = await redis.eval(_PUBLISH, 2, keys.event_seen(dedup_digest(fields)), keys.events, *args)
    if entry is None:
        return None
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def decode_entry(entry_id: Any, fields: Mapping[Any, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    return {"id": text(entry_id), **{text(k): text(v) for k, v in fields.items()}}
