"""Requests made in the same turn of the event loop, sent to Redis as one call.

A worker process runs many sends at once, and they reach the same steps together: the rate
limiter wakes a batch of them, and they all claim their intent; answers come back in bursts,
and they all store their receipt. One Redis call per step and per intent costs more CPU in
the client than anything else the worker does, so each such step hands its request to a
`Coalescer`, which gathers what arrives before the loop turns and runs it as one batch.
Under light load a batch is one request and nothing waits longer than one turn of the loop;
under load, requests that arrive while a batch is out wait for it and go together next, so
the batches grow with the load instead of the calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")

# Keeps one script call's argument list, and the time Redis spends on it, small.
DEFAULT_MAX_BATCH = 256
# Batches out at once; more requests wait for one to come back.
DEFAULT_MAX_IN_FLIGHT = 1


class Coalescer(Generic[Request, Result]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[Request]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[Request, asyncio.Future[Result]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, request: Request) -> Result:
        """The result of `request`, or the batch's exception (a `RedisError`, say)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((request, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled and self._pending and len(self._running) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._running) < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.ensure_future(self._run(batch))
            # The loop keeps only weak references to tasks.
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._schedule()

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
