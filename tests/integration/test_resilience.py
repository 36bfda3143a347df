"""Resilience against a misbehaving API, network and fleet: the sandbox with faults injected."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetterEntry
from tests.conftest import wait_until
from tests.integration.helpers import (
    accepted_refs,
    all_sent,
    dead_letters,
    enqueue_many,
    run_cli,
    sent_count,
)

FORBIDDEN = "Forbidden - Wrong authentication / Bad OAuth request (re-authenticating won't help)"


def send_times(sandbox: SandboxProcess) -> list[float]:
    return sorted(entry["ts"] for entry in sandbox.admin.requests(kind="messages"))


def test_twenty_consecutive_503s_cost_retries_not_intents(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """After 20 straight 503s, all 50 intents are delivered exactly once and none is dead."""
    sandbox.admin.add_fault(status=503, count=20)
    ids = enqueue_many(settings, 50)
    start_worker(processes=2, threads=8)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="50 receipts")

    refs = accepted_refs(sandbox)
    assert set(refs) == set(ids)
    assert set(refs.values()) == {1}
    report("503 answers", sandbox.admin.stats()["messages_by_status"].get("503"))
    report("delivered", len(refs))
    assert sandbox.admin.stats()["messages_by_status"].get("503") == 20
    assert dead_letters(redis_client, settings).count() == 0


@pytest.mark.fault
def test_the_shared_rate_limit_holds_across_processes(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """At 20/s with a burst of 5, 2 processes x 8 threads never exceed 25 sends in any second."""
    worker = start_worker(
        processes=2, threads=8, DISPATCHER_RATE_LIMIT="20", DISPATCHER_RATE_BURST="5"
    )
    # Both processes up first: a process still importing its modules would hold up the
    # other's sends and bunch them at the API, which measures start-up, not the limiter.
    wait_until(
        lambda: len([e for e in worker.events() if e.get("event") == "worker.started"]) == 2,
        timeout=30,
        what="two worker processes",
    )
    ids = enqueue_many(settings, 200)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="200 receipts")

    times = send_times(sandbox)
    assert len(times) == 200
    busiest = max(
        sum(1 for later in times[index:] if later - start < 1.0)
        for index, start in enumerate(times)
    )
    rate = (len(times) - 1) / (times[-1] - times[0])
    report("busiest 1 s window", busiest)
    report("overall rate per s", rate)
    assert busiest <= 25, busiest
    assert abs(rate - 20) <= 2, f"{rate:.2f}/s"


@pytest.mark.fault
def test_retry_after_pauses_every_worker(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """After one 429 with Retry-After: 2, no worker sends anything for the next 2 seconds."""
    sandbox.admin.add_fault(status=429, count=1, retry_after=2)
    ids = enqueue_many(settings, 60)
    start_worker(processes=2, threads=8, DISPATCHER_RATE_LIMIT="50", DISPATCHER_RATE_BURST="1")
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="60 receipts")

    requests = sandbox.admin.requests(kind="messages")
    [limited] = [entry for entry in requests if entry["status"] == 429]
    # Sends already on the wire when the 429 came back may land just after it.
    during_pause = [
        entry for entry in requests if limited["ts"] + 0.1 < entry["ts"] < limited["ts"] + 2.0
    ]
    after = [entry["ts"] - limited["ts"] for entry in requests if entry["ts"] > limited["ts"] + 0.1]
    report(
        "sends within 0.1 s after the 429 (already on the wire)",
        sum(1 for entry in requests if limited["ts"] < entry["ts"] <= limited["ts"] + 0.1),
    )
    report("first later send, s after the 429", min(after))
    assert during_pause == []
    assert set(accepted_refs(sandbox).values()) == {1}


def test_rejected_intents_are_dead_lettered_and_replayed_once_fixed(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """5 of 30 intents refused with 403 become dead letters; `dlq replay --all` delivers them."""
    sandbox.admin.add_fault(status=403, identifier="blocked", title=FORBIDDEN, detail="bad user")
    good = enqueue_many(settings, 25, prefix="good")
    producer = Producer.from_settings(settings)
    blocked = [
        producer.enqueue({"id": f"blocked-{n}", "recipients": ["blocked"], "text": "hi"})
        for n in range(5)
    ]
    producer.close()
    start_worker(processes=2, threads=8)
    store = dead_letters(redis_client, settings)
    wait_until(lambda: all_sent(redis_client, settings, good), timeout=60, what="25 receipts")
    wait_until(lambda: store.count() == 5, timeout=60, what="5 dead letters")

    entries = store.list()
    assert sorted(entry.id for entry in entries) == blocked
    assert {(e.reason, e.status_code, e.title, e.detail) for e in entries} == {
        ("rejected", 403, FORBIDDEN, "bad user")
    }
    assert {entry.attempts for entry in entries} == {1}
    listed = run_cli(settings_env, "dlq", "list", "--json", "--reason", "rejected")
    assert sorted(json.loads(line)["id"] for line in listed.stdout.splitlines()) == blocked
    shown = json.loads(run_cli(settings_env, "dlq", "show", "blocked-0").stdout)
    assert shown["intent"]["recipients"] == [{"identifier": "blocked"}]

    sandbox.admin.clear_faults()
    replay = run_cli(settings_env, "dlq", "replay", "--all")
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: all_sent(redis_client, settings, blocked), timeout=60, what="replays")

    assert store.count() == 0
    refs = accepted_refs(sandbox)
    report("delivered", len(refs))
    report("dead letters before replay", len(entries))
    report("sends of any id beyond the first", sum(refs.values()) - len(refs))
    assert set(refs) == set(good) | set(blocked)
    assert set(refs.values()) == {1}


def test_replaying_an_intent_that_went_out_sends_nothing(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """A dead letter for an intent that already has a receipt is replayed without a second send."""
    [intent_id] = enqueue_many(settings, 1, prefix="once")
    start_worker()
    wait_until(lambda: all_sent(redis_client, settings, [intent_id]), timeout=30, what="receipt")
    store = dead_letters(redis_client, settings)
    store.add(
        DeadLetterEntry.create(
            intent_id=intent_id,
            reason="exhausted",
            status_code=503,
            title="Service Unavailable",
            detail="",
            attempts=12,
            intent={"id": intent_id, "recipients": ["user0"], "text": "hi 0"},
        )
    )
    assert run_cli(settings_env, "dlq", "replay", intent_id).returncode == 0
    wait_until(lambda: store.count() == 0, timeout=10, what="the entry to go")
    status = run_cli(settings_env, "status", intent_id, "--json")
    assert json.loads(status.stdout)["state"] == "sent"
    # Give the worker the chance to (wrongly) send it again, then check it did not.
    wait_until(
        lambda: run_cli(settings_env, "dlq", "list", "--json").stdout == "",
        timeout=10,
        what="an empty store",
    )
    assert accepted_refs(sandbox)[intent_id] == 1


def test_attempts_run_out_into_an_exhausted_dead_letter(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """A send that fails with 503 on every attempt ends as `exhausted` with the last error."""
    sandbox.admin.add_fault(status=503, detail="down for maintenance")
    [intent_id] = enqueue_many(settings, 1, prefix="doomed")
    start_worker(DISPATCHER_MAX_ATTEMPTS="3")
    store = dead_letters(redis_client, settings)
    entry = wait_until(lambda: store.get(intent_id), timeout=30, what="a dead letter")

    assert (entry.reason, entry.status_code, entry.attempts) == ("exhausted", 503, 3)
    assert entry.detail == "down for maintenance"
    assert sandbox.admin.stats()["messages_by_status"] == {"503": 3}


def test_an_expired_intent_is_dead_lettered_not_sent_late(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """An intent whose expireTime passed while it waited is dead-lettered as `expired`."""
    producer = Producer.from_settings(settings)
    stale = producer.enqueue(
        {
            "id": "stale-news",
            "recipients": ["alice"],
            "text": "flash sale, ends in a second",
            "expireTime": 1,
            "createdAt": int(time.time() * 1000) - 5_000,
        }
    )
    fresh = producer.enqueue(
        {"id": "fresh-news", "recipients": ["alice"], "text": "still valid", "expireTime": 600}
    )
    producer.close()
    start_worker()
    store = dead_letters(redis_client, settings)
    entry = wait_until(lambda: store.get(stale), timeout=30, what="an expired dead letter")
    wait_until(lambda: all_sent(redis_client, settings, [fresh]), timeout=30, what="receipt")

    assert entry.reason == "expired"
    [request] = sandbox.admin.requests(kind="messages")
    assert request["messageRef"] == fresh
    assert 590 <= request["body"]["expireTime"] <= 600


def test_garbage_on_the_queue_is_dead_lettered_and_the_worker_carries_on(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """Foreign messages (not JSON, wrong actor, wrong args, bad intent) become `invalid` dead
    letters with their raw text; the worker stays up and delivers what follows."""
    queue = f"{settings.namespace}:notifications"

    def push(body: str) -> str:
        message_id = str(uuid.uuid4())
        redis_client.hset(f"{queue}.msgs", message_id, body)
        redis_client.rpush(queue, message_id)
        return message_id

    def dramatiq_message(**fields: Any) -> str:
        return json.dumps(
            {
                "queue_name": "notifications",
                "actor_name": "deliver",
                "args": [],
                "kwargs": {},
                "options": {},
                "message_id": str(uuid.uuid4()),
                "message_timestamp": 0,
                **fields,
            }
        )

    push("this is not json {")
    push(dramatiq_message(actor_name="send_email", args=[{"to": "x"}]))
    push(dramatiq_message(args=[1, 2]))
    push(dramatiq_message(args=[{"id": "broken-intent", "recipients": [], "text": "x"}]))
    worker = start_worker(threads=4)
    good = enqueue_many(settings, 5, prefix="after-garbage")
    wait_until(lambda: all_sent(redis_client, settings, good), timeout=30, what="5 receipts")
    store = dead_letters(redis_client, settings)
    wait_until(lambda: store.count() == 4, timeout=30, what="4 dead letters")

    assert worker.process.poll() is None
    entries = store.list()
    assert {entry.reason for entry in entries} == {"invalid"}
    raw_texts = [entry.intent for entry in entries]
    assert "this is not json {" in raw_texts
    details = " | ".join(entry.detail for entry in entries)
    assert "not a dramatiq message" in details
    assert "actor_name: 'send_email' is unknown" in details
    assert "args: expected one argument, the intent; got 2" in details
    assert "recipients: List should have at least 1 item" in details
    assert store.get("broken-intent") is not None
    listed = run_cli(settings_env, "dlq", "list", "--reason", "invalid")
    assert listed.returncode == 0
    assert len(listed.stdout.splitlines()) == 5  # header and four entries
    assert set(accepted_refs(sandbox)) == set(good)


def test_sigterm_drains_in_flight_sends_and_leaves_the_rest_queued(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """SIGTERM lets in-flight sends finish and record receipts; the rest go out once later."""
    sandbox.admin.set_latency(500)
    ids = enqueue_many(settings, 40)
    first = start_worker(threads=8)
    wait_until(lambda: sandbox.admin.requests(kind="messages"), timeout=30, what="a first send")
    started = time.monotonic()
    assert first.stop(timeout=30) == 0
    drained_in = time.monotonic() - started
    report("drain s", drained_in)
    assert drained_in < 30  # the grace period, DISPATCHER_SHUTDOWN_GRACE_S

    # Every send Catapush accepted before the stop has its receipt: nothing half-done.
    accepted_before_stop = set(accepted_refs(sandbox))
    assert accepted_before_stop
    assert sent_count(redis_client, settings, sorted(accepted_before_stop)) == len(
        accepted_before_stop
    )
    assert len(accepted_before_stop) < 40
    # It gave back all it held and left the heartbeat list: no sweep has to look for it.
    assert redis_client.zcard(f"{settings.namespace}:__heartbeats__") == 0
    assert redis_client.llen(f"{settings.namespace}:notifications") == 40 - len(
        accepted_before_stop
    )

    sandbox.admin.set_latency(0)
    start_worker(threads=8)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=60, what="40 receipts")
    refs = accepted_refs(sandbox)
    assert set(refs) == set(ids)
    assert set(refs.values()) == {1}


@pytest.mark.fault
def test_a_worker_killed_mid_send_loses_nothing(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """SIGKILL one of two workers after about 100 sends: all 500 intents are still delivered."""
    sandbox.admin.set_latency(20)
    ids = enqueue_many(settings, 500)
    doomed = start_worker(threads=8)
    start_worker(threads=8)
    wait_until(
        lambda: sandbox.admin.stats()["accepted"] >= 100, timeout=60, what="100 accepted sends"
    )
    doomed.kill()
    killed_at = time.monotonic()
    report("accepted when killed", sandbox.admin.stats()["accepted"])
    start_worker(threads=8)
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=120, what="500 receipts")
    report("all 500 delivered, s after the kill", time.monotonic() - killed_at)

    refs = accepted_refs(sandbox)
    assert set(refs) == set(ids)
    # A send Catapush accepted while its worker died can go out again: the killed worker
    # never learned of it. That can only be one of the sends in flight at the kill.
    duplicates = sum(count - 1 for count in refs.values())
    report("duplicates", duplicates)
    assert duplicates <= 8
