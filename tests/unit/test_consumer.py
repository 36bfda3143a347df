"""The consumer with in-memory fakes: crashes, unreadable messages, the counts by outcome,
the drain on stop, the delay queue, acknowledgements that fail, and the watchers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

import dispatcher.worker.consumer as consumer_module
from dispatcher.errors import TokenUnavailable
from dispatcher.messages import message_body, now_ms
from dispatcher.outcome import DeadLetter
from dispatcher.worker.delivery import Reschedule, Skipped
from dispatcher.worker.health import CREDENTIALS, REDIS, Health
from tests.unit.deliveryfakes import Rig
from tests.unit.test_consumer_outage import (
    QUEUE,
    FakeDeliverer,
    FakeQueue,
    Store,
    consumer_for,
    in_loop,
    wait_for,
)

pytestmark = pytest.mark.timeout(20)

DELAY_QUEUE = f"{QUEUE}.DQ"


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pauses meant for a real Redis, shortened so each scenario takes milliseconds."""
    monkeypatch.setattr(consumer_module, "REDIS_ERROR_PAUSE_S", 0.01)
    monkeypatch.setattr(consumer_module, "REDIS_PROBE_S", 0.01)
    monkeypatch.setattr(consumer_module, "CREDENTIALS_PROBE_S", 0.01)
    # Beats come at the start and after an outage only, so a test can tell which beat.
    monkeypatch.setattr(consumer_module, "HEARTBEAT_INTERVAL_S", 60.0)
    return


def inline(n: int) -> dict[str, Any]:
    return {"id": f"intent-{n:04d}", "recipients": ["user-1"], "text": "hello"}


def body(n: int, *, attempt: int = 1) -> bytes:
    return message_body(QUEUE, inline(n), attempt=attempt, message_id=f"m{n}")


def delayed(n: int, *, eta_ms: int) -> bytes:
    return message_body(DELAY_QUEUE, inline(n), attempt=2, message_id=f"d{n}", eta_ms=eta_ms)


class SpyHealth(Health):
    """Health that keeps every cause it was told of."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def fail(self, cause: str, message: str, **options: Any) -> None:
        self.opened.append(cause)
        super().fail(cause, message, **options)


class Queue(FakeQueue):
    """The outage tests' queue, with a delay queue, scripted failures and a fuller log."""

    def __init__(
        self, bodies: list[bytes], *, delayed: Sequence[bytes] = (), store: Store | None = None
    ) -> None:
        super().__init__(store or Store(), [])
        # Numbered from 1, as `body(n)` and `delayed(n)` number their intents.
        self.waiting = [(f"m{n}", queued) for n, queued in enumerate(bodies, start=1)]
        self.delayed = [(f"d{n}", waiting) for n, waiting in enumerate(delayed, start=1)]
        self.promoted: list[tuple[str, bytes]] = []
        self.given_back: list[tuple[str, str]] = []
        self.ack_calls = 0
        self.ack_failures = 0
        self.promote_fails = False
        self.requeue_fails = False

    async def fetch(self, queue_name: str, count: int, max_bytes: int) -> list[tuple[str, bytes]]:
        if queue_name != DELAY_QUEUE:
            return await super().fetch(queue_name, count, max_bytes)
        self.store.check()
        batch, self.delayed = self.delayed[:count], self.delayed[count:]
        return batch

    async def ack(self, queue_name: str, ids: list[str]) -> None:
        self.ack_calls += 1
        if self.ack_failures:
            self.ack_failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        await super().ack(queue_name, ids)

    async def requeue(self, queue_name: str, ids: list[str]) -> None:
        if self.requeue_fails:
            raise RedisConnectionError("Connection reset by peer")
        self.given_back += [(queue_name, redis_id) for redis_id in ids]
        await super().requeue(queue_name, ids)

    async def promote(self, delayed_id: str, body: bytes, queue_name: str | None = None) -> bool:
        self.store.check()
        if self.promote_fails:
            raise RedisConnectionError("Connection reset by peer")
        self.promoted.append((delayed_id, body))
        return True


async def run_until(consumer: Any, done: Any, stop: asyncio.Event | None = None) -> None:
    """Run the consumer until `done()` holds, then stop it and wait for it to finish."""
    stop = stop or asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        await wait_for(done, timeout=5)
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await running


