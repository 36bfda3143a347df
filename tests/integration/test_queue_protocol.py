"""The queue protocol's scripts against a real redis-server: fetch, ack, requeue, promote,
retire, heartbeat and the sweep of dead workers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from dispatcher.messages import message_body
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.queue import RedisQueue

pytestmark = pytest.mark.integration

QUEUE = "notifications"
DELAY_QUEUE = "notifications.DQ"
TIMEOUT_MS = 15_000
DEAD_AGE_MS = 60_000

T = TypeVar("T")
Scenario = Callable[[aioredis.Redis, Keys], Awaitable[T]]


def run(url: str, namespace: str, scenario: Scenario[T]) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await scenario(client, Keys(namespace))
        finally:
            await client.aclose()

    return asyncio.run(main())


def worker(client: aioredis.Redis, keys: Keys, worker_id: str | None = None) -> RedisQueue:
    return RedisQueue(
        client,
        keys.namespace,
        QUEUE,
        worker_id=worker_id or f"live-{uuid.uuid4().hex[:8]}",
        heartbeat_timeout_ms=TIMEOUT_MS,
    )


async def put(client: aioredis.Redis, keys: Keys, queue: str, body: bytes) -> str:
    """Enqueue as any producer does; returns the message id."""
    message_id = str(uuid.uuid4())
    await client.hset(keys.queue_messages(queue), message_id, body)
    await client.rpush(keys.queue(queue), message_id)
    return message_id


async def server_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def plant_dead_worker(
    client: aioredis.Redis,
    keys: Keys,
    worker_id: str,
    held: dict[str, int],
    *,
    registered: bool = True,
    age_ms: int = DEAD_AGE_MS,
) -> dict[str, list[str]]:
    """A worker that took `held[queue]` messages from each queue and died `age_ms` ago."""
    taken: dict[str, list[str]] = {}
    for queue, count in held.items():
        ids = [str(uuid.uuid4()) for _ in range(count)]
        if ids:
            await client.hset(keys.queue_messages(queue), mapping={i: body(queue, i) for i in ids})
            await client.sadd(keys.acks(worker_id, queue), *ids)
        taken[queue] = ids
    await client.zadd(keys.heartbeats, {worker_id: await server_ms(client) - age_ms})
    if registered:
        await client.hset(keys.workers, worker_id, orjson.dumps(list(held)))
    return taken


def body(queue: str, message_id: str, size: int = 0) -> bytes:
    intent = {"id": message_id[:20], "recipients": ["alice"], "text": "x" * size}
    return message_body(queue, intent, attempt=1, message_id=message_id)


async def listed(client: aioredis.Redis, key: str) -> list[str]:
    return [item.decode() for item in await client.lrange(key, 0, -1)]


async def members(client: aioredis.Redis, key: str) -> set[str]:
    return {item.decode() for item in await client.smembers(key)}


# -- fetch -------------------------------------------------------------------------------------


def test_fetch_takes_up_to_count_in_order_and_registers_the_worker(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        bodies = [body(QUEUE, f"m{n}") for n in range(5)]
        ids = [await put(client, keys, QUEUE, written) for written in bodies]
        batch = await queue.fetch(QUEUE, 3)
        assert batch == list(zip(ids[:3], bodies[:3], strict=True))
        assert await listed(client, keys.queue(QUEUE)) == ids[3:]
        assert await members(client, keys.acks(queue.worker_id, QUEUE)) == set(ids[:3])
        assert await client.zscore(keys.heartbeats, queue.worker_id) is not None
        registered = await client.hget(keys.workers, queue.worker_id)
        assert orjson.loads(registered) == [QUEUE, DELAY_QUEUE]
        assert [i for i, _ in await queue.fetch(QUEUE, 10)] == ids[3:]
        assert await queue.fetch(QUEUE, 10) == []

    run(redis_server.url, namespace, scenario)


def test_fetch_stops_before_the_byte_budget_and_takes_an_oversized_message_alone(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        small = [await put(client, keys, QUEUE, b"s" * 100) for _ in range(3)]
        big = await put(client, keys, QUEUE, b"b" * 1000)
        last = await put(client, keys, QUEUE, b"s" * 100)

        first = await queue.fetch(QUEUE, 10, max_bytes=250)
        assert [i for i, _ in first] == small[:2]
        # The next message would overflow the budget: it stays at the head, untaken.
        second = await queue.fetch(QUEUE, 10, max_bytes=250)
        assert [i for i, _ in second] == [small[2]]
        assert (await listed(client, keys.queue(QUEUE)))[0] == big
        alone = await queue.fetch(QUEUE, 10, max_bytes=250)
        assert alone == [(big, b"b" * 1000)]
        assert [i for i, _ in await queue.fetch(QUEUE, 10, max_bytes=250)] == [last]
        assert await client.scard(keys.acks(queue.worker_id, QUEUE)) == 5

    run(redis_server.url, namespace, scenario)


def test_a_message_without_a_body_is_fetched_empty(
    redis_server: LocalRedis, namespace: str
) -> None:
    """An id pushed without its body reaches the consumer, which dead-letters it."""

    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        await client.rpush(keys.queue(QUEUE), "orphan")
        assert await worker(client, keys).fetch(QUEUE, 5) == [("orphan", b"")]

    run(redis_server.url, namespace, scenario)


def test_a_worker_takes_only_from_the_queues_it_registers(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        with pytest.raises(ValueError, match="other"):
            await worker(client, keys).fetch("other", 1)

    run(redis_server.url, namespace, scenario)


# -- ack, requeue, promote, retire -------------------------------------------------------------


def test_ack_forgets_only_messages_this_worker_took(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        first, second = [await put(client, keys, QUEUE, b"{}") for _ in range(2)]
        taken = await put(client, keys, QUEUE, b"{}")
        waiting = await put(client, keys, QUEUE, b"{}")
        await client.lrem(keys.queue(QUEUE), 0, taken)
        await client.sadd(keys.acks("someone-else", QUEUE), taken)
        await queue.fetch(QUEUE, 2)
        await queue.ack(QUEUE, [first, second, taken, waiting])
        assert await client.hkeys(keys.queue_messages(QUEUE)) == [
            taken.encode(),
            waiting.encode(),
        ]
        assert await client.exists(keys.acks(queue.worker_id, QUEUE)) == 0

    run(redis_server.url, namespace, scenario)


def test_requeue_puts_taken_messages_at_the_tail_and_drops_those_without_a_body(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        kept, gone = await put(client, keys, QUEUE, b"{}"), await put(client, keys, QUEUE, b"{}")
        waiting = await put(client, keys, QUEUE, b"{}")
        await queue.fetch(QUEUE, 2)
        await client.hdel(keys.queue_messages(QUEUE), gone)
        assert await queue.requeue(QUEUE, [kept, gone, "never-taken"]) == 1
        assert await listed(client, keys.queue(QUEUE)) == [waiting, kept]
        assert await client.exists(keys.acks(queue.worker_id, QUEUE)) == 0
        assert await queue.requeue(QUEUE, []) == 0

    run(redis_server.url, namespace, scenario)


def test_promote_moves_a_due_message_once_under_a_new_id(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        await queue.enqueue({"id": "later"}, attempt=2, delay_ms=60_000)
        [(delayed_id, delayed)] = await queue.fetch(DELAY_QUEUE, 10)
        assert "eta" in orjson.loads(delayed)["options"]
        assert await queue.promote(delayed_id, delayed)
        assert not await queue.promote(delayed_id, delayed)
        assert await client.hlen(keys.delay_queue_messages(QUEUE)) == 0
        assert await client.exists(keys.acks(queue.worker_id, DELAY_QUEUE)) == 0
        [new_id] = await listed(client, keys.queue(QUEUE))
        promoted = orjson.loads(await client.hget(keys.queue_messages(QUEUE), new_id))
        assert new_id != delayed_id
        assert promoted["queue_name"] == QUEUE
        assert promoted["options"] == {"redis_message_id": new_id}
        assert promoted["args"] == [{"id": "later"}]
        assert promoted["kwargs"] == {"attempt": 2}

    run(redis_server.url, namespace, scenario)


def test_enqueue_without_delay_goes_straight_to_the_queue(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        await queue.enqueue({"id": "now"}, attempt=3, delay_ms=0)
        [(_, fetched)] = await queue.fetch(QUEUE, 10)
        assert orjson.loads(fetched)["kwargs"] == {"attempt": 3}

    run(redis_server.url, namespace, scenario)


def test_retire_leaves_only_when_nothing_is_taken(redis_server: LocalRedis, namespace: str) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        queue = worker(client, keys)
        await put(client, keys, DELAY_QUEUE, b"{}")
        [(held, _)] = await queue.fetch(DELAY_QUEUE, 1)
        assert not await queue.retire()
        assert await client.zscore(keys.heartbeats, queue.worker_id) is not None
        await queue.requeue(DELAY_QUEUE, [held])
        assert await queue.retire()
        assert await client.zscore(keys.heartbeats, queue.worker_id) is None
        assert await client.hget(keys.workers, queue.worker_id) is None

    run(redis_server.url, namespace, scenario)


# -- heartbeat and sweep -----------------------------------------------------------------------


def test_the_sweep_puts_a_dead_workers_messages_back_and_touches_nothing_else(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        sweeper = worker(client, keys)
        waiting = await put(client, keys, QUEUE, b"{}")
        dead = await plant_dead_worker(client, keys, "dead", {QUEUE: 3, DELAY_QUEUE: 2})
        acked_late = dead[QUEUE].pop()
        await client.hdel(keys.queue_messages(QUEUE), acked_late)
        await plant_dead_worker(client, keys, "alive", {QUEUE: 2, DELAY_QUEUE: 1}, age_ms=1000)
        await plant_dead_worker(client, keys, "on-other", {"other": 2}, age_ms=1000)
        await client.set(keys.receipt("r-1"), "kept")
        untouched = {
            key: await client.dump(key)
            for key in [
                keys.acks("alive", QUEUE),
                keys.acks("alive", DELAY_QUEUE),
                keys.acks("on-other", "other"),
                keys.receipt("r-1"),
            ]
        }

        assert await sweeper.heartbeat() == 4
        # Behind what was waiting, in no particular order (an ack set is a set).
        head, *swept = await listed(client, keys.queue(QUEUE))
        assert head == waiting
        assert sorted(swept) == sorted(dead[QUEUE])
        assert sorted(await listed(client, keys.queue(DELAY_QUEUE))) == sorted(dead[DELAY_QUEUE])
        assert await client.exists(keys.acks("dead", QUEUE), keys.acks("dead", DELAY_QUEUE)) == 0
        assert await client.zscore(keys.heartbeats, "dead") is None
        assert await client.hget(keys.workers, "dead") is None
        for key, dumped in untouched.items():
            assert await client.dump(key) == dumped, key
        assert await client.zscore(keys.heartbeats, "alive") is not None
        assert await client.llen(keys.queue("other")) == 0
        assert await sweeper.heartbeat() == 0

    run(redis_server.url, namespace, scenario)


def test_a_worker_beating_again_is_not_swept(redis_server: LocalRedis, namespace: str) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        sweeper = worker(client, keys)
        held = await plant_dead_worker(client, keys, "slow", {QUEUE: 2})
        await worker(client, keys, "slow").heartbeat()
        assert await sweeper.sweep("slow", [QUEUE]) == -1
        assert await members(client, keys.acks("slow", QUEUE)) == set(held[QUEUE])

    run(redis_server.url, namespace, scenario)


@pytest.mark.parametrize(("forget_ms", "forgotten"), [(7 * 86_400_000, False), (30_000, True)])
def test_an_unregistered_dead_worker_is_swept_from_the_sweepers_queues(
    redis_server: LocalRedis, namespace: str, forget_ms: int, forgotten: bool
) -> None:
    """A dramatiq worker, or one from before the registry: only its queues' names are known."""

    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        sweeper = RedisQueue(
            client,
            keys.namespace,
            QUEUE,
            worker_id="sweeper",
            heartbeat_timeout_ms=TIMEOUT_MS,
            forget_unregistered_ms=forget_ms,
        )
        held = await plant_dead_worker(
            client, keys, "legacy", {QUEUE: 2, DELAY_QUEUE: 1}, registered=False
        )
        assert await sweeper.heartbeat() == 3
        assert set(await listed(client, keys.queue(QUEUE))) == set(held[QUEUE])
        assert (await client.zscore(keys.heartbeats, "legacy") is None) == forgotten
        assert await sweeper.heartbeat() == 0

    run(redis_server.url, namespace, scenario)


