"""The Redis queue protocol, spoken asynchronously and in batches.

Messages keep dramatiq's format and keys (names in `keys.Keys`), so any dramatiq producer
enqueues for the worker:

    <ns>:<queue>                    list of message ids waiting
    <ns>:<queue>.msgs               hash id -> message body (JSON)
    <ns>:<queue>.DQ / .DQ.msgs      the delay queue: messages with an `eta` option
    <ns>:<queue>.SQ / .SQ.msgs      the schedule: intents held until their `sendAt`
    <ns>:__acks__.<worker>.<queue>  set of ids a worker has taken and not yet acknowledged
    <ns>:__heartbeats__             sorted set worker -> last beat (ms, Redis's clock)
    <ns>:__workers__                hash worker -> JSON list of the queues it takes from

The scripts are the dispatcher's own. Each is handed every key it touches in KEYS[], so
none builds a key name and a Redis Cluster could route them. One call fetches a batch,
bounded by count and by bytes; one acknowledges a batch; moving a due delayed message to
its queue is one atomic step. The sweep of a dead worker reads the ack sets the registry
names for it, never the keyspace: dramatiq's lists every key of the namespace with
`KEYS`, which stalls Redis once millions of receipts are stored.

The scripts read Redis's clock, not the worker's, so a worker whose clock drifts is
neither swept while alive nor kept alive once dead.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from dispatcher.messages import outgoing, scheduled_value
from dispatcher.store.keys import Keys, delay_queue_name

DEFAULT_FETCH_MAX_BYTES = 32 * 1024 * 1024
# Dead workers swept per beat: a fleet restarted at once is cleaned up over a few beats
# instead of in one long burst.
SWEEP_BATCH = 16
# A dead worker missing from the registry (a dramatiq worker, or one from before the
# registry) is swept from the sweeper's queues at every beat, and forgotten after this.
FORGET_UNREGISTERED_MS = 7 * 86_400_000

_NOW = """
local function now_ms()
    local t = redis.call('time')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: queue, queue.msgs, acks, heartbeats, workers. ARGV: worker, count, max bytes,
# registry entry. Returns id, body, id, body...; the first message is taken whatever its
# size, the next ones while the total stays within max bytes. An oversized one is only
# peeked at (LINDEX, HSTRLEN) and stays at the head for the next call.
_FETCH = (
    _NOW
    + """
local queue, bodies, acks, heartbeats, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, count, max_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('zadd', heartbeats, now_ms(), worker)
redis.call('hset', workers, worker, ARGV[4])
local out, total = {}, 0
for taken = 0, count - 1 do
    local id = redis.call('lindex', queue, 0)
    if not id then break end
    local size = redis.call('hstrlen', bodies, id)
    if taken > 0 and total + size > max_bytes then break end
    redis.call('lpop', queue)
    redis.call('sadd', acks, id)
    total = total + size
    out[#out + 1] = id
    out[#out + 1] = redis.call('hget', bodies, id) or ''
end
return out
"""
)

# KEYS: acks, queue.msgs, heartbeats. ARGV: worker, ids... Forgets acknowledged messages.
_ACK = (
    _NOW
    + """
redis.call('zadd', KEYS[3], now_ms(), ARGV[1])
for i = 2, #ARGV do
    if redis.call('srem', KEYS[1], ARGV[i]) > 0 then redis.call('hdel', KEYS[2], ARGV[i]) end
end
return 1
"""
)

# KEYS: acks, queue, queue.msgs. ARGV: ids... Puts taken-but-unhandled messages back.
_REQUEUE = """
local moved = 0
for i = 1, #ARGV do
    if redis.call('srem', KEYS[1], ARGV[i]) > 0
        and redis.call('hexists', KEYS[3], ARGV[i]) > 0 then
        redis.call('rpush', KEYS[2], ARGV[i])
        moved = moved + 1
    end
end
return moved
"""

# KEYS: delay acks, delay queue.msgs, queue, queue.msgs. ARGV: delayed id, new id, body.
# Moves a due message from the delay queue onto its queue; 0 if this worker lost it.
_PROMOTE = """
if redis.call('srem', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('hset', KEYS[4], ARGV[2], ARGV[3])
redis.call('rpush', KEYS[3], ARGV[2])
return 1
"""

