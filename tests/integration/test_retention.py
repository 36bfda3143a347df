"""Retention: receipts and status callbacks expire after the configured days."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from dispatcher.callbacks import CallbackEvent
from dispatcher.settings import Settings
from dispatcher.store.callbacks import store_callback
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import Receipt, Receipts

pytestmark = pytest.mark.integration


def test_receipts_and_callbacks_expire_after_the_configured_days(
    redis_server: LocalRedis, redis_client: redis.Redis, settings: Settings, namespace: str
) -> None:
    short = settings.model_copy(update={"receipt_ttl_days": 2.0, "status_ttl_days": 0.5})
    keys = Keys(namespace)
    event = CallbackEvent(
        status="delivered",
        timestamp="2026-01-01T00:00:00+00:00",
        application_id="app",
        message_id="m-1",
        recipient="alice",
        message_ref="kept-1",
    )

    async def write() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            receipts = Receipts(client, keys, claim_ttl_ms=1000, receipt_ttl_s=short.receipt_ttl_s)
            await receipts.record(Receipt("kept-1", "m-1", "2026-01-01T00:00:00Z", 1))
            await store_callback(client, keys, event, ttl_s=short.status_ttl_s)
        finally:
            await client.aclose()

    asyncio.run(write())
    receipt_ttl = redis_client.ttl(keys.receipt("kept-1"))
    callback_ttl = redis_client.ttl(keys.callbacks("kept-1"))
    assert 2 * 86400 - 60 < receipt_ttl <= 2 * 86400
    assert 43200 - 60 < callback_ttl <= 43200
