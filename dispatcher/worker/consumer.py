"""The worker's consumer: one asyncio event loop per process, many sends in flight.

It fetches messages in batches (up to `concurrency` in flight), runs one delivery attempt
per message as a task, reschedules retries onto dramatiq's delay queue, acknowledges in
batches, promotes due delayed messages, and beats the heartbeat that keeps its messages
its own. On stop it fetches nothing more, lets in-flight sends finish within the grace
period, and hands everything it holds back to the queues.

A message is acknowledged only after its outcome is recorded (receipt, dead letter or
rescheduled copy), so a crash at any point leaves it to be redelivered, and the receipt
keeps the redelivered copy from being sent twice.

Each lane (`dispatcher.lanes`) is a queue of its own: transactional is fetched first, and
bulk may hold at most all but a reserve of the in-flight slots, so a transactional intent
always finds one; bulk keeps a few of its own while it has messages, so the rate limiter
always has bulk waiters to give bulk's share to. Retries go to their own lane's delay queue
and come back to that lane.

Redis going away (a restart, a failover) strands nothing: the consumer stops fetching, each
message it holds keeps its place (an attempt that had not reached Catapush runs again once
Redis answers; an outcome already decided is written through the `Recorder`, which never gives
up), the worker reports not ready, and it resumes by itself. Catapush refusing the credentials
holds the messages the same way, without spending their attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from dispatcher.backoff import RetryPolicy
from dispatcher.errors import TokenUnavailable
from dispatcher.fanout import PARTS_RECORD_TTL_S, parts_record
from dispatcher.intents import MAX_INTENT_BYTES, id_of
from dispatcher.lanes import BULK, TRANSACTIONAL, Lane, bulk_cap, bulk_floor
from dispatcher.logs import get_logger
from dispatcher.messages import Queued, Unreadable, now_ms, read_message
from dispatcher.outcome import DeadLetter, Sent
from dispatcher.settings import DEFAULT_CONCURRENCY, DEFAULT_MAX_IN_FLIGHT_BYTES
from dispatcher.store.keys import delay_queue_name
from dispatcher.store.queue import RedisQueue
from dispatcher.worker.delivery import (
    AttemptResult,
    Cancelled,
    Deliverer,
    Reschedule,
    Scheduled,
    Skipped,
    Split,
)
from dispatcher.worker.durable import Recorder
from dispatcher.worker.health import CREDENTIALS, REDIS, Health
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver, enqueue_to_accepted_s
from dispatcher.worker.orphans import AUDIT_INTERVAL_S, OrphanAudit

FETCH_BATCH = 256
# While sends are in flight, fetch again once 1/this of the slots are free.
FETCH_MIN_ROOM_SHARE = 4
IDLE_POLL_MIN_S = 0.005
IDLE_POLL_MAX_S = 0.2
# While sends are in flight, a lane found empty is asked again after a pause growing up to
# this: a fetch per freed slot would cost a round trip per send, and a transactional
# intent arriving behind a busy bulk lane waits at most this long to be fetched.
LANE_EMPTY_POLL_MAX_S = 0.05
HEARTBEAT_INTERVAL_S = 3.0
DELAY_POLL_S = 0.25
DELAY_HELD_MAX = 10_000
# Bodies of delayed messages held in memory until their eta (big attachments add up).
DELAY_HELD_MAX_BYTES = 32 * 1024 * 1024
REDIS_ERROR_PAUSE_S = 1.0
# The largest message a fetch may bring in: an intent at intake's size cap, in its envelope.
LARGEST_MESSAGE_BYTES = MAX_INTENT_BYTES + 4096
# While Redis is away, how often it is asked whether it is back.
REDIS_PROBE_S = 0.5
# While Catapush refuses the credentials, how often they are tried again.
CREDENTIALS_PROBE_S = 10.0

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
        elif isinstance(result, Scheduled):
            self.outcomes["scheduled"] += 1
        elif isinstance(result, Split):
            self.outcomes["split"] += 1
        elif isinstance(result, Cancelled):
            self.outcomes["cancelled"] += 1
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
        health: Health,
        recorder: Recorder,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
        largest_message_bytes: int = LARGEST_MESSAGE_BYTES,
        retry: RetryPolicy,
        grace_s: float,
        check_credentials: Callable[[], Awaitable[object]] | None = None,
        observer: WorkerObserver = NO_OBSERVER,
        lanes: Sequence[tuple[Lane, str]] = (),
    ) -> None:
        self._queue = queue
        # (lane, queue name), transactional first; by default the queue's first one.
        self._lanes = tuple(lanes) or ((TRANSACTIONAL, queue.queue_name),)
        self._lane_of = {name: lane for lane, name in self._lanes}
        # Without the transactional lane there is nothing to keep a reserve for.
        serves_transactional = any(lane == TRANSACTIONAL for lane, _ in self._lanes)
        self._bulk_cap = bulk_cap(concurrency) if serves_transactional else concurrency
        self._bulk_floor = min(self._bulk_cap, bulk_floor(concurrency))
        self._bulk_in_flight = 0
        # Whether bulk's last fetch found messages: only then are slots kept for it.
        self._bulk_has_more = False
        # queue name -> (pause after its last empty fetch, monotonic time to ask again)
        self._lane_empty: dict[str, tuple[float, float]] = {}
        self._deliverer = deliverer
        self.health = health
        self._recorder = recorder
        self._concurrency = concurrency
        self._max_in_flight_bytes = max_in_flight_bytes
        self._largest_message_bytes = largest_message_bytes
        self._fetch_min_room = max(1, concurrency // FETCH_MIN_ROOM_SHARE)
        self._retry = retry
        self._grace_s = grace_s
        self._check_credentials = check_credentials
        self._observer = observer
        # task -> (redis id, body size, intent id when it has one, queue name)
        self._in_flight: dict[asyncio.Task[None], tuple[str, int, str | None, str]] = {}
        self._bytes_in_flight = 0
        self._slot_freed = asyncio.Event()
        self._acks: dict[str, list[str]] = {}
        self._acks_waiting = asyncio.Event()
        # (eta, redis id, body, the queue it returns to)
        self._delayed: list[tuple[int, str, bytes, str]] = []
        self._delayed_bytes = 0
        # Set once in-flight work is over: the heartbeat and the watchers serve the drain too.
        self._closing = asyncio.Event()
        self.stats = ConsumerStats()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes_in_flight

    async def run(self, stop: asyncio.Event) -> None:
        helpers = [
            asyncio.create_task(self._beat(), name="heartbeat"),
            asyncio.create_task(self._flush_acks(stop), name="acks"),
            asyncio.create_task(self._promote_delayed(stop), name="delayed"),
            asyncio.create_task(self._watch_redis(), name="redis-watch"),
            asyncio.create_task(self._watch_credentials(), name="credentials-watch"),
            asyncio.create_task(self._audit_orphans(), name="orphans"),
        ]
        try:
            await self._consume(stop)
            await self._drain()
        finally:
            stop.set()
            self._acks_waiting.set()
            self._closing.set()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._give_back_delayed()
            await self._retire()

    # -- the queue ---------------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        idle_s = IDLE_POLL_MIN_S
        while not stop.is_set():
            if not self.health.ready:
                # Fetching more while Redis or Catapush is away only strands more.
                await _first(self.health.wait_ready(), stop.wait())
                continue
            self._slot_freed.clear()
            try:
                taken = await self._fetch_lanes()
            except RedisError as exc:
                self._recorder.redis_failed(exc)
                continue
            if taken:
                idle_s = IDLE_POLL_MIN_S
                continue
            if not self._in_flight:
                await _sleep_unless(stop, idle_s)
                idle_s = min(idle_s * 2, IDLE_POLL_MAX_S)
                continue
            # Busy: look again once a send finishes, or after the idle poll for a lane
            # that had nothing.
            await _first(self._slot_freed.wait(), stop.wait(), asyncio.sleep(idle_s))
            idle_s = min(idle_s * 2, LANE_EMPTY_POLL_MAX_S)

    def _lane_room(self, lane: Lane, room: int) -> int:
        """Slots `lane` may fill now out of `room` free ones."""
        if lane == BULK:
            return min(room, self._bulk_cap - self._bulk_in_flight)
        # Transactional leaves bulk its floor while bulk has messages waiting.
        kept = max(0, self._bulk_floor - self._bulk_in_flight) if self._bulk_has_more else 0
        if len(self._lanes) == 1:
            kept = 0
        return room - kept

    def _fetch_order(self) -> list[tuple[Lane, str]]:
        # Bulk below its floor goes first, so that it always has waiters at the limiter.
        if self._bulk_in_flight < self._bulk_floor:
            return sorted(self._lanes, key=lambda item: item[0] != BULK)
        return list(self._lanes)

    async def _fetch_lanes(self) -> int:
        """Fetch from each lane what its room allows; how many messages came."""
        taken = 0
        for lane, name in self._fetch_order():
            pause, again = self._lane_empty.get(name, (0.0, 0.0))
            if self._in_flight and time.monotonic() < again:
                continue
            room = self._concurrency - len(self._in_flight)
            room_bytes = self._max_in_flight_bytes - self._bytes_in_flight
            lane_room = self._lane_room(lane, room)
            # A fetch takes at least one message, whatever its size; so while anything is
            # held, fetch only with room for the largest one, and the budget holds. And
            # while busy, wait for a quarter of the slots to free up: a fetch per freed slot
            # costs a round trip per message (bulk below its floor tops up at once).
            busy = bool(self._in_flight)
            min_room = self._fetch_min_room
            if lane == BULK:
                min_room = (
                    1 if self._bulk_in_flight < self._bulk_floor else min(min_room, self._bulk_cap)
                )
            if (
                lane_room <= 0
                or (busy and lane_room < min_room)
                or (busy and room_bytes < self._largest_message_bytes)
            ):
                continue
            batch = await self._queue.fetch(name, min(lane_room, FETCH_BATCH), max_bytes=room_bytes)
            if lane == BULK:
                self._bulk_has_more = bool(batch)
            if batch:
                self._lane_empty.pop(name, None)
            else:
                pause = min(max(pause * 2, IDLE_POLL_MIN_S), LANE_EMPTY_POLL_MAX_S)
                self._lane_empty[name] = (pause, time.monotonic() + pause)
            for redis_id, body in batch:
                message = read_message(name, redis_id, body)
                intent_id = _message_intent_id(message)
                task = asyncio.create_task(self._handle(message, intent_id, name))
                self._in_flight[task] = (redis_id, len(body), intent_id, name)
                self._bytes_in_flight += len(body)
                if lane == BULK:
                    self._bulk_in_flight += 1
                task.add_done_callback(self._finished)
            taken += len(batch)
        return taken

    def _finished(self, task: asyncio.Task[None]) -> None:
        held = self._in_flight.pop(task, None)
        if held is not None:
            self._bytes_in_flight -= held[1]
            if self._lane_of.get(held[3]) == BULK:
                self._bulk_in_flight -= 1
        self._slot_freed.set()

    async def _handle(
        self, message: Queued | Unreadable, intent_id: str | None, queue_name: str
    ) -> None:
        if isinstance(message, Unreadable):
            self.stats.count(await self._deliverer.bury_unreadable(message.raw, message.problem), 0)
            self._ack(queue_name, message.redis_id)
            return
        try:
            result = await self._attempt(message, intent_id, self._lane_of[queue_name])
        except Exception as exc:
            # A bug must not lose the intent: count a failed attempt and try again later;
            # once the attempts are spent, dead-letter it.
            await self._recover(message, intent_id, exc, queue_name)
            self._ack(queue_name, message.redis_id)
            return
        self.stats.count(result, message.attempt)
        if isinstance(result, Sent):
            created = message.intent.get("createdAt") if isinstance(message.intent, dict) else None
            if isinstance(created, int):
                self._observer.accepted(enqueue_to_accepted_s(created, now_ms()))
        if isinstance(result, Scheduled | Split):
            await self._hold(result, queue_name)
        if isinstance(result, Reschedule):
            again = result
            await self._recorder.write(
                # Retries stay in their lane.
                lambda: self._queue.enqueue(
                    again.intent,
                    attempt=again.attempt,
                    delay_ms=again.delay_ms,
                    queue_name=queue_name,
                ),
                what="retry",
                intent_id=intent_id,
            )
        self._ack(queue_name, message.redis_id)

    async def _hold(self, result: Scheduled | Split, queue_name: str) -> None:
        """Queue what stands for the intent now: its copy on the schedule, or its parts.
        Both stay in the intent's lane."""
        if isinstance(result, Scheduled):
            scheduled = result
            await self._recorder.write(
                lambda: self._queue.schedule(
                    queue_name,
                    scheduled.intent_id,
                    scheduled.intent,
                    send_at_ms=scheduled.send_at_ms,
                ),
                what="schedule",
                intent_id=scheduled.intent_id,
            )
            return
        split = result
        record = parts_record(len(split.parts), split.recipients, now_ms())
        await self._recorder.write(
            lambda: self._queue.push_parts(
                queue_name,
                split.parts,
                record_key=self._queue.keys.parts(split.intent_id),
                record=record,
                ttl_s=PARTS_RECORD_TTL_S,
            ),
            what="parts",
            intent_id=split.intent_id,
        )

    async def _attempt(self, message: Queued, intent_id: str | None, lane: Lane) -> AttemptResult:
        """The delivery attempt, run again while what it needs is away; nothing is spent."""
        owner = f"{self._queue.worker_id}:{message.redis_id}"
        while True:
            try:
                return await self._deliverer.attempt(
                    message.intent, message.attempt, claim_owner=owner, lane=lane
                )
            except RedisError as exc:
                # Raised before the send (see `delivery`): nothing went out.
                self._recorder.redis_failed(exc)
                log.info("delivery.held", intent_id=intent_id, cause=REDIS)
                await self.health.wait_clear(REDIS)
            except TokenUnavailable as exc:
                if not exc.permanent:
                    raise
                self.health.fail(CREDENTIALS, str(exc), repeat_s=60.0)
                log.info("delivery.held", intent_id=intent_id, cause=CREDENTIALS)
                await self.health.wait_clear(CREDENTIALS)

    async def _recover(
        self, message: Queued, intent_id: str | None, exc: Exception, queue_name: str
    ) -> None:
        error = repr(exc)
        log.error(
            "delivery.crashed",
            intent_id=intent_id,
            attempt=message.attempt,
            error=error,
            exc_info=exc,
        )
        if self._retry.exhausted(message.attempt):
            self.stats.count(
                await self._deliverer.bury_exhausted(message.intent, message.attempt, error),
                message.attempt,
            )
            return
        # Counted here, not for the last attempt: that one is counted as its dead letter.
        self.stats.outcomes["crashed"] += 1
        delay = self._retry.delay_ms(message.attempt)
        await self._recorder.write(
            lambda: self._queue.enqueue(
                message.intent, attempt=message.attempt + 1, delay_ms=delay, queue_name=queue_name
            ),
            what="retry",
            intent_id=intent_id,
        )

    # -- acknowledgements --------------------------------------------------------------------

    def _ack(self, queue_name: str, redis_id: str) -> None:
        self._acks.setdefault(queue_name, []).append(redis_id)
        self._acks_waiting.set()

    async def _flush_acks(self, stop: asyncio.Event) -> None:
        # Acks batch themselves: while one call is out, the next ones gather.
        while True:
            await self._acks_waiting.wait()
            self._acks_waiting.clear()
            failed = False
            for queue_name in [name for name, ids in self._acks.items() if ids]:
                ids, self._acks[queue_name] = self._acks[queue_name], []
                try:
                    await self._queue.ack(queue_name, ids)
                except RedisError as exc:
                    self._recorder.redis_failed(exc)
                    self._acks[queue_name] = ids + self._acks[queue_name]
                    failed = True
                    break
            if failed:
                if self._closing.is_set() and self.health.has(REDIS):
                    # Stopping with Redis away: these stay taken, for the sweep.
                    log.error("queue.ack_abandoned", count=self._acks_held())
                    return
                await asyncio.sleep(REDIS_ERROR_PAUSE_S)
                self._acks_waiting.set()
                continue
            if stop.is_set() and not self._in_flight and not self._acks_held():
                return

    def _acks_held(self) -> int:
        return sum(len(ids) for ids in self._acks.values())

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        started = time.monotonic()
        log.info("worker.draining", in_flight=len(self._in_flight))
        _, late = await asyncio.wait(list(self._in_flight), timeout=self._grace_s)
        if late:
            stranded: dict[str, list[str]] = {}
            intent_ids: dict[str, list[str | None]] = {}
            for task in late:
                redis_id, _, intent_id, queue_name = self._in_flight[task]
                stranded.setdefault(queue_name, []).append(redis_id)
                intent_ids.setdefault(queue_name, []).append(intent_id)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for queue_name, ids in stranded.items():
                try:
                    await self._queue.requeue(queue_name, ids)
                except RedisError as exc:
                    # Still in this worker's ack set: the sweep hands them back.
                    log.error(
                        "queue.requeue_failed",
                        count=len(ids),
                        intent_ids=intent_ids[queue_name],
                        error=repr(exc),
                    )
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
        held: dict[str, list[str]] = {}
        for _, redis_id, _, queue_name in self._delayed:
            held.setdefault(delay_queue_name(queue_name), []).append(redis_id)
        self._delayed.clear()
        self._delayed_bytes = 0
        for delayed_name, ids in held.items():
            try:
                await self._queue.requeue(delayed_name, ids)
            except RedisError as exc:
                log.error("queue.requeue_failed", count=len(ids), redis_ids=ids, error=repr(exc))

    # -- the delay queue, the heartbeat and the watchers -------------------------------------

    async def _promote_delayed(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.health.has(REDIS):
                await _first(self.health.wait_clear(REDIS), stop.wait())
                continue
            try:
                for _, queue_name in self._lanes:
                    room_bytes = DELAY_HELD_MAX_BYTES - self._delayed_bytes
                    if len(self._delayed) >= DELAY_HELD_MAX or room_bytes <= 0:
                        break
                    for redis_id, body in await self._queue.fetch(
                        delay_queue_name(queue_name), FETCH_BATCH, max_bytes=room_bytes
                    ):
                        heapq.heappush(self._delayed, (_eta(body), redis_id, body, queue_name))
                        self._delayed_bytes += len(body)
                for _, queue_name in self._lanes:
                    # A full batch may leave more due ones behind.
                    while (
                        await self._queue.promote_scheduled(queue_name, FETCH_BATCH) >= FETCH_BATCH
                    ):
                        pass
                now = now_ms()
                while self._delayed and self._delayed[0][0] <= now:
                    _, redis_id, body, queue_name = self._delayed[0]
                    # Popped only once moved: a failed move stays held, and is given back.
                    await self._queue.promote(redis_id, body, queue_name)
                    heapq.heappop(self._delayed)
                    self._delayed_bytes -= len(body)
            except RedisError as exc:
                self._recorder.redis_failed(exc)
            wait_s = DELAY_POLL_S
            if self._delayed:
                wait_s = min(wait_s, max(0.0, (self._delayed[0][0] - now_ms()) / 1000))
            await _sleep_unless(stop, wait_s)

    async def _beat(self) -> None:
        while not self._closing.is_set():
            try:
                await self._queue.heartbeat()
                self.stats.last_beat = time.monotonic()
            except RedisError as exc:
                self._recorder.redis_failed(exc)
            await _sleep_unless(self._closing, HEARTBEAT_INTERVAL_S)

    async def _audit_orphans(self) -> None:
        """Give back ids the ack set lists but this worker no longer holds (after a failover
        lost their acks); see `dispatcher.worker.orphans`."""
        audits = {name: OrphanAudit() for _, name in self._lanes}
        while not self._closing.is_set():
            await _sleep_unless(self._closing, AUDIT_INTERVAL_S)
            if self._closing.is_set():
                return
            try:
                for name, audit in audits.items():
                    taken = await self._queue.taken(name)
                    held = [entry[0] for entry in self._in_flight.values() if entry[3] == name]
                    orphans = audit.observe(taken, [*held, *self._acks.get(name, [])])
                    if orphans:
                        moved = await self._queue.requeue(name, orphans)
                        log.warning(
                            "queue.orphans_requeued", count=moved, queue=name, redis_ids=orphans
                        )
            except RedisError as exc:
                self._recorder.redis_failed(exc)

    async def _watch_redis(self) -> None:
        """While Redis is a problem, ask it every `REDIS_PROBE_S` whether it is back."""
        while not self._closing.is_set():
            if self.health.has(REDIS):
                try:
                    await self._queue.redis.ping()
                except RedisError as exc:
                    self._recorder.redis_failed(exc)
                else:
                    self.health.recover(REDIS)
                    # Beat at once: after a long outage the others may take us for dead.
                    with contextlib.suppress(RedisError):
                        await self._queue.heartbeat()
                        self.stats.last_beat = time.monotonic()
            await _sleep_unless(self._closing, REDIS_PROBE_S)

    async def _watch_credentials(self) -> None:
        """While Catapush refuses the credentials, try them again now and then."""
        check = self._check_credentials
        while not self._closing.is_set():
            await _sleep_unless(self._closing, CREDENTIALS_PROBE_S)
            if check is None or not self.health.has(CREDENTIALS):
                continue
            try:
                await check()
            except TokenUnavailable as exc:
                if exc.permanent:
                    self.health.fail(CREDENTIALS, str(exc), repeat_s=60.0)
                    continue
            except RedisError as exc:
                self._recorder.redis_failed(exc)
                continue
            self.health.recover(CREDENTIALS)


def _message_intent_id(message: Queued | Unreadable) -> str | None:
    return None if isinstance(message, Unreadable) else id_of(message.intent)


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