# KEYS: schedule, schedule.msgs, queue, queue.msgs. ARGV: limit. Moves up to `limit`
# intents whose `sendAt` has come (by Redis's clock) onto the queue; returns how many.
# A stored value is `<message id>\n<body>`; one without the line break (not ours) goes on
# as its own body, for the consumer to dead-letter with its text.
_PROMOTE_SCHEDULED = (
    _NOW
    + """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
    local value = redis.call('hget', KEYS[2], id)
    redis.call('zrem', KEYS[1], id)
    redis.call('hdel', KEYS[2], id)
    if value then
        local cut = string.find(value, '\\n', 1, true)
        local message_id, body = id, value
        if cut then
            message_id, body = string.sub(value, 1, cut - 1), string.sub(value, cut + 1)
        end
        redis.call('hset', KEYS[4], message_id, body)
        redis.call('rpush', KEYS[3], message_id)
    end
end
return #due
"""
)

# KEYS: heartbeats, workers, acks... ARGV: worker. A stopped worker that holds nothing
# leaves, so no sweep ever looks for it; one that holds something stays to be swept.
_RETIRE = """
for i = 3, #KEYS do
    if redis.call('scard', KEYS[i]) > 0 then return 0 end
end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
return 1
"""

# KEYS: heartbeats, workers. ARGV: worker, registry entry, timeout ms, limit.
# Beats, and returns dead workers with their registry entries: worker, entry or false...
_HEARTBEAT = (
    _NOW
    + """
local heartbeats, workers = KEYS[1], KEYS[2]
local now = now_ms()
redis.call('zadd', heartbeats, now, ARGV[1])
redis.call('hset', workers, ARGV[1], ARGV[2])
local dead = redis.call(
    'zrangebyscore', heartbeats, '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, tonumber(ARGV[4])
)
local out = {}
for _, worker in ipairs(dead) do
    out[#out + 1] = worker
    out[#out + 1] = redis.call('hget', workers, worker)
end
return out
"""
)

# KEYS: heartbeats, workers, then (acks, queue, queue.msgs) for each queue of the dead
# worker. ARGV: worker, timeout ms, forget-unregistered ms. Re-checks that the worker is
# still dead, so two sweepers move each message once and a worker that came back keeps
# its messages. Ids whose body is gone (acknowledged late) are dropped. Returns the
# number of ids moved back, or -1 if the worker was not dead (any more).
_SWEEP = (
    _NOW
    + """
local heartbeats, workers, worker = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
local beat = redis.call('zscore', heartbeats, worker)
if not beat or tonumber(beat) > now - tonumber(ARGV[2]) then return -1 end
local moved = 0
for i = 3, #KEYS, 3 do
    local acks, queue, bodies = KEYS[i], KEYS[i + 1], KEYS[i + 2]
    for _, id in ipairs(redis.call('smembers', acks)) do
        if redis.call('hexists', bodies, id) > 0 then
            redis.call('rpush', queue, id)
            moved = moved + 1
        end
    end
    redis.call('del', acks)
end
-- An unregistered worker may hold messages on queues other sweepers serve: it stays
-- on the heartbeat list for them, until it is so old nobody will.
if redis.call('hdel', workers, worker) > 0 or tonumber(beat) <= now - tonumber(ARGV[3]) then
    redis.call('zrem', heartbeats, worker)
end
return moved
"""
)


