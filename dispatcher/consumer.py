"""The worker's consumer: one asyncio event loop per process, many sends in flight.

It fetches messages in batches (up to `concurrency` in flight), runs one delivery attempt
per message as a task, reschedules retries onto dramatiq's delay queue, acknowledges in
batches, promotes due delayed messages, and beats the heartbeat that keeps its messages
its own. On stop it fetches nothing more, lets in-flight sends finish within the grace
period, and hands everything it holds back to the queues.

A message is acknowledged only after its outcome is recorded (receipt, dead letter or
rescheduled copy), so a crash at any point leaves it to be redelivered, and the receipt
keeps the redelivered copy from being sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from dispatcher.backoff import backoff_delay_ms
from dispatcher.delivery import AttemptResult, Deliverer, Reschedule, Skipped
from dispatcher.logs import get_logger
from dispatcher.messages import Queued, Unreadable, now_ms, read_message
from dispatcher.outcome import DeadLetter, Sent
from dispatcher.queue import RedisQueue
from dispatcher.settings import DEFAULT_CONCURRENCY

FETCH_BATCH = 256
IDLE_POLL_MIN_S = 0.005
IDLE_POLL_MAX_S = 0.2
HEARTBEAT_INTERVAL_S = 3.0
DELAY_POLL_S = 0.25
DELAY_HELD_MAX = 10_000
REDIS_ERROR_PAUSE_S = 1.0

log = get_logger(__name__)


@dataclass
class ConsumerStats:
    """What this process did since it started; exposed on the worker's /metrics."""

    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    last_beat: float | None = None  # monotonic time of the last heartbeat Redis took

    def count(self, result: AttemptResult, attempt: int) -> None:
        if isinstance(result, Sent):
            self.outcomes["sent"] += 1
        elif isinstance(result, Skipped):
            self.outcomes["skipped"] += 1
        elif isinstance(result, DeadLetter):
            self.outcomes["dead_lettered"] += 1
            self.dead_letters[result.reason] += 1
        elif result.attempt > attempt:
            self.outcomes["retried"] += 1
        else:
            self.outcomes["deferred"] += 1


