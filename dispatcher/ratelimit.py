"""One rate limit for every worker process and thread, kept in Redis (GCRA).

The generic cell rate algorithm keeps one number per limit: the theoretical arrival time
(TAT) of the next request. A request may go when TAT is no further ahead of now than the
burst allows; each request moves TAT on by one emission interval (1/rate). A Lua script
does this atomically and hands out up to N slots in one round trip, so a process claims
slots for all its waiting sends at once.

`pause_all` implements `Retry-After`: it sets a pause key that the same script honours
first, so every worker holds off, not only the one that was told to.

Waiting for a slot is not a failed attempt: callers wait here, and only a wait longer than
`max_wait_s` is reported (`SlotUnavailable`) so the caller can reschedule the intent
without spending one of its attempts.

Waiters queue per lane (see `dispatcher.lanes`): the pump hands slots to transactional
waiters first, and to bulk ones whenever transactional has none waiting or bulk is below its
share of the slots granted while both waited. Since every process does so with slots of the
one fleet-wide limit, the share holds for the fleet too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from dispatcher.errors import SlotUnavailable
from dispatcher.lanes import BULK, DEFAULT_BULK_SHARE, TRANSACTIONAL, GrantShare, Lane
from dispatcher.logs import get_logger
from dispatcher.store.keys import Keys
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver

DEFAULT_MAX_WAIT_S = 30.0

log = get_logger(__name__)

# KEYS: tat, pause. ARGV: interval ms, burst tolerance ms, slots wanted.
# Returns {granted, wait_ms}: slots granted now, and when asking again makes sense.
_ACQUIRE = """
local paused = redis.call('pttl', KEYS[2])
if paused > 0 then return {0, paused} end
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('get', KEYS[1]) or '0')
if tat < now then tat = now end
local granted = 0
while granted < wanted and tat - now <= tolerance do
    tat = tat + interval
    granted = granted + 1
end
if granted > 0 then
    redis.call('set', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + 1000))
end
local wait = tat - now - tolerance
if wait < 0 then wait = 0 end
return {granted, math.ceil(wait)}
"""

# KEYS: pause, tat. ARGV: pause ms. Extends, never shortens, a pause already set.
_PAUSE = """
local ms = tonumber(ARGV[1])
if redis.call('pttl', KEYS[1]) < ms then
    redis.call('set', KEYS[1], '1', 'PX', ms)
    return 1
