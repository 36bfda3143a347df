"""Cancel: stop intents that have not gone out, wherever they wait.

A cancel writes the intent id on one sorted set (`Keys.cancelled`, id -> when). Nothing has
to be found and removed from a queue: every copy of the intent, queued, retrying, scheduled,
or a part of it split later, meets the mark before it is sent, at the latest in the claim,
which is atomic with the receipt check. So an intent is either sent or cancelled, never both,
and a cancel that races the producer's enqueue still holds. A scheduled intent is also taken
off the schedule at once, since its id is known there.

Workers keep the cancelled ids in memory (`CancelWatch`, read again every second), so a
cancelled campaign does not spend the rate limit on messages that will not go out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.exceptions import RedisError

from dispatcher.fanout import part_id, read_parts_record
from dispatcher.lanes import LANES, lane_queue
from dispatcher.logs import get_logger
from dispatcher.settings import Settings
from dispatcher.store.connection import RedisTarget, sync_redis_for, translate_target
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import Receipt

log = get_logger(__name__)

# How often a worker reads the cancelled ids again.
WATCH_INTERVAL_S = 1.0
# Marks older than this are dropped when a new one is written: by then no copy can remain
# (a receipt's retention, or the longest schedule plus a week of retries, whichever is
# longer).
MIN_KEEP_MS = 7 * 86_400_000

# Ids cancelled per batch of round trips.
CANCEL_BATCH = 1_000

# KEYS: cancelled, receipt, claim, then schedule and schedule.msgs of each lane.
# ARGV: intent id, keep ms. Returns {state, detail}.
_CANCEL = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local receipt = redis.call('get', KEYS[2])
if receipt then return {'sent', receipt} end
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local unscheduled = 0
for i = 4, #KEYS, 2 do
    if redis.call('zrem', KEYS[i], ARGV[1]) == 1 then
        redis.call('hdel', KEYS[i + 1], ARGV[1])
        unscheduled = 1
    end
end
if redis.call('exists', KEYS[3]) == 1 then return {'sending', ''} end
return {'cancelled', tostring(unscheduled)}
"""

