"""What keeps a worker process from working right now, by cause.

The consumer stops fetching while any cause is open (Redis unreachable, Redis refusing the
credentials, Catapush refusing ours), the readiness probe answers 503 naming them, and each
cause is logged when it opens, at most once a `repeat_s` while it stays open, and when it
closes: a long outage is a log line every so often, never a flood.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.logs import get_logger

# Causes the worker knows; free text is fine too, these keep the names in one place.
REDIS = "redis"
CREDENTIALS = "credentials"

DEFAULT_REPEAT_S = 60.0

log = get_logger(__name__)


@dataclass
class _Problem:
    message: str
    since: float
    logged_at: float
    repeat_s: float


class Health:
    def __init__(
        self, *, repeat_s: float = DEFAULT_REPEAT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._repeat_s = repeat_s
        self._clock = clock
        self._problems: dict[str, _Problem] = {}
        self._ready = asyncio.Event()
        self._ready.set()
        self._cleared: dict[str, asyncio.Event] = {}

    @property
    def ready(self) -> bool:
        return not self._problems

    def problems(self) -> dict[str, str]:
        return {cause: problem.message for cause, problem in self._problems.items()}

    def has(self, cause: str) -> bool:
        return cause in self._problems

    def fail(
        self, cause: str, message: str, *, repeat_s: float | None = None, **context: object
    ) -> None:
        """Open (or keep open) `cause`; logs on opening and then once a `repeat_s`.

        A passing outage is worth a line every few seconds; a refusal that only ops can
        mend, a line a minute: the caller says which.
        """
        now = self._clock()
        problem = self._problems.get(cause)
        if problem is None:
            self._problems[cause] = _Problem(message, now, now, repeat_s or self._repeat_s)
            self._ready.clear()
            self._cleared.setdefault(cause, asyncio.Event()).clear()
            log.error("worker.not_ready", cause=cause, error=message, **context)
            return
        problem.message = message
        if repeat_s is not None:
            problem.repeat_s = repeat_s
        if now - problem.logged_at >= problem.repeat_s:
            problem.logged_at = now
            log.error(
                "worker.still_not_ready",
                cause=cause,
                error=message,
                for_s=round(now - problem.since, 1),
                **context,
            )

    def recover(self, cause: str) -> None:
        problem = self._problems.pop(cause, None)
        if problem is None:
            return
        log.info("worker.recovered", cause=cause, after_s=round(self._clock() - problem.since, 1))
        self._cleared[cause].set()
        if not self._problems:
            self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_clear(self, cause: str) -> None:
        """Return once `cause` is not open (at once if it is not)."""
        if cause in self._problems:
            await self._cleared[cause].wait()
