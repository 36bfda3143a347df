"""The Coalescer: requests of one loop turn go as one batch, results and errors go back to
their callers, and while a batch is out the next ones gather."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dispatcher.store.coalesce import Coalescer

pytestmark = pytest.mark.timeout(10)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def run(self, requests: Sequence[int]) -> list[int]:
        self.batches.append(list(requests))
        await self.release.wait()
        if self.fail:
            raise ConnectionError("store away")
        return [request * 10 for request in requests]


def test_requests_of_one_turn_go_as_one_batch_and_each_gets_its_result() -> None:
    async def scenario() -> tuple[list[int], list[list[int]]]:
        store = Recorder()
        coalescer = Coalescer(store.run)
        results = await asyncio.gather(*(coalescer.submit(n) for n in range(5)))
        return list(results), store.batches

    results, batches = asyncio.run(scenario())
    assert results == [0, 10, 20, 30, 40]
    assert batches == [[0, 1, 2, 3, 4]]


def test_batches_are_cut_at_the_largest_size() -> None:
    async def scenario() -> list[list[int]]:
        store = Recorder()
        coalescer = Coalescer(store.run, max_batch=2, max_in_flight=3)
        await asyncio.gather(*(coalescer.submit(n) for n in range(5)))
        return store.batches

    assert asyncio.run(scenario()) == [[0, 1], [2, 3], [4]]


def test_requests_arriving_while_a_batch_is_out_gather_for_the_next() -> None:
    async def scenario() -> list[list[int]]:
        store = Recorder()
        store.release.clear()
        coalescer = Coalescer(store.run)
        first = asyncio.ensure_future(coalescer.submit(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(coalescer.submit(n)) for n in (2, 3, 4)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert store.batches == [[1]]
        store.release.set()
        await asyncio.gather(first, *later)
        return store.batches

    assert asyncio.run(scenario()) == [[1], [2, 3, 4]]


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    async def scenario() -> list[BaseException | int]:
        coalescer = Coalescer(Recorder(fail=True).run)
        return await asyncio.gather(
            *(coalescer.submit(n) for n in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def scenario() -> list[int]:
        store = Recorder()
        store.release.clear()
        coalescer = Coalescer(store.run)
        calls = [asyncio.ensure_future(coalescer.submit(n)) for n in range(3)]
        await asyncio.sleep(0)
        calls[1].cancel()
        store.release.set()
        return [await calls[0], await calls[2]]

    assert asyncio.run(scenario()) == [0, 20]