# -- what a message comes to ---------------------------------------------------------------


@in_loop
async def test_an_unreadable_message_is_buried_with_its_text_and_acked() -> None:
    health = Health()
    rig = Rig(health=health)
    queue = Queue([b"{not json", body(1)])
    consumer = consumer_for(queue, rig.deliverer, health)  # type: ignore[arg-type]
    await run_until(consumer, lambda: len(queue.acked) == 2)
    [entry] = rig.dead_letters.entries
    assert entry.reason == "invalid"
    assert entry.title == "invalid message"
    assert entry.intent == "{not json"
    assert entry.attempts == 0
    assert "not valid JSON" in entry.detail
    # The message after it went out as usual.
    assert [payload["messageRef"] for payload, _ in rig.sender.sent] == ["intent-0001"]
    assert consumer.stats.dead_letters == Counter({"invalid": 1})
    assert consumer.stats.outcomes == Counter({"dead_lettered": 1, "sent": 1})
    assert not queue.taken


@in_loop
async def test_a_crash_reschedules_the_next_attempt_through_the_queue() -> None:
    health = Health()
    rig = Rig(health=health)
    rig.sender.script(KeyError("messageId"))  # a bug, not a Catapush answer
    queue = Queue([body(1, attempt=2)])
    consumer = consumer_for(queue, rig.deliverer, health)  # type: ignore[arg-type]
    await run_until(consumer, lambda: queue.acked == ["m1"])
    [(intent, attempt, delay_ms)] = queue.enqueued
    assert intent == inline(1)
    assert attempt == 3
    assert 10 <= delay_ms <= 20  # the consumer's policy: min 10 ms, max 20 ms
    assert rig.receipts.released == [("intent-0001", "worker-1:m1")]
    assert rig.dead_letters.entries == []
    assert consumer.stats.outcomes == Counter({"crashed": 1})
    assert consumer.stats.dead_letters == Counter()


@in_loop
async def test_a_crash_at_the_last_attempt_is_dead_lettered_exhausted_and_counted_once() -> None:
    health = Health()
    rig = Rig(health=health)
    rig.sender.script(KeyError("messageId"))
    queue = Queue([body(1, attempt=3)])
    consumer = consumer_for(queue, rig.deliverer, health)  # type: ignore[arg-type]
    await run_until(consumer, lambda: queue.acked == ["m1"])
    assert queue.enqueued == []
    [entry] = rig.dead_letters.entries
    assert (entry.id, entry.reason, entry.attempts, entry.intent) == (
        "intent-0001",
        "exhausted",
        3,
        inline(1),
    )
    assert "KeyError" in entry.detail
    assert consumer.stats.dead_letters == Counter({"exhausted": 1})
    assert consumer.stats.outcomes["dead_lettered"] == 1
    # The last attempt is counted once, as its dead letter.
    assert consumer.stats.outcomes["crashed"] == 0


@in_loop
async def test_every_attempt_lands_in_exactly_one_outcome() -> None:
    store = Store()

    async def crash(intent_id: str, attempt: int) -> None:
        raise RuntimeError("boom")

    queue = Queue([body(1, attempt=1), body(2, attempt=3)], store=store)
    consumer = consumer_for(queue, FakeDeliverer(store, crash), Health())
    await run_until(consumer, lambda: len(queue.acked) == 2)
    assert sum(consumer.stats.outcomes.values()) == 2


@in_loop
async def test_a_transient_token_failure_raised_out_of_the_deliverer_counts_as_a_crash() -> None:
    store = Store()

    async def no_token(intent_id: str, attempt: int) -> None:
        raise TokenUnavailable("token endpoint answered 503")

    queue = Queue([body(1)], store=store)
    health = Health()
    consumer = consumer_for(queue, FakeDeliverer(store, no_token), health)
    await run_until(consumer, lambda: queue.acked == ["m1"])
    assert [(intent, attempt) for intent, attempt, _ in queue.enqueued] == [(inline(1), 2)]
    assert consumer.stats.outcomes == Counter({"crashed": 1})
    assert health.ready  # not a refusal of the credentials: nothing is held


