"""Dead identifiers on the events stream: one entry per event, however often Catapush
reports it, and `dispatcher events tail` shows them."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from dispatcher.callbacks import CallbackEvent
from dispatcher.catapush.events import publish_event
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from tests.integration.helpers import run_cli

pytestmark = pytest.mark.integration


def callback(status: str, message_id: str = "m-1", recipient: str = "alice") -> CallbackEvent:
    return CallbackEvent(
        status=status,  # type: ignore[arg-type]
        timestamp="2026-01-02T03:04:05Z",
        application_id="4242",
        message_id=message_id,
        recipient=recipient,
        message_ref="intent-0001",
    )


def publish_all(
    url: str, keys: Keys, events: list[CallbackEvent], maxlen: int, *, together: bool = True
) -> list[str | None]:
    async def run() -> list[str | None]:
        client = aioredis.Redis.from_url(url)
        try:
            if together:
                # At once, as two deliveries of one callback may arrive.
                calls = (publish_event(client, keys, e, maxlen=maxlen) for e in events)
                return list(await asyncio.gather(*calls))
            return [await publish_event(client, keys, e, maxlen=maxlen) for e in events]
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_a_dead_identifier_is_one_entry_even_when_reported_twice(
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    namespace: str,
    settings_env: dict[str, str],
) -> None:
    keys = Keys(namespace)
    ids = publish_all(
        redis_server.url,
        keys,
        [
            callback("IdentifierNotFound"),
            callback("IdentifierNotFound"),
            callback("delivered"),
            callback("iOSErrorInvalidToken", message_id="m-2", recipient="bob"),
            callback("AndroidErrorInvalidToken", message_id="m-3", recipient="carol"),
            callback("AndroidErrorInvalidToken", message_id="m-3", recipient="carol"),
        ],
        maxlen=1000,
    )
    assert sum(entry is not None for entry in ids) == 3
    entries = redis_client.xrange(keys.events)
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
    assert sorted((f["type"], f["identifier"], f["status"]) for f in fields) == [
        ("identifier_not_found", "alice", "IdentifierNotFound"),
        ("invalid_push_token", "bob", "iOSErrorInvalidToken"),
        ("invalid_push_token", "carol", "AndroidErrorInvalidToken"),
    ]
    alice = next(f for f in fields if f["identifier"] == "alice")
    assert alice["messageId"] == "m-1"
    assert alice["intent_id"] == "intent-0001"

    tail = run_cli(settings_env, "events", "tail", "--json")
    assert tail.returncode == 0, tail.stderr
    shown = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert [entry["identifier"] for entry in shown] == [f["identifier"] for f in fields]


def test_the_stream_is_capped(
    redis_server: LocalRedis, redis_client: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    events = [callback("IdentifierNotFound", message_id=f"m-{n}") for n in range(2000)]
    publish_all(redis_server.url, keys, events, maxlen=100, together=False)
    # MAXLEN ~ trims whole nodes of the radix tree: about the cap, never far above it.
    assert 100 <= redis_client.xlen(keys.events) < 300


def test_an_identifier_not_found_callback_sent_twice_is_one_entry(
    settings_env: dict[str, str], redis_client: redis.Redis, namespace: str
) -> None:
    """Through `dispatcher serve`: Catapush sends the same IdentifierNotFound twice (once as
    JSON, once as a GET), and the stream holds it once."""
    from tests.integration.test_server import SECRET, ServerProcess

    server = ServerProcess({**settings_env, "DISPATCHER_CALLBACK_SECRET": SECRET})
    try:
        server.wait_listening()
        fields = {
            "type": "MessageStatus",
            "timestamp": "2026-01-02T03:04:05Z",
            "applicationId": "4242",
            "messageId": "6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
            "recipient": "gone-user",
            "status": "IdentifierNotFound",
            "messageRef": "intent-0042",
        }
        first = server.http.post(f"/v1/callbacks/catapush?secret={SECRET}", json=fields)
        second = server.http.get("/v1/callbacks/catapush", params={**fields, "secret": SECRET})
        assert (first.status_code, second.status_code) == (200, 200)
    finally:
        server.close()
    entries = redis_client.xrange(Keys(namespace).events)
    assert len(entries) == 1
    entry = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert entry["type"] == "identifier_not_found"
    assert entry["identifier"] == "gone-user"
    assert entry["intent_id"] == "intent-0042"