end
return 0
"""


# Adding intervals one by one drifts in floating point; without this slack an idle limiter
# could grant one request fewer than intended.
FLOAT_SLACK_MS = 0.001
# Requests granted on time can still reach the API bunched up (one waited on a busy event
# loop, the next did not). The burst is held back by a quarter of an interval, and by at
# least this much time: at a high rate a quarter interval is a fraction of a millisecond,
# while the bunching measured at the sandbox was up to about 8 ms on a quiet machine (at
# 1,000 and 2,500/s) and about 16 ms with both cores busy (2,604 and 2,608 requests in a
# second at 2,500/s plus 100 with a 12 ms margin).
JITTER_MARGIN_INTERVALS = 0.25
JITTER_MARGIN_MIN_MS = 25.0


def jitter_margin_ms(rate_per_s: float) -> float:
    """How much of the burst is held back for arrival jitter."""
    return max(JITTER_MARGIN_INTERVALS * 1000.0 / rate_per_s, JITTER_MARGIN_MIN_MS)


def burst_tolerance_ms(rate_per_s: float, burst: int) -> float:
    """How far ahead of now TAT may run after an idle spell.

    From idle, the burst's requests go at once but for the jitter margin: the last of them
    waits up to `jitter_margin_ms`. So any window of one second holds at most
    `rate + burst - 1` grants, and the API sees no more than `rate + burst` even when
    requests granted apart arrive together.
    """
    if burst <= 1:
        return FLOAT_SLACK_MS
    interval = 1000.0 / rate_per_s
    return max(0.0, (burst - 1) * interval - jitter_margin_ms(rate_per_s)) + FLOAT_SLACK_MS


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[None]
    deadline: float
    # Set when a grant round passed this waiter over: it is then counted as a wait.
    delayed: bool = False


class SharedRateLimiter:
    """Per process: waiting sends queue up here, and one of them at a time asks Redis."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        *,
        rate_per_s: float,
        burst: int,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        observer: WorkerObserver = NO_OBSERVER,
        account: str | None = None,
        bulk_share: float = DEFAULT_BULK_SHARE,
    ) -> None:
        self._redis = redis
        self._observer = observer
        self._keys = keys
        # Each account of an accounts file has a limit of its own (None: the single one).
        self._rate_key = keys.rate_limit_of(account)
        self._pause_key = keys.pause_of(account)
        self._interval_ms = 1000.0 / rate_per_s
        self._tolerance_ms = burst_tolerance_ms(rate_per_s, burst)
        self._max_wait_s = max_wait_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._waiters: dict[Lane, deque[_Waiter]] = {TRANSACTIONAL: deque(), BULK: deque()}
        self._share = GrantShare(bulk_share)
        self._pump: asyncio.Task[None] | None = None

    @property
    def granted_by_lane(self) -> tuple[int, int]:
        """Slots granted while both lanes waited: (all of them, bulk's)."""
        return self._share.granted, self._share.bulk_granted

    async def acquire(self, lane: Lane = TRANSACTIONAL) -> None:
        """Return when this send may go; raise `SlotUnavailable` past the longest wait."""
        started = time.monotonic()
        waiter = _Waiter(asyncio.get_running_loop().create_future(), started + self._max_wait_s)
        self._waiters[lane].append(waiter)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._grant_slots())
        await waiter.future
        if waiter.delayed:
            self._observer.rate_limit_waited(time.monotonic() - started)

    async def pause_all(self, seconds: float) -> None:
        """Hold every worker off for `seconds` (a server's `Retry-After`)."""
        milliseconds = max(1, int(seconds * 1000))
        try:
            if await self._pause(keys=[self._pause_key], args=[milliseconds]):
                log.warning("ratelimit.paused", seconds=seconds)
        except RedisError as exc:
            log.warning("ratelimit.pause_failed", error=repr(exc))

    async def _grant_slots(self) -> None:
        # One pump per process: it claims slots for every waiter in one script call, then
        # sleeps until the next slot can be had.
        while self._waiting():
            wanted = self._waiting()
            try:
                granted, wait_ms = await self._acquire(
                    keys=[self._rate_key, self._pause_key],
                    args=[self._interval_ms, self._tolerance_ms, wanted],
                )
            except RedisError as exc:
                for waiters in self._waiters.values():
                    for waiter in waiters:
                        if not waiter.future.done():
                            waiter.future.set_exception(exc)
                    waiters.clear()
                return
            for _ in range(int(granted)):
                self._grant_one()
            if not self._waiting():
                return
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.delayed = True
            wait_s = max(int(wait_ms), 1) / 1000
            self._expire_waiters(wait_s)
            # A little jitter so processes that woke together do not collide every time.
            await asyncio.sleep(wait_s + random.uniform(0, self._interval_ms / 4000))

    def _waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def _grant_one(self) -> None:
        transactional, bulk = self._waiters[TRANSACTIONAL], self._waiters[BULK]
        # A waiter cancelled meanwhile takes no slot, nor a turn in the share.
        while transactional and transactional[0].future.done():
            transactional.popleft()
        while bulk and bulk[0].future.done():
            bulk.popleft()
        lane = self._share.choose(bool(transactional), bool(bulk))
        if lane is not None:
            self._waiters[lane].popleft().future.set_result(None)

    def _expire_waiters(self, wait_s: float) -> None:
        now = time.monotonic()
        for lane, waiters in self._waiters.items():
            kept: deque[_Waiter] = deque()
            for waiter in waiters:
                if waiter.future.done():  # cancelled while waiting
                    continue
                if now + wait_s > waiter.deadline:
                    waiter.future.set_exception(SlotUnavailable(wait_s))
                else:
                    kept.append(waiter)
            self._waiters[lane] = kept