def test_sweepers_at_once_move_each_message_once(redis_server: LocalRedis, namespace: str) -> None:
    async def scenario(client: aioredis.Redis, keys: Keys) -> None:
        held: list[str] = []
        for n in range(6):
            taken = await plant_dead_worker(client, keys, f"dead-{n}", {QUEUE: 40, DELAY_QUEUE: 10})
            held += taken[QUEUE] + taken[DELAY_QUEUE]
        clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
        try:
            sweepers = [worker(other, keys) for other in clients]
            same = await asyncio.gather(
                *(s.sweep("dead-0", [QUEUE, DELAY_QUEUE]) for s in sweepers)
            )
            moved = await asyncio.gather(*(s.heartbeat() for s in sweepers))
        finally:
            for other in clients:
                await other.aclose()
        assert sorted(same) == [-1, -1, -1, 50]
        assert sum(moved) == 250
        back = await listed(client, keys.queue(QUEUE)) + await listed(
            client, keys.queue(DELAY_QUEUE)
        )
        assert Counter(back) == Counter(held)
        assert await client.zrangebyscore(keys.heartbeats, 0, "+inf") != []  # the sweepers
        assert await client.hlen(keys.workers) == 4

    run(redis_server.url, namespace, scenario)


# -- the sweep's cost with a large keyspace ----------------------------------------------------

