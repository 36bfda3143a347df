"""Claims and receipts against a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import ClaimState, Receipt, ReceiptReader, Receipts
from dispatcher.store.throughput import minute_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def test_an_owner_finds_its_own_claim_held_and_others_find_it_busy(
    redis_server: LocalRedis, namespace: str
) -> None:
    async def scenario() -> list[ClaimState]:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            receipts = Receipts(client, Keys(namespace), claim_ttl_ms=10_000)
            states = [
                (await receipts.claim("intent-1", "w1:m1")).state,
                # The same attempt run again (its first answer lost): still ours.
                (await receipts.claim("intent-1", "w1:m1")).state,
                (await receipts.claim("intent-1", "w2:m9")).state,
                (await receipts.claim("intent-1")).state,
            ]
            await receipts.record(Receipt("intent-1", "cp-1", "2026-01-01T00:00:00Z", 1))
            states.append((await receipts.claim("intent-1", "w1:m1")).state)
            return states
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [
        ClaimState.CLAIMED,
        ClaimState.CLAIMED,
        ClaimState.BUSY,
        ClaimState.BUSY,
        ClaimState.ALREADY_SENT,
    ]


def test_receipts_recorded_together_are_stored_with_their_ttl_and_counted_once_each(
    redis_server: LocalRedis, namespace: str
) -> None:
    keys = Keys(namespace)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            receipts = Receipts(client, keys, claim_ttl_ms=10_000, receipt_ttl_s=3600)
            await asyncio.gather(
                *(
                    receipts.record(Receipt(f"intent-{n}", f"cp-{n}", "2026-01-01T00:00:00Z", 1))
                    for n in range(5)
                )
            )
        finally:
            await client.aclose()

    before = minute_of(time.time())
    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_server.url)
    try:
        reader = ReceiptReader(client, keys)
        assert [reader.get(f"intent-{n}").message_id for n in range(5)] == [  # type: ignore[union-attr]
            f"cp-{n}" for n in range(5)
        ]
        assert 3500 < client.ttl(keys.receipt("intent-0")) <= 3600
        minutes = {before, minute_of(time.time())}
        counted = sum(int(client.get(keys.throughput("sent", minute)) or 0) for minute in minutes)
        assert counted == 5
    finally:
        client.close()