CancelState = Literal["cancelled", "sent", "sending"]


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What a cancel did to one intent.

    `cancelled`: it will not be sent (for a split intent: none of its unsent parts).
    `sent`: it went out before (for a split intent: every part did); nothing was stopped.
    `sending`: a worker was sending it at that moment; it may have gone out.
    """

    intent_id: str
    state: CancelState
    message_id: str | None = None
    unscheduled: bool = False
    parts: int | None = None
    parts_sent: int | None = None

    @property
    def stopped(self) -> bool:
        return self.state == "cancelled"

    def describe(self) -> str:
        if self.state == "sent":
            if self.parts is not None:
                return f"{self.intent_id}: not cancelled: all {self.parts} parts were sent already"
            return f"{self.intent_id}: not cancelled: sent already (messageId {self.message_id})"
        if self.state == "sending":
            return (
                f"{self.intent_id}: cancel recorded, but a worker was sending it at that "
                "moment; `dispatcher status` tells whether it went out"
            )
        if self.parts is not None and self.parts_sent:
            return (
                f"{self.intent_id}: cancelled the unsent parts; {self.parts_sent} of "
                f"{self.parts} parts were sent already"
            )
        if self.unscheduled:
            return f"{self.intent_id}: cancelled (taken off the schedule)"
        return f"{self.intent_id}: cancelled"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.intent_id, "state": self.state}
        if self.message_id is not None:
            data["message_id"] = self.message_id
        if self.parts is not None:
            data["parts"] = self.parts
            data["parts_sent"] = self.parts_sent
        return data


def keep_ms(receipt_ttl_s: int, max_schedule_ms: int) -> int:
    return max(receipt_ttl_s * 1000, max_schedule_ms + MIN_KEEP_MS)


class Canceller:
    """Cancels intents on one Redis (synchronous: the CLI, Python callers, the HTTP API)."""

    def __init__(self, client: redis.Redis, keys: Keys, queue_name: str, *, keep: int) -> None:
        self._client = client
        self._keys = keys
        self._queue_name = queue_name
        self._keep_ms = keep
        self._script = client.register_script(_CANCEL)

    def cancel(self, intent_id: str) -> Cancellation:
        """Stop `intent_id` unless it went out already; see `Cancellation`."""
        [answer] = self.cancel_many([intent_id])
        return answer

    def cancel_many(self, intent_ids: Sequence[str]) -> list[Cancellation]:
        """`cancel` for each id, a batch at a time in three round trips per batch."""
        answers: list[Cancellation] = []
        for start in range(0, len(intent_ids), CANCEL_BATCH):
            answers += self._cancel_batch(intent_ids[start : start + CANCEL_BATCH])
        return answers

    def _cancel_batch(self, intent_ids: Sequence[str]) -> list[Cancellation]:
        with self._client.pipeline(transaction=False) as pipe:
            for intent_id in intent_ids:
                pipe.get(self._keys.parts(intent_id))
            records = pipe.execute()
        # Split intents: how many parts each has.
        counts: dict[str, int] = {}
        for intent_id, raw in zip(intent_ids, records, strict=True):
            record = read_parts_record(raw)
            if record is not None:
                counts[intent_id] = record["count"]
        sent: dict[str, int] = {}
        if counts:
            with self._client.pipeline(transaction=False) as pipe:
                for intent_id, count in counts.items():
                    pipe.mget(
                        [
                            self._keys.receipt(part_id(intent_id, index))
                            for index in range(1, count + 1)
                        ]
                    )
                for intent_id, receipts in zip(counts, pipe.execute(), strict=True):
                    sent[intent_id] = sum(receipt is not None for receipt in receipts)
        done = {intent_id for intent_id, count in counts.items() if sent[intent_id] == count}
        pending = [intent_id for intent_id in intent_ids if intent_id not in done]
        with self._client.pipeline(transaction=False) as pipe:
            for intent_id in pending:
                self._script(
                    keys=self._script_keys(intent_id), args=[intent_id, self._keep_ms], client=pipe
                )
            outcomes = dict(zip(pending, pipe.execute(), strict=True))
        answers = []
        for intent_id in intent_ids:
            parts = counts.get(intent_id)
            parts_sent = sent.get(intent_id)
            if intent_id in done:
                answers.append(Cancellation(intent_id, "sent", parts=parts, parts_sent=parts_sent))
                continue
            state, detail = (_text(item) for item in outcomes[intent_id])
            if state == "sent":
                message_id = Receipt.from_json(detail).message_id
                answers.append(Cancellation(intent_id, "sent", message_id=message_id))
            elif state == "sending":
                answers.append(Cancellation(intent_id, "sending"))
            else:
                answers.append(
                    Cancellation(
                        intent_id,
                        "cancelled",
                        unscheduled=detail == "1",
                        parts=parts,
                        parts_sent=parts_sent,
                    )
                )
        return answers

    def _script_keys(self, intent_id: str) -> list[str]:
        keys = [self._keys.cancelled, self._keys.receipt(intent_id), self._keys.claim(intent_id)]
        for lane in LANES:
            queue = lane_queue(self._queue_name, lane)
            keys += [self._keys.schedule(queue), self._keys.schedule_messages(queue)]
        return keys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CancelWatch:
    """A worker's copy of the cancelled ids, read again every `WATCH_INTERVAL_S`.

    Only a shortcut: the claim checks the mark in Redis anyway, so an id cancelled since the
    last read is still never sent; it only spends a rate slot first.
    """

    def __init__(self, client: Any, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._ids: set[str] = set()
        self._since: float = float("-inf")

    def is_cancelled(self, intent_id: str, part_of: str | None = None) -> bool:
        return intent_id in self._ids or (part_of is not None and part_of in self._ids)

    async def refresh(self) -> None:
        entries = await self._client.zrangebyscore(
            self._keys.cancelled, self._since, "+inf", withscores=True
        )
        for member, score in entries:
            self._ids.add(_text(member))
            self._since = max(self._since, score)

    async def mark(self, intent_id: str, when_ms: int) -> None:
        """Record that a copy of `intent_id` was dropped as cancelled (a part of a
        cancelled intent gets its own mark, which `status` then shows)."""
        await self._client.zadd(self._keys.cancelled, {intent_id: when_ms})
        self._ids.add(intent_id)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except RedisError as exc:
                # The consumer's own Redis watch reports the outage; the claim still holds.
                log.debug("cancels.refresh_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=WATCH_INTERVAL_S)


def canceller_for(client: redis.Redis, settings: Settings) -> Canceller:
    """A `Canceller` on `client` for the settings' namespace, queues and retention."""
    return Canceller(
        client,
        Keys(settings.namespace),
        settings.queue,
        keep=keep_ms(settings.receipt_ttl_s, settings.limits.max_schedule_ms),
    )


def cancel_intents(intent_ids: Iterable[str], settings: Settings) -> list[Cancellation]:
    """Cancel each intent on the settings' Redis; raises `RedisUnavailable` or
    `RedisRefused` when Redis fails (the batches before it are cancelled)."""
    target = RedisTarget.of(settings)
    client = sync_redis_for(target)
    try:
        return canceller_for(client, settings).cancel_many(list(intent_ids))
    except RedisError as exc:
        raise translate_target(exc, target) from exc
    finally:
        client.close()
