"""dramatiq's Redis queue protocol, spoken asynchronously and in batches.

The worker reads and writes the same keys as dramatiq's Redis broker, so any dramatiq
producer, and dramatiq's own dead-worker sweep, work with it:

    <ns>:<queue>                  list of message ids waiting
    <ns>:<queue>.msgs             hash id -> message body (JSON)
    <ns>:<queue>.DQ / .DQ.msgs    the delay queue: messages with an `eta` option
    <ns>:__acks__.<worker>.<queue>  set of ids a worker has taken and not yet acknowledged
    <ns>:__heartbeats__           sorted set worker -> last beat (ms)

What differs from dramatiq's own consumer is the cost: one script call fetches a batch
with its ids, one acknowledges a batch, and moving a due delayed message to its queue is
one atomic step.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from dramatiq.brokers.redis import _scripts as dramatiq_scripts
from dramatiq.common import dq_name

from dispatcher.messages import now_ms, outgoing

# Same bookkeeping as dramatiq's fetch (heartbeat, ack set), but returns id/body pairs.
_FETCH = """
local namespace = KEYS[1]
local queue_name, worker_id = ARGV[1], ARGV[2]
local prefetch, timestamp = tonumber(ARGV[3]), ARGV[4]
redis.call('zadd', namespace .. ':__heartbeats__', timestamp, worker_id)
local queue = namespace .. ':' .. queue_name
local bodies = queue .. '.msgs'
local acks = namespace .. ':__acks__.' .. worker_id .. '.' .. queue_name
local out = {}
for _ = 1, prefetch do
    local id = redis.call('lpop', queue)
    if not id then break end
    redis.call('sadd', acks, id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('hget', bodies, id) or ''
end
return out
"""

# KEYS: namespace. ARGV: queue, worker, timestamp, ids... Forgets acknowledged messages.
_ACK = """
local namespace = KEYS[1]
local queue_name, worker_id, timestamp = ARGV[1], ARGV[2], ARGV[3]
redis.call('zadd', namespace .. ':__heartbeats__', timestamp, worker_id)
local bodies = namespace .. ':' .. queue_name .. '.msgs'
local acks = namespace .. ':__acks__.' .. worker_id .. '.' .. queue_name
for i = 4, #ARGV do
    if redis.call('srem', acks, ARGV[i]) > 0 then redis.call('hdel', bodies, ARGV[i]) end
end
return 1
"""

# KEYS: namespace. ARGV: queue, worker, ids... Puts taken-but-unhandled messages back.
_REQUEUE = """
local namespace = KEYS[1]
local queue_name, worker_id = ARGV[1], ARGV[2]
local queue = namespace .. ':' .. queue_name
local acks = namespace .. ':__acks__.' .. worker_id .. '.' .. queue_name
for i = 3, #ARGV do
    if redis.call('srem', acks, ARGV[i]) > 0
        and redis.call('hexists', queue .. '.msgs', ARGV[i]) > 0 then
        redis.call('rpush', queue, ARGV[i])
    end
end
return 1
"""

# KEYS: namespace. ARGV: worker, queues... Takes a stopped worker off the heartbeat list
# when it holds nothing, so the sweep has no dead worker to look for (dramatiq's sweep
# lists the namespace's keys for each dead worker it finds).
_RETIRE = """
local namespace, worker_id = KEYS[1], ARGV[1]
for i = 2, #ARGV do
    if redis.call('scard', namespace .. ':__acks__.' .. worker_id .. '.' .. ARGV[i]) > 0 then
        return 0
    end
end
redis.call('zrem', namespace .. ':__heartbeats__', worker_id)
return 1
"""

# KEYS: namespace. ARGV: delay queue, target queue, worker, delayed id, new id, new body.
# Moves a due message from the delay queue onto its queue, atomically.
_PROMOTE = """
local namespace = KEYS[1]
local delay_queue, queue_name, worker_id = ARGV[1], ARGV[2], ARGV[3]
local delayed_id, new_id, body = ARGV[4], ARGV[5], ARGV[6]
local acks = namespace .. ':__acks__.' .. worker_id .. '.' .. delay_queue
if redis.call('srem', acks, delayed_id) == 0 then return 0 end
redis.call('hdel', namespace .. ':' .. delay_queue .. '.msgs', delayed_id)
local queue = namespace .. ':' .. queue_name
redis.call('hset', queue .. '.msgs', new_id, body)
redis.call('rpush', queue, new_id)
return 1
"""


class RedisQueue:
    """The protocol operations of one worker on one queue and its delay queue."""

    def __init__(
        self,
        redis: Any,
        namespace: str,
        queue_name: str,
        worker_id: str,
        *,
        heartbeat_timeout_ms: int,
        dead_message_ttl_ms: int = 7 * 86_400_000,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.queue_name = queue_name
        self.delay_queue_name = dq_name(queue_name)
        self.worker_id = worker_id
        self._heartbeat_timeout_ms = heartbeat_timeout_ms
        self._dead_message_ttl_ms = dead_message_ttl_ms
        self._fetch = redis.register_script(_FETCH)
        self._ack = redis.register_script(_ACK)
        self._requeue = redis.register_script(_REQUEUE)
        self._promote = redis.register_script(_PROMOTE)
        self._retire = redis.register_script(_RETIRE)
        self._dispatch = redis.register_script(dramatiq_scripts["dispatch"])
        self._maxstack = redis.register_script(dramatiq_scripts["maxstack"])
        self._max_unpack: int | None = None

    async def fetch(self, queue_name: str, count: int) -> list[tuple[str, bytes]]:
        answer: list[Any] = await self._fetch(
            keys=[self.namespace], args=[queue_name, self.worker_id, count, now_ms()]
        )
        return [(answer[index].decode(), answer[index + 1]) for index in range(0, len(answer), 2)]

    async def ack(self, queue_name: str, ids: list[str]) -> None:
        if ids:
            await self._ack(
                keys=[self.namespace], args=[queue_name, self.worker_id, now_ms(), *ids]
            )

    async def requeue(self, queue_name: str, ids: list[str]) -> None:
        if ids:
            await self._requeue(keys=[self.namespace], args=[queue_name, self.worker_id, *ids])

    async def enqueue(self, intent: Any, *, attempt: int, delay_ms: int) -> None:
        """Put an intent back for a later attempt: on the delay queue, as dramatiq does."""
        message = outgoing(self.queue_name, intent, attempt=attempt, delay_ms=delay_ms)
        key = f"{self.namespace}:{message.queue_name}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{key}.msgs", message.message_id, message.body)
            pipe.rpush(key, message.message_id)
            await pipe.execute()

    async def promote(self, delayed_id: str, body: bytes) -> bool:
        """Move a due message from the delay queue onto the queue; False if not ours."""
        new_id = str(uuid.uuid4())
        try:
            message: Any = orjson.loads(body)
            options = message["options"]
            message["queue_name"] = self.queue_name
            message["options"] = {
                key: value
                for key, value in options.items()
                if key not in {"eta", "redis_message_id"}
            } | {"redis_message_id": new_id}
            moved = orjson.dumps(message)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            # Unreadable: moved as it is, for the consumer to dead-letter with its text.
            moved = body
        return bool(
            await self._promote(
                keys=[self.namespace],
                args=[
                    self.delay_queue_name,
                    self.queue_name,
                    self.worker_id,
                    delayed_id,
                    new_id,
                    moved,
                ],
            )
        )

    async def retire(self) -> bool:
        """Leave the heartbeat list if every message this worker took was given back."""
        return bool(
            await self._retire(
                keys=[self.namespace],
                args=[self.worker_id, self.queue_name, self.delay_queue_name],
            )
        )

    async def heartbeat(self) -> None:
        """Beat, and sweep dead workers' messages back onto both queues (dramatiq's script)."""
        if self._max_unpack is None:
            self._max_unpack = int(await self._maxstack()) // 2
        for queue in (self.queue_name, self.delay_queue_name):
            await self._dispatch(
                keys=[self.namespace],
                args=[
                    "heartbeat",
                    now_ms(),
                    queue,
                    self.worker_id,
                    self._heartbeat_timeout_ms,
                    self._dead_message_ttl_ms,
                    1,
                    self._max_unpack,
                ],
            )