class RedisQueue:
    """The protocol operations of one worker on its queues (one per lane it serves) and
    their delay queues. `queue_name` is the first of them, the one taken by default."""

    def __init__(
        self,
        redis: Any,
        namespace: str,
        queue_name: str,
        worker_id: str,
        *,
        heartbeat_timeout_ms: int,
        forget_unregistered_ms: int = FORGET_UNREGISTERED_MS,
        queue_names: Sequence[str] = (),
    ) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.namespace = namespace
        self.queue_name = queue_name
        self.delay_queue_name = delay_queue_name(queue_name)
        self.worker_id = worker_id
        self._heartbeat_timeout_ms = heartbeat_timeout_ms
        self._forget_unregistered_ms = forget_unregistered_ms
        self.queue_names = tuple(queue_names) or (queue_name,)
        # The registry entry lists every queue and delay queue served, so a sweep finds the
        # ack sets of each lane.
        self._served = tuple(
            name for queue in self.queue_names for name in (queue, delay_queue_name(queue))
        )
        self._registry_entry = orjson.dumps(list(self._served))
        self._fetch = redis.register_script(_FETCH)
        self._ack = redis.register_script(_ACK)
        self._requeue = redis.register_script(_REQUEUE)
        self._promote = redis.register_script(_PROMOTE)
        self._retire = redis.register_script(_RETIRE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._sweep = redis.register_script(_SWEEP)
        self._promote_scheduled = redis.register_script(_PROMOTE_SCHEDULED)

    async def fetch(
        self, queue_name: str, count: int, *, max_bytes: int = DEFAULT_FETCH_MAX_BYTES
    ) -> list[tuple[str, bytes]]:
        """Take up to `count` messages, and stop before their bodies exceed `max_bytes`.

        The first message is taken whatever its size, so a large one is not stuck.
        """
        self._check_served(queue_name)
        answer: list[Any] = await self._fetch(
            keys=[
                self.keys.queue(queue_name),
                self.keys.queue_messages(queue_name),
                self.keys.acks(self.worker_id, queue_name),
                self.keys.heartbeats,
                self.keys.workers,
            ],
            args=[self.worker_id, count, max_bytes, self._registry_entry],
        )
        return [(answer[index].decode(), answer[index + 1]) for index in range(0, len(answer), 2)]

    async def ack(self, queue_name: str, ids: list[str]) -> None:
        self._check_served(queue_name)
        if ids:
            await self._ack(
                keys=[
                    self.keys.acks(self.worker_id, queue_name),
                    self.keys.queue_messages(queue_name),
                    self.keys.heartbeats,
                ],
                args=[self.worker_id, *ids],
            )

    async def requeue(self, queue_name: str, ids: list[str]) -> int:
        """Put taken messages back at the tail of their queue; how many went back."""
        self._check_served(queue_name)
        if not ids:
            return 0
        return int(
            await self._requeue(
                keys=[
                    self.keys.acks(self.worker_id, queue_name),
                    self.keys.queue(queue_name),
                    self.keys.queue_messages(queue_name),
                ],
                args=ids,
            )
        )

    async def taken(self, queue_name: str) -> set[str]:
        """The ids this worker's ack set lists for `queue_name`."""
        self._check_served(queue_name)
        members = await self.redis.smembers(self.keys.acks(self.worker_id, queue_name))
        return {member.decode() if isinstance(member, bytes) else member for member in members}

    async def enqueue(
        self, intent: Any, *, attempt: int, delay_ms: int, queue_name: str | None = None
    ) -> None:
        """Put an intent back for a later attempt: on the delay queue (of `queue_name`, by
        default the first queue), as dramatiq does."""
        message = outgoing(
            queue_name or self.queue_name, intent, attempt=attempt, delay_ms=delay_ms
        )
        queue = message.queue_name
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.queue_messages(queue), message.message_id, message.body)
            pipe.rpush(self.keys.queue(queue), message.message_id)
            await pipe.execute()

    async def schedule(
        self, queue_name: str, intent_id: str, intent: Any, *, send_at_ms: int, attempt: int = 1
    ) -> None:
        """Hold an intent on the schedule of `queue_name` until `send_at_ms`; a second
        copy of the same intent id takes the place of the first."""
        async with self.redis.pipeline(transaction=True) as pipe:
            schedule_commands(
                pipe,
                self.keys,
                queue_name,
                intent_id,
                intent,
                send_at_ms=send_at_ms,
                attempt=attempt,
            )
            await pipe.execute()

    async def promote_scheduled(self, queue_name: str, limit: int) -> int:
        """Move up to `limit` intents whose `sendAt` has come onto `queue_name`."""
        return int(
            await self._promote_scheduled(
                keys=[
                    self.keys.schedule(queue_name),
                    self.keys.schedule_messages(queue_name),
                    self.keys.queue(queue_name),
                    self.keys.queue_messages(queue_name),
                ],
                args=[limit],
            )
        )

    async def push_parts(
        self, queue_name: str, parts: Sequence[Any], *, record_key: str, record: bytes, ttl_s: int
    ) -> None:
        """Put the parts of a split intent on `queue_name`, with the record of the split,
        in one transaction: all of them or none."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for part in parts:
                message = outgoing(queue_name, part, attempt=1, delay_ms=0)
                pipe.hset(self.keys.queue_messages(queue_name), message.message_id, message.body)
                pipe.rpush(self.keys.queue(queue_name), message.message_id)
            pipe.set(record_key, record, ex=ttl_s)
            await pipe.execute()

    async def promote(self, delayed_id: str, body: bytes, queue_name: str | None = None) -> bool:
        """Move a due message from the delay queue of `queue_name` (by default the first
        queue) onto that queue; False if not ours."""
        queue = queue_name or self.queue_name
        delayed = delay_queue_name(queue)
        self._check_served(delayed)
        new_id = str(uuid.uuid4())
        return bool(
            await self._promote(
                keys=[
                    self.keys.acks(self.worker_id, delayed),
                    self.keys.queue_messages(delayed),
                    self.keys.queue(queue),
                    self.keys.queue_messages(queue),
                ],
                args=[delayed_id, new_id, promoted_body(body, queue, new_id)],
            )
        )

    async def retire(self) -> bool:
        """Leave the heartbeat list and the registry if every message taken was given back."""
        return bool(
            await self._retire(
                keys=[
                    self.keys.heartbeats,
                    self.keys.workers,
                    *(self.keys.acks(self.worker_id, queue) for queue in self._served),
                ],
                args=[self.worker_id],
            )
        )

    async def heartbeat(self) -> int:
        """Beat, and sweep dead workers' messages back onto their queues; how many moved."""
        answer: list[Any] = await self._heartbeat(
            keys=[self.keys.heartbeats, self.keys.workers],
            args=[
                self.worker_id,
                self._registry_entry,
                self._heartbeat_timeout_ms,
                SWEEP_BATCH,
            ],
        )
        moved = 0
        for index in range(0, len(answer), 2):
            worker = answer[index].decode()
            queues = served_queues(answer[index + 1], default=self._served)
            moved += max(0, await self.sweep(worker, queues))
        return moved

    async def sweep(self, worker_id: str, queues: Sequence[str]) -> int:
        """Hand a dead worker's messages on `queues` back; -1 if it is not dead."""
        keys = [self.keys.heartbeats, self.keys.workers]
        for queue in queues:
            keys += [
                self.keys.acks(worker_id, queue),
                self.keys.queue(queue),
                self.keys.queue_messages(queue),
            ]
        return int(
            await self._sweep(
                keys=keys,
                args=[worker_id, self._heartbeat_timeout_ms, self._forget_unregistered_ms],
            )
        )

    def _check_served(self, queue_name: str) -> None:
        # The registry lists only these, and a sweep finds only the ack sets it lists.
        if queue_name not in self._served:
            raise ValueError(f"this worker serves {self._served}, not {queue_name!r}")