@in_loop
async def test_each_outcome_is_counted_once() -> None:
    store = Store()
    results: dict[str, Any] = {
        "intent-0002": Skipped("cp-earlier"),
        "intent-0003": "retry",
        "intent-0004": "defer",
        "intent-0005": DeadLetter("rejected", 400, "Bad Request", "nope"),
        "intent-0006": "crash",
    }

    async def outcome_of(intent_id: str, attempt: int) -> Any:
        result = results.get(intent_id)
        if result == "retry":
            return Reschedule(inline(3), attempt + 1, 10)
        if result == "defer":
            return Reschedule(inline(4), attempt, 2_000)
        if result == "crash":
            raise RuntimeError("boom")
        return result  # None: sent

    queue = Queue([body(n) for n in range(1, 7)] + [b"[]"], store=store)
    consumer = consumer_for(queue, FakeDeliverer(store, outcome_of), Health())
    await run_until(consumer, lambda: len(queue.acked) == 7)
    assert consumer.stats.outcomes == Counter(
        {"sent": 1, "skipped": 1, "retried": 1, "deferred": 1, "dead_lettered": 2, "crashed": 1}
    )
    assert consumer.stats.dead_letters == Counter({"rejected": 1, "invalid": 1})
    assert sorted((intent["id"], attempt) for intent, attempt, _ in queue.enqueued) == [
        ("intent-0003", 2),
        ("intent-0004", 1),
        ("intent-0006", 2),
    ]
    assert not queue.taken


# -- stopping ------------------------------------------------------------------------------