class Consumer:
    def __init__(
        self,
        queue: RedisQueue,
        deliverer: Deliverer,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int,
        backoff_min_ms: int,
        backoff_max_ms: int,
        grace_s: float,
    ) -> None:
        self._queue = queue
        self._deliverer = deliverer
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._backoff_min_ms = backoff_min_ms
        self._backoff_max_ms = backoff_max_ms
        self._grace_s = grace_s
        self._in_flight: dict[asyncio.Task[None], str] = {}
        self._slot_freed = asyncio.Event()
        self._acks: list[str] = []
        self._acks_waiting = asyncio.Event()
        self._delayed: list[tuple[int, str, bytes]] = []
        self.stats = ConsumerStats()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, stop: asyncio.Event) -> None:
        helpers = [
            asyncio.create_task(self._beat(stop), name="heartbeat"),
            asyncio.create_task(self._flush_acks(stop), name="acks"),
            asyncio.create_task(self._promote_delayed(stop), name="delayed"),
        ]
        try:
            await self._consume(stop)
            await self._drain()
        finally:
            stop.set()
            self._acks_waiting.set()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._give_back_delayed()
            await self._retire()

    # -- the queue ---------------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        idle_s = IDLE_POLL_MIN_S
        name = self._queue.queue_name
        while not stop.is_set():
            room = self._concurrency - len(self._in_flight)
            if room <= 0:
                self._slot_freed.clear()
                await _first(self._slot_freed.wait(), stop.wait())
                continue
            try:
                batch = await self._queue.fetch(name, min(room, FETCH_BATCH))
            except RedisError as exc:
                log.error("queue.fetch_failed", error=repr(exc))
                await _sleep_unless(stop, REDIS_ERROR_PAUSE_S)
                continue
            if not batch:
                await _sleep_unless(stop, idle_s)
                idle_s = min(idle_s * 2, IDLE_POLL_MAX_S)
                continue
            idle_s = IDLE_POLL_MIN_S
            for redis_id, body in batch:
                message = read_message(name, redis_id, body)
                task = asyncio.create_task(self._handle(message))
                self._in_flight[task] = redis_id
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._slot_freed.set()

    async def _handle(self, message: Queued | Unreadable) -> None:
        if isinstance(message, Unreadable):
            try:
                self.stats.count(
                    await self._deliverer.bury_unreadable(message.raw, message.problem), 0
                )
            except Exception as exc:
                log.error("delivery.recovery_failed", error=repr(exc))
                await self._give_back(message.redis_id)
                return
            self._ack(message.redis_id)
            return
        try:
            result = await self._deliverer.attempt(message.intent, message.attempt)
            self.stats.count(result, message.attempt)
            if isinstance(result, Reschedule):
                await self._queue.enqueue(
                    result.intent, attempt=result.attempt, delay_ms=result.delay_ms
                )
        except Exception as exc:
            # A bug or an outage must not lose the intent: count a failed attempt and try
            # again later; once the attempts are spent, dead-letter it.
            self.stats.outcomes["crashed"] += 1
            if not await self._recover(message, exc):
                await self._give_back(message.redis_id)
                return
        self._ack(message.redis_id)

    async def _recover(self, message: Queued, exc: Exception) -> bool:
        error = repr(exc)
        log.error("delivery.crashed", attempt=message.attempt, error=error, exc_info=exc)
        try:
            if message.attempt >= self._max_attempts:
                await self._deliverer.bury_exhausted(message.intent, message.attempt, error)
            else:
                delay = backoff_delay_ms(
                    message.attempt, self._backoff_min_ms, self._backoff_max_ms
                )
                await self._queue.enqueue(
                    message.intent, attempt=message.attempt + 1, delay_ms=delay
                )
        except Exception as second:
            log.error("delivery.recovery_failed", error=repr(second))
            return False
        return True

    async def _give_back(self, redis_id: str) -> None:
        """Put a message whose outcome could not be recorded back on the queue, later."""
        await asyncio.sleep(REDIS_ERROR_PAUSE_S)
        try:
            await self._queue.requeue(self._queue.queue_name, [redis_id])
        except RedisError as exc:
            # Still taken by this worker: handed back on stop, or swept after a crash.
            log.error("queue.requeue_failed", count=1, error=repr(exc))

    # -- acknowledgements --------------------------------------------------------------------

    def _ack(self, redis_id: str) -> None:
        self._acks.append(redis_id)
        self._acks_waiting.set()

    async def _flush_acks(self, stop: asyncio.Event) -> None:
        # Acks batch themselves: while one call is out, the next ones gather.
        while True:
            await self._acks_waiting.wait()
            self._acks_waiting.clear()
            if self._acks:
                ids, self._acks = self._acks, []
                try:
                    await self._queue.ack(self._queue.queue_name, ids)
                except RedisError as exc:
                    log.error("queue.ack_failed", count=len(ids), error=repr(exc))
                    self._acks = ids + self._acks
                    await asyncio.sleep(REDIS_ERROR_PAUSE_S)
                    self._acks_waiting.set()
                    continue
            if stop.is_set() and not self._in_flight and not self._acks:
                return

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        started = time.monotonic()
        log.info("worker.draining", in_flight=len(self._in_flight))
        _, late = await asyncio.wait(list(self._in_flight), timeout=self._grace_s)
        if late:
            stranded = [self._in_flight[task] for task in late]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            try:
                await self._queue.requeue(self._queue.queue_name, stranded)
            except RedisError as exc:
                log.error("queue.requeue_failed", count=len(stranded), error=repr(exc))
        log.info(
            "worker.drained",
            seconds=round(time.monotonic() - started, 2),
            given_back=len(late),
        )

    async def _retire(self) -> None:
        try:
            if not await self._queue.retire():
                # Something is still taken: the sweep hands it back once the beat is old.
                log.warning("worker.left_messages_taken")
        except RedisError as exc:
            log.warning("worker.retire_failed", error=repr(exc))

    async def _give_back_delayed(self) -> None:
        ids = [redis_id for _, redis_id, _ in self._delayed]
        self._delayed.clear()
        try:
            await self._queue.requeue(self._queue.delay_queue_name, ids)
        except RedisError as exc:
            log.error("queue.requeue_failed", count=len(ids), error=repr(exc))

    # -- the delay queue and the heartbeat ---------------------------------------------------

    async def _promote_delayed(self, stop: asyncio.Event) -> None:
        name = self._queue.delay_queue_name
        while not stop.is_set():
            try:
                if len(self._delayed) < DELAY_HELD_MAX:
                    for redis_id, body in await self._queue.fetch(name, FETCH_BATCH):
                        heapq.heappush(self._delayed, (_eta(body), redis_id, body))
                now = now_ms()
                while self._delayed and self._delayed[0][0] <= now:
                    _, redis_id, body = heapq.heappop(self._delayed)
                    await self._queue.promote(redis_id, body)
            except RedisError as exc:
                log.error("queue.delay_failed", error=repr(exc))
            wait_s = DELAY_POLL_S
            if self._delayed:
                wait_s = min(wait_s, max(0.0, (self._delayed[0][0] - now_ms()) / 1000))
            await _sleep_unless(stop, wait_s)

    async def _beat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._queue.heartbeat()
                self.stats.last_beat = time.monotonic()
            except RedisError as exc:
                log.warning("heartbeat.failed", error=repr(exc))
            await _sleep_unless(stop, HEARTBEAT_INTERVAL_S)


def _eta(body: bytes) -> int:
    # A delayed body that cannot be read is due at once: the consumer dead-letters it.
    try:
        data: Any = orjson.loads(body)
        eta = data["options"]["eta"]
        return int(eta)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _first(*awaitables: Any) -> None:
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
