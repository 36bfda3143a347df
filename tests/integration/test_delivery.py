"""End to end: intents on a real Redis, worker processes, the sandbox Catapush API."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import httpx
import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.localredis import free_port
from tests.conftest import MOBILE_APP_ID, WorkerProcess, wait_until
from tests.integration.helpers import accepted_refs, all_sent, enqueue_many


def delivery_events(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("event") == name]


def test_two_hundred_intents_through_two_processes_are_each_accepted_once(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """200 intents with distinct ids through 2 worker processes reach Catapush exactly once each."""
    ids = enqueue_many(settings, 200)
    worker = start_worker(processes=2, threads=8)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="200 receipts")
    worker.stop()

    refs = accepted_refs(sandbox)
    report("accepted", sum(refs.values()))
    report("distinct ids accepted", len(refs))
    assert set(refs) == set(ids)
    assert max(refs.values()) == 1
    bodies = [entry["body"] for entry in sandbox.admin.requests(kind="messages")]
    assert {body["mobileAppId"] for body in bodies} == {MOBILE_APP_ID}
    assert not delivery_events(worker.events(), "delivery.failed")


def test_three_cold_workers_share_one_oauth_token(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """Three worker processes starting together on an empty token cache make one OAuth request."""
    sandbox.admin.set_latency(100)
    workers = [start_worker(processes=1, threads=16) for _ in range(3)]
    for worker in workers:
        wait_until(
            lambda worker=worker: delivery_events(worker.events(), "worker.started"),
            timeout=30,
            what="the worker to start",
        )
    # Enqueued only once all three wait on the queue, so all three want the token at once.
    ids = enqueue_many(settings, 150)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="150 receipts")
    for worker in workers:
        worker.stop()

    report("oauth requests", sandbox.admin.stats()["oauth_requests"])
    assert sandbox.admin.stats()["oauth_requests"] == 1
    # Every process did send, so each of them needed the token.
    senders = [bool(delivery_events(worker.events(), "delivery.sent")) for worker in workers]
    assert all(senders), senders
    assert sum(accepted_refs(sandbox).values()) == 150


@pytest.mark.fault
def test_tokens_expiring_every_three_seconds_cost_one_oauth_call_per_expiry(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """With 3 s tokens over a slow run, every intent goes out once, with no failed attempt."""
    sandbox.admin.set_token_ttl(3)
    sandbox.admin.set_latency(200)
    ids = enqueue_many(settings, 200)
    # 2 processes x 2 threads at 200 ms a send: about 10 s for 200 intents.
    worker = start_worker(processes=2, threads=2)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="200 receipts")
    worker.stop()

    refs = accepted_refs(sandbox)
    assert set(refs) == set(ids)
    assert max(refs.values()) == 1
    events = worker.events()
    assert not delivery_events(events, "delivery.failed")
    assert {event["attempt"] for event in delivery_events(events, "delivery.sent")} == {1}

    oauth = sorted(entry["ts"] for entry in sandbox.admin.requests(kind="oauth"))
    sends = sorted(entry["ts"] for entry in sandbox.admin.requests(kind="messages"))
    duration = sends[-1] - sends[0]
    assert duration > 6, f"the run was meant to be slow, it took {duration:.1f} s"
    # A token lives 3 s, so two OAuth calls less than 3 s apart would mean two calls for one
    # expiry.
    gaps = [later - earlier for earlier, later in itertools.pairwise(oauth)]
    report("run duration s", duration)
    report("oauth requests", len(oauth))
    report("shortest gap between oauth requests s", min(gaps) if gaps else None)
    report("401 answers", sum(e["status"] == 401 for e in sandbox.admin.requests(kind="messages")))
    assert gaps, "the tokens never expired during the run"
    assert min(gaps) >= 2.9, gaps
    assert len(oauth) <= duration / 3 + 2
    # Neither the client secret nor any token reached the worker's log.
    log_text = worker.log_text()
    issued = [entry["token"] for entry in sandbox.admin.requests(kind="oauth")]
    assert issued
    assert all(token not in log_text for token in issued)
    assert DEFAULT_CLIENT_SECRET not in log_text
    assert any(entry["status"] == 401 for entry in sandbox.admin.requests(kind="messages"))


@pytest.mark.parametrize("text_length", [32768])
def test_a_text_at_the_limit_is_delivered(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    text_length: int,
) -> None:
    """A text of exactly 32,768 characters passes intake, the worker and Catapush's check."""
    producer = Producer.from_settings(settings)
    intent_id = producer.enqueue(
        {"id": "long-text", "recipients": ["alice"], "text": "x" * text_length}
    )
    producer.close()
    start_worker()
    wait_until(lambda: all_sent(redis_client, settings, [intent_id]), timeout=30, what="receipt")
    assert accepted_refs(sandbox) == Counter({"long-text": 1})


def test_a_worker_serves_its_health_and_metrics(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
) -> None:
    """`--metrics-port` serves /healthz, /readyz once the heartbeat runs, and /metrics counts
    outcomes."""
    port = free_port()
    worker = WorkerProcess(settings_env, threads=8, extra=("--metrics-port", str(port)))
    try:
        probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

        def healthy() -> bool:
            try:
                return probe.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, what="the worker's /healthz")
        wait_until(lambda: probe.get("/readyz").status_code == 200, timeout=30, what="/readyz")
        sandbox.admin.add_fault(status=403, identifier="user1")
        ids = enqueue_many(settings, 3)
        wait_until(lambda: all_sent(redis_client, settings, [ids[0], ids[2]]), timeout=30, what="2")
        wait_until(
            lambda: (
                'dispatcher_dead_lettered_total{reason="rejected"} 1' in probe.get("/metrics").text
            ),
            timeout=10,
            what="the dead letter to be counted",
        )
        metrics = probe.get("/metrics").text
        assert 'dispatcher_deliveries_total{outcome="sent"} 2' in metrics
        assert 'dispatcher_deliveries_total{outcome="dead_lettered"} 1' in metrics
        assert "# TYPE dispatcher_sends_in_flight gauge" in metrics
        # The two accepted sends are timed from their enqueueing.
        assert "dispatcher_enqueue_to_accepted_seconds_count 2.0" in metrics
        probe.close()
    finally:
        worker.close()
