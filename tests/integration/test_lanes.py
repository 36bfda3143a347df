"""Lanes against a real Redis, worker and sandbox: a transactional intent overtakes a bulk
backlog, bulk keeps its share while both are busy, `--lanes` serves one lane only, retries
stay in their lane, and an unknown priority is refused at intake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from dispatcher.messages import message_body
from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.queue import RedisQueue
from dispatcher.store.receipts import ReceiptReader
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import accepted_refs, run_cli
from tests.integration.test_server import ServerProcess

pytestmark = pytest.mark.timeout(90)

BULK_QUEUE_SUFFIX = ".bulk"


def intents(prefix: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}-{n:05d}", "recipients": [f"{prefix}-user{n}"], "text": "hi", **extra}
        for n in range(count)
    ]


def enqueue(settings: Settings, items: list[dict[str, Any]]) -> list[str]:
    producer = Producer.from_settings(settings)
    try:
        return producer.enqueue_many(items)
    finally:
        producer.close()


def accepted_in_order(sandbox: SandboxProcess, since: int = 0) -> list[tuple[int, str]]:
    """(seq, messageRef) of every message Catapush accepted after `since`, in order."""
    return [
        (entry["seq"], entry["messageRef"])
        for entry in sandbox.admin.requests(kind="messages", since=since)
        if entry["status"] == 201
    ]


def last_seq(sandbox: SandboxProcess) -> int:
    entries = sandbox.admin.requests(kind="messages")
    return max((entry["seq"] for entry in entries), default=0)


def test_a_transactional_intent_overtakes_a_bulk_backlog(
    settings: Settings,
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str, Any], None],
) -> None:
    enqueue(settings, intents("bulk", 400, priority="bulk"))
    start_worker(threads=16, DISPATCHER_RATE_LIMIT="50", DISPATCHER_RATE_BURST="5")
    wait_until(
        lambda: len(accepted_in_order(sandbox)) >= 20, timeout=30, what="the backlog to start"
    )
    before = last_seq(sandbox)
    [login] = enqueue(settings, [{"id": "login-code", "recipients": ["alice"], "text": "123"}])
    wait_until(lambda: accepted_refs(sandbox)[login] == 1, timeout=30, what="the login code")
    after = accepted_in_order(sandbox, since=before)
    position = [ref for _, ref in after].index(login)
    bulk_sent = sum(ref.startswith("bulk-") for _, ref in accepted_in_order(sandbox))
    report("bulk sends between enqueue and acceptance", position)
    report("bulk sent when the login code went out", bulk_sent)
    assert position < 60
    assert bulk_sent < 300


def test_bulk_keeps_its_share_while_transactional_is_busy(
    settings: Settings,
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str, Any], None],
) -> None:
    enqueue(settings, intents("bulk", 400, priority="bulk") + intents("tx", 400))
    start_worker(threads=16, DISPATCHER_RATE_LIMIT="100", DISPATCHER_RATE_BURST="5")
    wait_until(lambda: len(accepted_in_order(sandbox)) >= 300, timeout=60, what="300 sends")
    first = [ref for _, ref in accepted_in_order(sandbox)][:300]
    bulk = sum(ref.startswith("bulk-") for ref in first)
    report("bulk part of the first 300 sends", round(bulk / 300, 3))
    # The share is 0.2 of the slots both lanes wait for; the start adds a few.
    assert 0.15 <= bulk / 300 <= 0.35


def test_a_worker_serving_the_transactional_lane_leaves_bulk_untouched(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
) -> None:
    bulk_ids = enqueue(settings, intents("bulk", 5, isMarketing=True))
    tx_ids = enqueue(settings, intents("tx", 5))
    keys = Keys(settings.namespace)
    assert redis_client.llen(keys.queue(settings.queue + BULK_QUEUE_SUFFIX)) == 5
    worker = WorkerProcess(settings_env, extra=("--lanes", "transactional"))
    try:
        wait_until(
            lambda: all(accepted_refs(sandbox)[intent_id] == 1 for intent_id in tx_ids),
            timeout=30,
            what="the transactional intents",
        )
        # The registry names the queues this worker serves: the sweep finds its ack sets.
        entries = [orjson.loads(entry) for entry in redis_client.hvals(keys.workers)]
        assert entries == [[settings.queue, f"{settings.queue}.DQ"]]
    finally:
        worker.close()
    assert not set(bulk_ids) & set(accepted_refs(sandbox))
    assert redis_client.llen(keys.queue(settings.queue + BULK_QUEUE_SUFFIX)) == 5


def test_retries_stay_in_their_lane(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
) -> None:
    """A worker serving bulk alone would never see a retry that left the bulk lane."""
    [intent_id] = enqueue(settings, intents("campaign", 1, priority="bulk"))
    sandbox.admin.add_fault(status=503, count=2, identifier="campaign-user0")
    worker = WorkerProcess(settings_env, extra=("--lanes", "bulk"))
    reader = ReceiptReader(redis_client, Keys(settings.namespace))
    try:
        receipt = wait_until(lambda: reader.get(intent_id), timeout=30, what="the receipt")
    finally:
        worker.close()
    assert receipt.attempts == 3
    keys = Keys(settings.namespace)
    assert redis_client.exists(keys.queue(settings.queue), keys.delay_queue(settings.queue)) == 0


def test_an_unknown_priority_is_refused_at_intake_and_the_rest_enqueued(
    settings: Settings, settings_env: dict[str, str], redis_client: redis.Redis, tmp_path: Any
) -> None:
    source = tmp_path / "intents.jsonl"
    source.write_text(
        '{"id": "first-one", "recipients": ["a1"], "text": "x", "priority": "bulk"}\n'
        '{"id": "second-one", "recipients": ["a2"], "text": "x", "priority": "urgent"}\n'
        '{"id": "third-one", "recipients": ["a3"], "text": "x"}\n'
    )
    result = run_cli(settings_env, "enqueue", str(source))
    assert result.returncode == 1
    assert "line 2: priority: Input should be 'transactional' or 'bulk'" in result.stderr
    assert result.stdout.split() == ["first-one", "third-one"]
    keys = Keys(settings.namespace)
    assert redis_client.llen(keys.queue(settings.queue + BULK_QUEUE_SUFFIX)) == 1
    assert redis_client.llen(keys.queue(settings.queue)) == 1


def test_the_worker_refuses_an_unknown_lane(settings_env: dict[str, str]) -> None:
    result = run_cli(settings_env, "worker", "--lanes", "urgent")
    assert result.returncode == 2
    assert "--lanes: unknown lane 'urgent'" in result.stderr


def test_a_dead_workers_messages_go_back_to_their_own_lanes(
    redis_server: LocalRedis, namespace: str
) -> None:
    """The registry lists every queue a worker serves, so the sweep finds both ack sets."""
    bulk = "notifications.bulk"

    async def scenario() -> tuple[int, int, int]:
        client = aioredis.Redis.from_url(redis_server.url)
        keys = Keys(namespace)

        def queue(worker_id: str) -> RedisQueue:
            return RedisQueue(
                client,
                namespace,
                "notifications",
                worker_id=worker_id,
                heartbeat_timeout_ms=200,
                queue_names=["notifications", bulk],
            )

        try:
            dead = queue("dead-worker")
            for name in ("notifications", bulk):
                for n in range(2):
                    body = message_body(name, {"id": f"x{n}"}, attempt=1, message_id=f"{name}{n}")
                    await client.hset(keys.queue_messages(name), f"{name}{n}", body)
                    await client.rpush(keys.queue(name), f"{name}{n}")
                assert len(await dead.fetch(name, 10)) == 2
            await asyncio.sleep(0.3)
            moved = await queue("sweeper").heartbeat()
            return (
                moved,
                int(await client.llen(keys.queue("notifications"))),
                int(await client.llen(keys.queue(bulk))),
            )
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (4, 2, 2)


def test_http_intake_routes_by_priority_and_refuses_an_unknown_one(
    settings: Settings, settings_env: dict[str, str], redis_client: redis.Redis
) -> None:
    server = ServerProcess(settings_env)
    try:
        server.wait_listening()
        bad = {"id": "bad-priority", "recipients": ["a"], "text": "x", "priority": "urgent"}
        refused = server.http.post("/v1/notifications", json=bad)
        good = {"id": "good-priority", "recipients": ["a"], "text": "x", "priority": "bulk"}
        accepted = server.http.post("/v1/notifications", json=good)
    finally:
        server.close()
    assert refused.status_code == 422
    assert refused.json()["errors"] == ["priority: Input should be 'transactional' or 'bulk'"]
    assert accepted.status_code == 202
    keys = Keys(settings.namespace)
    assert redis_client.llen(keys.queue(settings.queue + BULK_QUEUE_SUFFIX)) == 1
    assert redis_client.llen(keys.queue(settings.queue)) == 0
