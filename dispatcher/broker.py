"""The dramatiq Redis broker, namespaced by `DISPATCHER_NAMESPACE`, hardened for foreign input.

Two changes to dramatiq's Redis broker:

- Its consumer fetches message ids together with the messages. A message that is not JSON,
  names another actor or queue, or lacks a field is turned into a *poison* message for the
  deliver actor, which dead-letters it with reason `invalid` and the raw text; dramatiq's
  own consumer would crash on it and strand the rest of its prefetched batch. Knowing the
  ids also means a raw producer need not repeat the id inside the message.
- `heartbeat()` refreshes this worker's liveness and always runs the sweep that hands the
  messages of dead workers back to the queue. The `Heartbeat` middleware calls it on a
  timer, so a worker killed mid-send has its messages redelivered in seconds, not when a
  random maintenance roll happens to fire.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Message, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

DELIVER_ACTOR = "deliver"
POISON_KWARG = "poison"
RAW_TEXT_LIMIT = 100_000

# A message is redelivered once its worker's heartbeat is this old (dramatiq: 60 s).
DEFAULT_HEARTBEAT_TIMEOUT_MS = 15_000
# Out of a million broker commands, how many also sweep for dead workers' messages; the
# heartbeat sweeps anyway, so this only adds sweeps under load.
DEFAULT_MAINTENANCE_CHANCE = 1_000
# Sends are bounded by the HTTP timeout and the limiter's longest wait; this only catches a
# wedged actor.
DEFAULT_TIME_LIMIT_MS = 5 * 60_000

# Same bookkeeping as dramatiq's own fetch (heartbeat, ack set), but returns id/body pairs.
_FETCH_WITH_IDS = """
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


def poison_message(queue_name: str, redis_id: str, raw: str, problem: str) -> Message[Any]:
    """A message for the deliver actor that stands for an unreadable one."""
    return Message(
        queue_name=queue_name,
        actor_name=DELIVER_ACTOR,
        args=(),
        kwargs={POISON_KWARG: {"raw": raw[:RAW_TEXT_LIMIT], "problem": problem}},
        options={"redis_message_id": redis_id},
        message_id=redis_id,
        message_timestamp=current_millis(),
    )


def read_message(queue_name: str, redis_id: str, body: bytes) -> Message[Any]:
    """Decode a message body fetched from `queue_name`, or a poison message saying why not."""
    raw = body.decode("utf-8", errors="replace")
    if not body:
        return poison_message(queue_name, redis_id, raw, "no message body is stored under this id")
    try:
        message = Message.decode(body)
    except DecodeError as exc:
        return poison_message(
            queue_name, redis_id, raw, f"not a dramatiq message: {exc.__cause__ or exc}"
        )
    problem = None
    if message.actor_name != DELIVER_ACTOR:
        problem = f"actor_name: {message.actor_name!r} is unknown, expected {DELIVER_ACTOR!r}"
    elif q_name(str(message.queue_name)) != q_name(queue_name):
        problem = (
            f"queue_name: {message.queue_name!r} does not match the queue {q_name(queue_name)!r}"
        )
    elif not isinstance(message.kwargs, dict) or not isinstance(message.options, dict):
        problem = "kwargs and options must be JSON objects"
    if problem is not None:
        return poison_message(queue_name, redis_id, raw, problem)
    # The id the body sits under in Redis is what acknowledges it; trust it over the body.
    return message.copy(queue_name=queue_name, options={"redis_message_id": redis_id})


class _ToleratingConsumer(_RedisConsumer):
    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    redis_id, body = self.message_cache.pop(0)
                    self.misses = 0
                    message = read_message(self.queue_name, redis_id, body)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.outstanding_message_count < self.prefetch:
                    fetched = self.broker.fetch_with_ids(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                    self.message_cache = list(zip(fetched[::2], fetched[1::2], strict=True))
                if not self.message_cache:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]


class DispatcherBroker(RedisBroker):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._fetch_with_ids = self.client.register_script(_FETCH_WITH_IDS)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _ToleratingConsumer

    def fetch_with_ids(self, queue_name: str, count: int) -> list[Any]:
        answer: list[Any] = self._fetch_with_ids(
            keys=[self.namespace],
            args=[queue_name, self.broker_id, count, current_millis()],
        )
        return [item.decode() if index % 2 == 0 else item for index, item in enumerate(answer)]

    def heartbeat(self, queue_name: str) -> None:
        """Mark this worker alive and sweep dead workers' messages back onto `queue_name`."""
        self._dispatch("heartbeat")(queue_name)  # type: ignore[no-untyped-call]

    def _should_do_maintenance(self, command: str) -> int:
        if command == "heartbeat":
            return 1
        return int(super()._should_do_maintenance(command))


def build_broker(
    redis_url: str,
    namespace: str,
    *,
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
    maintenance_chance: int = DEFAULT_MAINTENANCE_CHANCE,
    extra_middleware: list[Any] | None = None,
) -> DispatcherBroker:
    """A broker without dramatiq's Retries: the dispatcher schedules its own retries."""
    middleware: list[Any] = [
        AgeLimit(),
        TimeLimit(time_limit=DEFAULT_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        AsyncIO(),
        # After-hooks run last to first, so these see the event loop still running.
        *(extra_middleware or []),
    ]
    return DispatcherBroker(
        url=redis_url,
        namespace=namespace,
        middleware=middleware,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=maintenance_chance,
    )
