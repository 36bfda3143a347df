"""Claims and receipts against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from dispatcher.keys import Keys
from dispatcher.localredis import LocalRedis
from dispatcher.receipts import ClaimState, Receipt, Receipts

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