@in_loop
async def test_stop_lets_in_flight_sends_finish_within_grace_and_gives_back_the_late() -> None:
    store = Store()
    finish = asyncio.Event()
    never = asyncio.Event()
    cancelled: list[str] = []

    async def paced(intent_id: str, attempt: int) -> Any:
        if intent_id == "intent-0002":
            await finish.wait()
        if intent_id == "intent-0003":
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(intent_id)
                raise
        return None

    queue = Queue([body(1), body(2), body(3)], store=store)
    deliverer = FakeDeliverer(store, paced)
    consumer = consumer_for(queue, deliverer, Health(), grace_s=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    await wait_for(lambda: queue.acked == ["m1"] and consumer.in_flight == 2, timeout=5)
    stop.set()
    finish.set()  # this one ends within the grace period
    async with asyncio.timeout(5):
        await running
    assert sorted(queue.acked) == ["m1", "m2"]
    assert [intent_id for intent_id, _ in deliverer.sent] == ["intent-0001", "intent-0002"]
    assert cancelled == ["intent-0003"]
    assert queue.given_back == [(QUEUE, "m3")]
    assert not queue.taken
    assert consumer.stats.outcomes == Counter({"sent": 2})


@in_loop
async def test_late_sends_that_cannot_be_given_back_stay_taken_for_the_sweep() -> None:
    store = Store()
    never = asyncio.Event()

    async def hang(intent_id: str, attempt: int) -> None:
        await never.wait()

    queue = Queue([body(1)], store=store)
    queue.requeue_fails = True
    consumer = consumer_for(queue, FakeDeliverer(store, hang), Health(), grace_s=0.05)
    await run_until(consumer, lambda: consumer.in_flight == 1)
    assert queue.acked == []
    assert queue.taken == {"m1"}


# -- the delay queue -----------------------------------------------------------------------


@in_loop
async def test_delayed_messages_are_promoted_when_due_and_given_back_on_stop() -> None:
    now = now_ms()
    queue = Queue(
        [],
        delayed=[
            delayed(1, eta_ms=now - 1_000),
            delayed(2, eta_ms=now + 600_000),
            b"not a message",  # no eta to read: due at once (the consumer buries it)
            delayed(4, eta_ms=now + 30),
        ],
    )
    store = queue.store
    consumer = consumer_for(queue, FakeDeliverer(store), Health())
    bodies = dict(queue.delayed)
    await run_until(consumer, lambda: len(queue.promoted) == 3)
    # In order of eta; the unreadable one counts as due since forever.
    assert [redis_id for redis_id, _ in queue.promoted] == ["d3", "d1", "d4"]
    assert all(promoted == bodies[redis_id] for redis_id, promoted in queue.promoted)
    assert queue.given_back == [(DELAY_QUEUE, "d2")]


@in_loop
async def test_a_delayed_message_that_cannot_be_promoted_stays_held_and_is_given_back() -> None:
    queue = Queue([], delayed=[delayed(1, eta_ms=now_ms() - 1_000)])
    queue.promote_fails = True
    health = Health()
    consumer = consumer_for(queue, FakeDeliverer(queue.store), health)
    await run_until(consumer, lambda: health.has(REDIS))
    assert queue.promoted == []
    assert queue.given_back == [(DELAY_QUEUE, "d1")]


# -- acknowledgements ----------------------------------------------------------------------


@in_loop
async def test_an_ack_redis_refuses_is_tried_again_and_lands_once() -> None:
    queue = Queue([body(1)])
    queue.ack_failures = 2
    health = Health()
    consumer = consumer_for(queue, FakeDeliverer(queue.store), health)
    await run_until(consumer, lambda: queue.acked == ["m1"] and health.ready)
    assert queue.ack_calls == 3
    assert queue.acked == ["m1"]
    assert not queue.taken


@in_loop
async def test_acks_redis_refuses_at_stop_are_left_taken_for_the_sweep() -> None:
    queue = Queue([body(1)])
    queue.ack_failures = 1_000_000
    health = Health()
    deliverer = FakeDeliverer(queue.store)
    consumer = consumer_for(queue, deliverer, health)
    await run_until(consumer, lambda: queue.ack_calls >= 1)
    assert deliverer.sent == [("intent-0001", 1)]
    assert queue.acked == []
    assert queue.taken == {"m1"}


# -- the heartbeat and the watchers --------------------------------------------------------


@in_loop
async def test_redis_is_watched_through_every_outage_and_each_recovery_beats_at_once() -> None:
    store = Store()
    store.fail()
    queue = Queue([], store=store)
    health = Health()
    consumer = consumer_for(queue, FakeDeliverer(store), health)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(2):
            await wait_for(lambda: health.has(REDIS), timeout=5)
            consumer.stats.last_beat = None
            store.recover()
            # The heartbeat loop waits a minute between beats: this beat is the watcher's.
            await wait_for(lambda: consumer.stats.last_beat is not None and health.ready, 5)
            store.fail()  # the next idle fetch finds Redis gone again
    finally:
        stop.set()
        store.recover()
        async with asyncio.timeout(5):
            await running


@in_loop
async def test_refused_credentials_are_tried_again_until_accepted() -> None:
    queue = Queue([])
    health = SpyHealth()
    answers: list[BaseException | None] = [
        RedisConnectionError("Connection refused"),  # the token cache is in Redis
        TokenUnavailable("token endpoint answered 401 invalid_client", permanent=True),
        None,
    ]
    checks = 0

    async def check() -> str:
        nonlocal checks
        checks += 1
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise answer
        return "token"

    health.fail(CREDENTIALS, "token endpoint answered 401 invalid_client")
    consumer = consumer_for(queue, FakeDeliverer(queue.store), health, check_credentials=check)
    await run_until(consumer, lambda: health.ready and not answers)
    # Neither Redis failing nor a second refusal lifted the hold: only the third check did.
    assert checks == 3
    assert health.opened == [CREDENTIALS, REDIS, CREDENTIALS]


@in_loop
async def test_a_passing_token_endpoint_failure_lifts_the_hold() -> None:
    # Only a refusal holds the messages; the retry policy deals with a passing failure.
    queue = Queue([])
    health = Health()

    async def check() -> str:
        raise TokenUnavailable("token endpoint answered 503")

    health.fail(CREDENTIALS, "token endpoint answered 401 invalid_client")
    consumer = consumer_for(queue, FakeDeliverer(queue.store), health, check_credentials=check)
    await run_until(consumer, lambda: health.ready)
    assert not health.has(CREDENTIALS)


@in_loop
async def test_the_heartbeat_beats_from_the_start() -> None:
    queue = Queue([])
    consumer = consumer_for(queue, FakeDeliverer(queue.store), Health())
    await run_until(consumer, lambda: consumer.stats.last_beat is not None)