def schedule_commands(
    pipe: Any,
    keys: Keys,
    queue_name: str,
    intent_id: str,
    intent: Any,
    *,
    send_at_ms: int,
    attempt: int = 1,
) -> Any:
    """Add to `pipe` (sync or async) the commands that hold an intent on the schedule."""
    message = outgoing(queue_name, intent, attempt=attempt, delay_ms=0)
    pipe.hset(keys.schedule_messages(queue_name), intent_id, scheduled_value(message))
    pipe.zadd(keys.schedule(queue_name), {intent_id: send_at_ms})
    return pipe


def served_queues(entry: bytes | None, *, default: Sequence[str]) -> Sequence[str]:
    """The queues a registry entry lists; `default` for a worker missing or unreadable."""
    if entry is None:
        return default
    try:
        queues: Any = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return default
    if isinstance(queues, list) and all(isinstance(queue, str) for queue in queues):
        return queues
    return default


def promoted_body(body: bytes, queue_name: str, new_id: str) -> bytes:
    """A delayed message rewritten for `queue_name` under `new_id`, without its eta."""
    try:
        message: Any = orjson.loads(body)
        options = message["options"]
        message["queue_name"] = queue_name
        message["options"] = {
            key: value for key, value in options.items() if key not in {"eta", "redis_message_id"}
        } | {"redis_message_id": new_id}
        return orjson.dumps(message)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        # Unreadable: moved as it is, for the consumer to dead-letter with its text.
        return body
