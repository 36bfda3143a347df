"""Storing Catapush status callbacks: one list per intent, each callback stored once.

Catapush may deliver a callback more than once (a retry after a timeout on its side, a proxy
replaying a request). Each callback is fingerprinted by its content (message, recipient,
status, timestamp and references); a fingerprint seen within `SEEN_TTL_S` is not stored
again. The check and the write are one script, so two copies arriving together store one.

`store_callback` is the one place a checked callback is written: whatever else must happen
to a stored callback belongs there.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson

from dispatcher.callbacks import CallbackEvent
from dispatcher.store.keys import Keys

# A message has a handful of lifecycle events per recipient; 100 keeps the story of a
# message to a few recipients while bounding what a flood of callbacks can store.
CALLBACK_HISTORY: Final = 100
# As long as a receipt, so `dispatcher status` shows both for the same window; the
# default of DISPATCHER_STATUS_TTL_DAYS.
CALLBACK_TTL_S: Final = 30 * 24 * 3600
# Redeliveries come within minutes or hours; a day bounds the keys the check keeps.
SEEN_TTL_S: Final = 24 * 3600

# KEYS: seen marker, callback list. ARGV: event JSON, history, list ttl s, seen ttl s.
# Returns 1 when stored, 0 when the same callback was stored already.
_STORE = """
if not redis.call('set', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('rpush', KEYS[2], ARGV[1])
redis.call('ltrim', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('expire', KEYS[2], ARGV[3])
return 1
"""


def fingerprint(event: CallbackEvent) -> str:
    """Names a callback by its content: two deliveries of one callback share it, two
    callbacks that differ in any field do not."""
    content = orjson.dumps(
        {**event.stored(), "messageRef": event.message_ref, "applicationId": event.application_id},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(content).hexdigest()[:32]


def list_key(keys: Keys, event: CallbackEvent) -> str:
    if event.message_ref is not None:
        return keys.callbacks(event.message_ref)
    return keys.callbacks_by_message_id(event.message_id)


async def store_callback(
    redis: Any, keys: Keys, event: CallbackEvent, *, ttl_s: int = CALLBACK_TTL_S
) -> bool:
    """Store the event in its intent's list (or its message's, without `messageRef`), kept
    `ttl_s` after the last callback; False when the same callback was stored already.
    Raises Redis errors as they come."""
    stored = await redis.eval(
        _STORE,
        2,
        keys.callback_seen(fingerprint(event)),
        list_key(keys, event),
        orjson.dumps(event.stored()),
        CALLBACK_HISTORY,
        ttl_s,
        min(SEEN_TTL_S, ttl_s),
    )
    return bool(stored)
