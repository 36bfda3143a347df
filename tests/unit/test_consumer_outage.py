"""The consumer with in-memory fakes: Redis going away strands nothing, refused credentials
hold messages without spending attempts, and fetching respects the byte budget."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from dispatcher.backoff import RetryPolicy
from dispatcher.errors import TokenUnavailable
from dispatcher.messages import message_body
from dispatcher.outcome import DeadLetter, Sent
from dispatcher.store.keys import Keys
from dispatcher.worker.consumer import Consumer
from dispatcher.worker.delivery import Reschedule
from dispatcher.worker.durable import Recorder
from dispatcher.worker.health import CREDENTIALS, REDIS, Health

pytestmark = pytest.mark.timeout(20)

QUEUE = "notifications"


class Store:
    """What the fakes share: whether 'Redis' answers."""

    def __init__(self) -> None:
        self.down = False
        self.up_again = asyncio.Event()

    def check(self) -> None:
        if self.down:
            raise RedisConnectionError("Connection refused")

    def fail(self) -> None:
        self.down = True
        self.up_again.clear()

    def recover(self) -> None:
        self.down = False
        self.up_again.set()


class FakeRedis:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def ping(self) -> bool:
        self._store.check()
        return True


class FakeQueue:
    queue_name = QUEUE
    delay_queue_name = f"{QUEUE}.DQ"
    worker_id = "worker-1"

    def __init__(self, store: Store, bodies: list[bytes]) -> None:
        self.store = store
        self.redis = FakeRedis(store)
        self.waiting = [(f"m{n}", body) for n, body in enumerate(bodies)]
        self.taken: set[str] = set()
        self.acked: list[str] = []
        self.requeued: list[str] = []
        self.enqueued: list[tuple[Any, int, int]] = []
        self.scheduled: list[tuple[str, str, int]] = []
        self.parts: list[tuple[str, list[Any], str]] = []
        self.keys = Keys("test")
        self.fetch_budgets: list[int] = []
        self.fetches_while_down = 0

    async def fetch(self, queue_name: str, count: int, max_bytes: int) -> list[tuple[str, bytes]]:
        if self.store.down:
            self.fetches_while_down += 1
        self.store.check()
        if queue_name != QUEUE:
            return []
        self.fetch_budgets.append(max_bytes)
        batch: list[tuple[str, bytes]] = []
        size = 0
        while self.waiting and len(batch) < count:
            redis_id, body = self.waiting[0]
            if batch and size + len(body) > max_bytes:
                break
            self.waiting.pop(0)
            batch.append((redis_id, body))
            size += len(body)
            self.taken.add(redis_id)
        return batch

    async def ack(self, queue_name: str, ids: list[str]) -> None:
        self.store.check()
        for redis_id in ids:
            self.taken.discard(redis_id)
            self.acked.append(redis_id)

    async def requeue(self, queue_name: str, ids: list[str]) -> None:
        self.store.check()
        for redis_id in ids:
            self.taken.discard(redis_id)
            self.requeued.append(redis_id)

    async def enqueue(
        self, intent: Any, *, attempt: int, delay_ms: int, queue_name: str | None = None
    ) -> None:
        self.store.check()
        self.enqueued.append((intent, attempt, delay_ms))

    async def promote(self, delayed_id: str, body: bytes, queue_name: str | None = None) -> bool:
        self.store.check()
        return True

    async def promote_scheduled(self, queue_name: str, limit: int) -> int:
        self.store.check()
        return 0

    async def schedule(
        self, queue_name: str, intent_id: str, intent: Any, *, send_at_ms: int, attempt: int = 1
    ) -> None:
        self.store.check()
        self.scheduled.append((queue_name, intent_id, send_at_ms))

    async def push_parts(
        self, queue_name: str, parts: list[Any], *, record_key: str, record: bytes, ttl_s: int
    ) -> None:
        self.store.check()
        self.parts.append((queue_name, parts, record_key))

    async def retire(self) -> bool:
        self.store.check()
        return not self.taken

    async def heartbeat(self) -> int:
        self.store.check()
        return 0


class FakeDeliverer:
    """Sends by calling `behaviour(intent_id, attempt)`; Redis trouble is raised before it."""

    def __init__(
        self, store: Store, behaviour: Callable[[str, int], Awaitable[Any]] | None = None
    ) -> None:
        self.store = store
        self.sent: list[tuple[str, int]] = []
        self.behaviour = behaviour

    async def attempt(
        self, raw: Any, attempt: int, *, claim_owner: str | None = None, lane: str = ""
    ) -> Any:
        self.store.check()  # the claim and the rate limit need Redis
        intent_id = raw["id"]
        if self.behaviour is not None:
            result = await self.behaviour(intent_id, attempt)
            if result is not None:
                return result
        self.sent.append((intent_id, attempt))
        return Sent(f"cp-{intent_id}")

    async def bury_unreadable(self, raw: str, problem: str) -> DeadLetter:
        return DeadLetter("invalid", None, "invalid message", problem)

    async def bury_exhausted(self, raw: Any, attempts: int, error: str) -> DeadLetter:
        return DeadLetter("exhausted", None, "unexpected error", error)


def bodies(count: int, padding: int = 0) -> list[bytes]:
    return [
        message_body(
            QUEUE,
            {"id": f"intent-{n:04d}", "recipients": ["u"], "text": "x" * (1 + padding)},
            attempt=1,
            message_id=f"m{n}",
        )
        for n in range(count)
    ]


def consumer_for(
    queue: FakeQueue,
    deliverer: FakeDeliverer,
    health: Health,
    **overrides: Any,
) -> Consumer:
    options: dict[str, Any] = {
        "concurrency": 8,
        "retry": RetryPolicy(max_attempts=3, min_ms=10, max_ms=20),
        "grace_s": 5.0,
    } | overrides
    return Consumer(
        queue,  # type: ignore[arg-type]
        deliverer,  # type: ignore[arg-type]
        health=health,
        recorder=Recorder(health, pause_min_s=0.01, pause_max_s=0.05),
        **options,
    )


def in_loop(scenario: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """A test that runs `scenario` on an event loop of its own."""

    @functools.wraps(scenario)
    def test() -> None:
        asyncio.run(scenario())

    return test


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@in_loop
async def test_redis_away_mid_run_strands_nothing_and_spends_no_attempt() -> None:
    store = Store()
    queue = FakeQueue(store, bodies(40))
    gate = asyncio.Event()
    calls = 0

    async def slow_then_fine(intent_id: str, attempt: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            store.fail()  # Redis goes away while sends are in flight
        if not gate.is_set() and calls <= 8:
            await gate.wait()

    deliverer = FakeDeliverer(store, slow_then_fine)
    health = Health()
    consumer = consumer_for(queue, deliverer, health)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))

    await wait_for(lambda: not health.ready)
    assert health.has(REDIS)
    gate.set()
    # While Redis is away nothing is fetched and nothing is acknowledged.
    await asyncio.sleep(0.2)
    held_acks = len(queue.acked)
    store.recover()
    await wait_for(lambda: len(queue.acked) == 40)
    assert health.ready
    stop.set()
    await running

    assert held_acks == 0
    assert queue.fetches_while_down <= 1
    assert sorted(queue.acked) == sorted(f"m{n}" for n in range(40))
    assert not queue.taken
    assert queue.enqueued == []
    # Every intent went out once, on its first attempt: the outage spent none.
    assert sorted(intent for intent, _ in deliverer.sent) == [f"intent-{n:04d}" for n in range(40)]
    assert {attempt for _, attempt in deliverer.sent} == {1}


@in_loop
async def test_a_retry_that_cannot_be_written_waits_for_redis_then_is_written_and_acked() -> None:
    store = Store()
    queue = FakeQueue(store, bodies(1))

    async def retry_once(intent_id: str, attempt: int) -> Any:
        store.fail()  # the answer came, but Redis is gone when the retry is written
        return Reschedule({"id": intent_id}, attempt + 1, 50)

    deliverer = FakeDeliverer(store, retry_once)
    health = Health()
    consumer = consumer_for(queue, deliverer, health)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    await wait_for(lambda: health.has(REDIS))
    await asyncio.sleep(0.1)
    assert queue.enqueued == []
    assert queue.acked == []
    store.recover()
    await wait_for(lambda: queue.acked == ["m0"])
    stop.set()
    await running
    assert queue.enqueued == [({"id": "intent-0000"}, 2, 50)]
    assert consumer.stats.outcomes["retried"] == 1


@in_loop
async def test_refused_credentials_hold_messages_until_they_are_accepted() -> None:
    store = Store()
    queue = FakeQueue(store, bodies(5))
    accepted = asyncio.Event()

    async def refuse_until_accepted(intent_id: str, attempt: int) -> None:
        if not accepted.is_set():
            raise TokenUnavailable("token endpoint answered 400 invalid_client", permanent=True)

    async def check() -> str:
        if not accepted.is_set():
            raise TokenUnavailable("token endpoint answered 400 invalid_client", permanent=True)
        return "token"

    deliverer = FakeDeliverer(store, refuse_until_accepted)
    health = Health()
    consumer = consumer_for(queue, deliverer, health, check_credentials=check)
    import dispatcher.worker.consumer as consumer_module

    original = consumer_module.CREDENTIALS_PROBE_S
    consumer_module.CREDENTIALS_PROBE_S = 0.05
    try:
        stop = asyncio.Event()
        running = asyncio.create_task(consumer.run(stop))
        await wait_for(lambda: health.has(CREDENTIALS))
        await asyncio.sleep(0.2)
        assert queue.acked == []
        accepted.set()
        await wait_for(lambda: len(queue.acked) == 5)
        stop.set()
        await running
    finally:
        consumer_module.CREDENTIALS_PROBE_S = original
    assert health.ready
    assert {attempt for _, attempt in deliverer.sent} == {1}
    assert consumer.stats.outcomes["sent"] == 5


@in_loop
async def test_fetch_is_bounded_by_the_bytes_held() -> None:
    store = Store()
    big = bodies(6, padding=1000)
    queue = FakeQueue(store, big)
    release = asyncio.Event()

    async def hold(intent_id: str, attempt: int) -> None:
        await release.wait()

    deliverer = FakeDeliverer(store, hold)
    health = Health()
    budget = 2 * len(big[0]) + 10
    consumer = consumer_for(
        queue,
        deliverer,
        health,
        max_in_flight_bytes=budget,
        largest_message_bytes=len(big[0]),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    await wait_for(lambda: consumer.in_flight == 2)
    await asyncio.sleep(0.1)
    assert consumer.in_flight == 2
    assert consumer.bytes_in_flight <= budget
    release.set()
    await wait_for(lambda: len(queue.acked) == 6)
    stop.set()
    await running
    assert all(len(big[0]) <= seen <= budget for seen in queue.fetch_budgets[1:])


@in_loop
async def test_stop_while_redis_is_away_leaves_held_messages_taken_for_the_sweep() -> None:
    store = Store()
    queue = FakeQueue(store, bodies(3))
    deliverer = FakeDeliverer(store)
    health = Health()
    store.fail()
    consumer = consumer_for(queue, deliverer, health, grace_s=0.3)
    # Fetched before Redis went away: the consumer holds them when it learns of the outage.
    store.down = False
    stop = asyncio.Event()

    async def attempt_fails(
        raw: Any, attempt: int, *, claim_owner: str | None = None, lane: str = ""
    ) -> Any:
        store.fail()
        raise RedisConnectionError("Connection reset by peer")

    deliverer.attempt = attempt_fails  # type: ignore[method-assign]
    running = asyncio.create_task(consumer.run(stop))
    await wait_for(lambda: health.has(REDIS))
    stop.set()
    await running
    assert queue.acked == []
    # Not acknowledged and not lost: still taken by this worker, for the sweep.
    assert queue.taken == {"m0", "m1", "m2"}


def test_bodies_are_dramatiq_messages() -> None:
    body = orjson.loads(bodies(1)[0])
    assert body["actor_name"] == "deliver"
