"""Writing an outcome to Redis until Redis takes it, however long Redis is away.

Once Catapush has accepted an intent, its receipt must be stored or a redelivered copy is sent
again; once an intent is dead-lettered, rescheduled or handed back, that must be stored or the
intent is stranded. So these writes are never given up on: a failure marks Redis as a problem
for the worker's `Health` (which stops fetching and reports not ready), and the write is tried
again with capped, jittered backoff. Only cancelling the task (a stop past its grace period)
ends the wait, and then the message is still in the worker's ack set, for the sweep to hand
back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from dispatcher.logs import get_logger
from dispatcher.store.faults import describe, repeat_s_for
from dispatcher.worker.health import REDIS, Health

PAUSE_MIN_S = 0.05
PAUSE_MAX_S = 2.0

T = TypeVar("T")

log = get_logger(__name__)


class Recorder:
    def __init__(
        self,
        health: Health,
        *,
        pause_min_s: float = PAUSE_MIN_S,
        pause_max_s: float = PAUSE_MAX_S,
    ) -> None:
        self._health = health
        self._pause_min_s = pause_min_s
        self._pause_max_s = pause_max_s

    def redis_failed(self, exc: RedisError) -> None:
        """Tell the worker's health that Redis failed a call."""
        self._health.fail(REDIS, describe(exc), repeat_s=repeat_s_for(exc))

    async def write(
        self, operation: Callable[[], Awaitable[T]], *, what: str, intent_id: str | None
    ) -> T:
        """Run `operation` until it succeeds; `what` and `intent_id` name it in the log."""
        pause = self._pause_min_s
        failed_at: float | None = None
        while True:
            try:
                result = await operation()
            except RedisError as exc:
                self.redis_failed(exc)
                if failed_at is None:
                    failed_at = time.monotonic()
                    log.warning(
                        "outcome.record_failed",
                        what=what,
                        intent_id=intent_id,
                        error=describe(exc),
                    )
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, self._pause_max_s)
                continue
            if failed_at is not None:
                log.info(
                    "outcome.recorded",
                    what=what,
                    intent_id=intent_id,
                    late_s=round(time.monotonic() - failed_at, 2),
                )
            return result
