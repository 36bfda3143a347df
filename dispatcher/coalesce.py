"""Requests made in the same turn of the event loop, sent to Redis as one call.

A worker process runs many sends at once, and they reach the same steps together: the rate
limiter wakes a batch of them, and they all claim their intent; answers come back in bursts,
and they all store their receipt. One Redis call per step and per intent costs more CPU in
the client than anything else the worker does, so each such step hands its request to a
`Coalescer`, which gathers what arrives before the loop turns and runs it as one batch.
Under light load a batch is one request and nothing waits longer than one turn of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

# Keeps one script call's argument list, and the time Redis spends on it, small.
DEFAULT_MAX_BATCH = 256


class Coalescer(Generic[Request, Result]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[Request]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future[Result]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, request: Request) -> Result:
        """The result of `request`, or the batch's exception (a `RedisError`, say)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((request, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.ensure_future(self._run(pending[start : start + self._max_batch]))
            # The loop keeps only weak references to tasks.
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run_batch([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