# Lua fills the keyspace in about two seconds; DEBUG POPULATE is disabled by default.
_POPULATE = """
local n, prefix, pairs = tonumber(ARGV[1]), ARGV[2], {}
for i = 1, n do
    pairs[#pairs + 1] = prefix .. i
    pairs[#pairs + 1] = '1'
    if #pairs == 2000 or i == n then redis.call('mset', unpack(pairs)); pairs = {} end
end
"""


def script_usec(client: redis.Redis) -> int:
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    return sum(
        int(stat["usec"])
        for name, stat in stats.items()
        if name.startswith(("cmdstat_eval", "cmdstat_script"))
    )


def test_sweeping_a_dead_worker_among_a_million_keys_costs_milliseconds(
    report: Callable[[str, Any], None],
) -> None:
    """dramatiq's sweep lists the namespace's keys per dead worker; this one reads its sets."""
    namespace = "big"
    keys = Keys(namespace)
    with LocalRedis() as server:
        sync = redis.Redis.from_url(server.url)
        try:
            sync.eval(_POPULATE, 0, 1_000_000, keys.receipt(""))

            async def scenario(client: aioredis.Redis, keys: Keys) -> tuple[int, int]:
                sweeper = worker(client, keys)
                await sweeper.heartbeat()  # scripts loaded, the sweeper registered
                await plant_dead_worker(client, keys, "dead", {QUEUE: 150, DELAY_QUEUE: 50})
                sync.config_resetstat()
                moved = await sweeper.heartbeat()
                return moved, script_usec(sync)

            moved, usec = run(server.url, namespace, scenario)
            assert sync.dbsize() >= 1_000_000
            dramatiq_usec = dramatiqs_sweep_usec(sync, keys)
        finally:
            sync.close()
    report("keys in Redis", 1_000_000)
    report("messages swept", moved)
    report("sweep, Redis time (ms)", usec / 1000)
    report("dramatiq's sweep of the same, Redis time (ms)", dramatiq_usec / 1000)
    assert moved == 200
    assert usec < 10_000


def dramatiqs_sweep_usec(client: redis.Redis, keys: Keys) -> int:
    """dramatiq's maintenance of one queue with one dead worker holding 200 messages."""
    dispatch = (resources.files("dramatiq.brokers") / "redis" / "dispatch.lua").read_text()
    ids = [str(uuid.uuid4()) for _ in range(200)]
    client.hset(keys.queue_messages(QUEUE), mapping=dict.fromkeys(ids, "{}"))
    client.sadd(keys.acks("dead-too", QUEUE), *ids)
    client.zadd(keys.heartbeats, {"dead-too": 1})
    client.config_resetstat()
    now = client.time()[0] * 1000
    client.eval(
        dispatch, 1, keys.namespace, "qsize", now, QUEUE, "dramatiq", TIMEOUT_MS, 1, 1, 1000
    )
    return script_usec(client)
