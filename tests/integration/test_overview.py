"""The queue overview: `dispatcher status` with no id, the worker's /metrics and the server's
`GET /v1/queues` give each lane's depth, oldest age, scheduled and retrying counts, and the
dead letters by reason."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import redis

from dispatcher.messages import message_body, now_ms
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetterEntry, DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import free_port
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import run_cli
from tests.integration.test_server import ServerProcess

pytestmark = pytest.mark.timeout(60)

MINUTE_MS = 60_000


def put(client: redis.Redis, keys: Keys, queue: str, body: bytes, message_id: str) -> None:
    """As a raw producer writes a message."""
    client.hset(keys.queue_messages(queue), message_id, body)
    client.rpush(keys.queue(queue), message_id)


def stale(queue: str, message_id: str, age_ms: int) -> bytes:
    """A message enqueued `age_ms` ago."""
    message: dict[str, Any] = orjson.loads(
        message_body(
            queue,
            {"id": message_id, "recipients": ["old-user"], "text": "old", "priority": "bulk"},
            attempt=1,
            message_id=message_id,
        )
    )
    message["message_timestamp"] = now_ms() - age_ms
    return orjson.dumps(message)


def plant(settings: Settings, client: redis.Redis) -> None:
    """Bulk: a message 2 minutes old at the head, 4 more behind it, one retry (attempt 2) and
    one deferred first attempt on its delay queue, one intent scheduled an hour ahead (the
    deferred and the scheduled one make 2 scheduled). Transactional: 3 waiting. Dead letters:
    two rejected, one expired."""
    keys = Keys(settings.namespace)
    bulk = f"{settings.queue}.bulk"
    put(client, keys, bulk, stale(bulk, "old-bulk-1", 2 * MINUTE_MS), "old-bulk-1")
    producer = Producer.from_settings(settings)
    try:
        producer.enqueue_many(
            [
                {"id": f"bulk-{n:03d}", "recipients": [f"b{n}"], "text": "x", "isMarketing": True}
                for n in range(4)
            ]
            + [{"id": f"tx-{n:03d}", "recipients": [f"t{n}"], "text": "x"} for n in range(3)]
            + [
                {
                    "id": "scheduled-1",
                    "recipients": ["later"],
                    "text": "x",
                    "priority": "bulk",
                    "sendAt": now_ms() + 60 * MINUTE_MS,
                }
            ]
        )
        later = {"recipients": ["later"], "text": "x", "priority": "bulk"}
        producer.requeue(later | {"id": "retry-2"}, attempt=2, delay_ms=3_600_000)
        producer.requeue(later | {"id": "deferred-1"}, attempt=1, delay_ms=3_600_000)
    finally:
        producer.close()
    store = DeadLetters(client, keys)
    for entry_id, reason in (("dead-1", "rejected"), ("dead-2", "rejected"), ("dead-3", "expired")):
        store.add(
            DeadLetterEntry.create(
                intent_id=entry_id,
                reason=reason,  # type: ignore[arg-type]
                status_code=None,
                title="t",
                detail="d",
                attempts=1,
                intent={},
            )
        )


def test_status_without_an_id_prints_the_overview(
    settings: Settings, settings_env: dict[str, str], redis_client: redis.Redis
) -> None:
    plant(settings, redis_client)
    answer = run_cli(settings_env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    overview = orjson.loads(answer.stdout)
    transactional, bulk = overview["lanes"]
    assert transactional == {
        "lane": "transactional",
        "queue": settings.queue,
        "depth": 3,
        "oldest_age_s": transactional["oldest_age_s"],
        "scheduled": 0,
        "retrying": 0,
    }
    assert 0 <= transactional["oldest_age_s"] < 60
    assert (bulk["lane"], bulk["queue"]) == ("bulk", f"{settings.queue}.bulk")
    assert (bulk["depth"], bulk["scheduled"], bulk["retrying"]) == (5, 2, 1)
    assert bulk["oldest_age_s"] >= 120
    assert overview["dead_letters"] == {"rejected": 2, "invalid": 0, "exhausted": 0, "expired": 1}

    text = run_cli(settings_env, "status")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["lane", "queue", "depth", "oldest", "scheduled", "retrying"]
    assert lines[2].split()[:3] == ["bulk", f"{settings.queue}.bulk", "5"]
    assert lines[2].split()[3].startswith("2m")
    assert lines[3] == "dead letters: 3 (rejected 2, invalid 0, exhausted 0, expired 1)"


def test_an_empty_lane_has_no_oldest_age(settings: Settings, settings_env: dict[str, str]) -> None:
    overview = orjson.loads(run_cli(settings_env, "status", "--json").stdout)
    assert [lane["oldest_age_s"] for lane in overview["lanes"]] == [None, None]
    assert [lane["depth"] for lane in overview["lanes"]] == [0, 0]


def test_the_worker_metrics_carry_the_overview(
    settings: Settings, settings_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """A worker serving only transactional leaves bulk as planted, and reports it."""
    plant(settings, redis_client)
    port = free_port()
    worker = WorkerProcess(
        settings_env, extra=("--metrics-port", str(port), "--lanes", "transactional")
    )
    try:
        probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

        def metrics() -> str:
            try:
                return probe.get("/metrics").text
            except httpx.TransportError:
                return ""

        text = wait_until(metrics, timeout=30, what="the worker's /metrics")
        probe.close()
    finally:
        worker.close()
    assert "dispatcher_overview_up 1.0" in text
    assert 'dispatcher_lane_depth{lane="bulk"} 5.0' in text
    assert 'dispatcher_lane_scheduled{lane="bulk"} 2.0' in text
    assert 'dispatcher_lane_retrying{lane="bulk"} 1.0' in text
    assert 'dispatcher_lane_oldest_age_seconds{lane="bulk"}' in text
    assert 'dispatcher_dead_letters_by_reason{reason="rejected"} 2.0' in text
    assert 'dispatcher_dead_letters_by_reason{reason="expired"} 1.0' in text


def test_the_server_overview_lists_both_lanes(
    settings: Settings,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
) -> None:
    plant(settings, redis_client)
    server = ServerProcess(settings_env)
    try:
        server.wait_listening()
        queues = server.http.get("/v1/queues").json()["queues"]
    finally:
        server.close()
    bulk = f"{settings.queue}.bulk"
    assert [(queue["name"], queue["lane"], queue["depth"]) for queue in queues] == [
        (settings.queue, "transactional", 3),
        (f"{settings.queue}.DQ", "transactional", 0),
        (bulk, "bulk", 5),
        (f"{bulk}.DQ", "bulk", 2),
    ]
    assert queues[2]["oldest_age_s"] >= 120
