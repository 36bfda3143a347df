"""Fan-out, scheduling and cancel against a real Redis, worker processes and the sandbox.

A split intent goes out as parts with derived refs, each accepted once; a refused part is
the only one dead-lettered and the only one a replay sends; a scheduled intent waits for its
`sendAt` across a worker restart; cancelled intents (queued, scheduled, retrying, split)
are never sent; intake refuses bad priorities, sendAt values and recipient counts by field.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from dispatcher.fanout import part_id
from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.cancels import cancel_intents
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import Receipt, ReceiptReader
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import accepted_refs, dead_letters, run_cli

pytestmark = pytest.mark.timeout(120)


def enqueue(settings: Settings, items: list[dict[str, Any]]) -> list[str]:
    producer = Producer.from_settings(settings)
    try:
        return producer.enqueue_many(items)
    finally:
        producer.close()


def campaign(intent_id: str, recipients: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": intent_id,
        "recipients": [f"{intent_id}-user{n:04d}" for n in range(recipients)],
        "text": "Spring sale",
        **extra,
    }


def identifiers_sent(sandbox: SandboxProcess, ref: str) -> list[str]:
    return [
        identifier
        for entry in sandbox.admin.requests(kind="messages")
        if entry["status"] == 201 and entry["messageRef"] == ref
        for identifier in entry["identifiers"]
    ]


def status_of(env: dict[str, str], intent_id: str) -> dict[str, Any]:
    result = run_cli(env, "status", intent_id, "--json")
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


def test_250_recipients_go_out_as_3_parts_each_accepted_once(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    report: Callable[[str, Any], None],
) -> None:
    [whole] = enqueue(settings, [campaign("spring-sale", 250, priority="bulk")])
    start_worker(DISPATCHER_MAX_RECIPIENTS="100")
    refs = [part_id(whole, index) for index in (1, 2, 3)]
    wait_until(
        lambda: all(accepted_refs(sandbox)[ref] == 1 for ref in refs),
        timeout=30,
        what="the 3 parts",
    )
    accepted = accepted_refs(sandbox)
    report("messages accepted for 250 recipients", sum(accepted.values()))
    assert refs == ["spring-sale_p1", "spring-sale_p2", "spring-sale_p3"]
    assert sum(accepted.values()) == 3
    assert whole not in accepted
    sizes = [len(identifiers_sent(sandbox, ref)) for ref in refs]
    assert sizes == [100, 100, 50]
    every = [identifier for ref in refs for identifier in identifiers_sent(sandbox, ref)]
    assert every == [f"spring-sale-user{n:04d}" for n in range(250)]

    status = status_of(settings_env, whole)
    assert status["state"] == "sent"
    assert status["recipients"] == 250
    assert [part["id"] for part in status["parts"]] == refs
    assert all(part["state"] == "sent" and part["message_id"] for part in status["parts"])
    text = run_cli(settings_env, "status", whole).stdout
    assert "parts: 3 sent" in text
    assert "part spring-sale_p2: sent" in text


def test_a_refused_part_is_the_only_dead_letter_and_the_only_part_replayed(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    # A long id: the parts' refs are shortened with a digest and stay within 50 characters.
    whole_id = "campaign-" + "x" * 38
    [whole] = enqueue(settings, [campaign(whole_id, 250)])
    refs = [part_id(whole, index) for index in (1, 2, 3)]
    assert all(len(ref) <= 50 for ref in refs)
    assert len(set(refs)) == 3
    # The second part carries recipients 100..199.
    sandbox.admin.add_fault(status=403, count=1000, identifier=f"{whole_id}-user0150")
    start_worker(DISPATCHER_MAX_RECIPIENTS="100")
    store = dead_letters(redis_client, settings)
    wait_until(lambda: store.get(refs[1]), timeout=30, what="the refused part's dead letter")
    wait_until(
        lambda: accepted_refs(sandbox)[refs[0]] == 1 and accepted_refs(sandbox)[refs[2]] == 1,
        timeout=30,
        what="the other parts",
    )
    assert [entry.id for entry in store.list()] == [refs[1]]
    status = status_of(settings_env, whole)
    assert status["state"] == "partial"
    assert status["parts_by_state"] == {"sent": 2, "dead": 1}

    sandbox.admin.clear_faults()
    replay = run_cli(settings_env, "dlq", "replay", refs[1])
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: accepted_refs(sandbox)[refs[1]] == 1, timeout=30, what="the replay")
    accepted = accepted_refs(sandbox)
    assert [accepted[ref] for ref in refs] == [1, 1, 1]
    assert len(identifiers_sent(sandbox, refs[1])) == 100
    assert status_of(settings_env, whole)["state"] == "sent"


def test_a_scheduled_intent_waits_for_send_at_across_a_worker_restart(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
) -> None:
    send_at_ms = int(time.time() * 1000) + 4_000
    send_at = datetime.fromtimestamp(send_at_ms / 1000, tz=UTC).isoformat()
    [intent_id] = enqueue(
        settings,
        [{"id": "reminder-1", "recipients": ["alice"], "text": "Your table", "sendAt": send_at}],
    )
    status = status_of(settings_env, intent_id)
    assert status["state"] == "scheduled"
    assert abs(status["send_at_ms"] - send_at_ms) <= 1
    first = WorkerProcess(settings_env)
    try:
        wait_until(lambda: "worker.started" in first.log_text(), timeout=30, what="the worker")
    finally:
        assert first.stop() == 0
    assert accepted_refs(sandbox)[intent_id] == 0
    second = WorkerProcess(settings_env)
    try:
        reader = ReceiptReader(redis_client, Keys(settings.namespace))
        receipt = wait_until(lambda: reader.get(intent_id), timeout=30, what="the receipt")
    finally:
        second.close()
    sent_at = datetime.fromisoformat(receipt.sent_at)
    assert sent_at.timestamp() * 1000 >= send_at_ms
    assert accepted_refs(sandbox)[intent_id] == 1
    keys = Keys(settings.namespace)
    assert redis_client.zcard(keys.schedule(settings.queue)) == 0
    assert redis_client.hlen(keys.schedule_messages(settings.queue)) == 0


def test_cancelled_queued_scheduled_and_retrying_intents_are_never_sent(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    keys = Keys(settings.namespace)
    later = int(time.time() * 1000) + 60_000
    enqueue(
        settings,
        [
            {"id": "queued-1", "recipients": ["bob"], "text": "a"},
            {"id": "scheduled-1", "recipients": ["carol"], "text": "b", "sendAt": later},
            campaign("split-1", 30),
        ],
    )
    result = run_cli(settings_env, "cancel", "queued-1", "scheduled-1", "split-1")
    assert result.returncode == 0, result.stderr
    assert "scheduled-1: cancelled (taken off the schedule)" in result.stdout
    assert redis_client.zcard(keys.schedule(settings.queue)) == 0

    # A retrying intent: refused with 503 until it is cancelled.
    sandbox.admin.add_fault(status=503, count=10_000, identifier="dave")
    [retrying] = enqueue(settings, [{"id": "retrying-1", "recipients": ["dave"], "text": "c"}])
    worker = start_worker(DISPATCHER_MAX_RECIPIENTS="10")
    wait_until(
        lambda: status_of(settings_env, retrying)["state"] == "retrying",
        timeout=30,
        what="the retry",
    )
    assert run_cli(settings_env, "cancel", retrying).returncode == 0
    sandbox.admin.clear_faults()
    [marker] = enqueue(settings, [{"id": "after-cancel", "recipients": ["erin"], "text": "d"}])
    wait_until(lambda: accepted_refs(sandbox)[marker] == 1, timeout=30, what="a later intent")
    wait_until(
        lambda: _dropped(worker, retrying), timeout=30, what="the cancelled retry to be dropped"
    )
    accepted = accepted_refs(sandbox)
    for intent_id in ("queued-1", "scheduled-1", "retrying-1", "split-1"):
        assert accepted[intent_id] == 0
        assert status_of(settings_env, intent_id)["state"] == "cancelled"
    assert not [ref for ref in accepted if ref.startswith("split-1")]

    sent = run_cli(settings_env, "cancel", marker)
    assert sent.returncode == 1
    assert "not cancelled: sent already" in sent.stdout


def _dropped(worker: WorkerProcess, intent_id: str) -> bool:
    return any(
        event.get("event") == "delivery.cancelled" and event.get("intent_id") == intent_id
        for event in worker.events()
    )


def test_cancelling_a_split_intent_stops_its_unsent_parts(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # The third part is held back by a 503 until the cancel.
    [whole] = enqueue(settings, [campaign("flash", 25)])
    sandbox.admin.add_fault(status=503, count=10_000, identifier="flash-user0024")
    start_worker(DISPATCHER_MAX_RECIPIENTS="10")
    first, second, third = (part_id(whole, index) for index in (1, 2, 3))
    wait_until(
        lambda: accepted_refs(sandbox)[first] == 1 and accepted_refs(sandbox)[second] == 1,
        timeout=30,
        what="the first two parts",
    )
    result = run_cli(settings_env, "cancel", whole)
    assert result.returncode == 0, result.stderr
    assert "cancelled the unsent parts; 2 of 3 parts were sent already" in result.stdout
    sandbox.admin.clear_faults()
    wait_until(
        lambda: status_of(settings_env, third)["state"] == "cancelled",
        timeout=30,
        what="the third part to be dropped",
    )
    assert accepted_refs(sandbox)[third] == 0
    status = status_of(settings_env, whole)
    assert status["state"] == "partial"
    assert status["parts_by_state"] == {"sent": 2, "cancelled": 1}


def test_intake_refuses_bad_priority_send_at_and_recipient_counts_by_field(
    settings_env: dict[str, str], redis_client: redis.Redis, settings: Settings
) -> None:
    far = int(time.time() * 1000) + 31 * 86_400_000
    lines = [
        {"id": "good-1", "recipients": ["a"], "text": "x"},
        {"id": "bad-priority", "recipients": ["a"], "text": "x", "priority": "urgent"},
        {"id": "bad-send-at", "recipients": ["a"], "text": "x", "sendAt": "next tuesday"},
        {"id": "seconds", "recipients": ["a"], "text": "x", "sendAt": 1_800_000_000},
        {"id": "too-far", "recipients": ["a"], "text": "x", "sendAt": far},
        campaign("too-many", 10_001),
        {"id": "good-2", "recipients": ["a"], "text": "x", "sendAt": "2020-01-01T00:00:00Z"},
    ]
    stdin = "\n".join(orjson.dumps(line).decode() for line in lines) + "\n"
    result = run_cli(settings_env, "enqueue", "-", stdin=stdin)
    assert result.returncode == 1
    assert result.stdout.split() == ["good-1", "good-2"]
    errors = result.stderr.splitlines()
    assert any(line.startswith("line 2: priority:") for line in errors), errors
    assert any(line.startswith("line 3: sendAt:") and "RFC 3339" in line for line in errors)
    assert any(line.startswith("line 4: sendAt:") and "seconds" in line for line in errors)
    assert any(
        line.startswith("line 5: sendAt:") and "DISPATCHER_MAX_SCHEDULE_DAYS" in line
        for line in errors
    )
    assert any(
        line.startswith("line 6: recipients:") and "DISPATCHER_MAX_INTENT_RECIPIENTS" in line
        for line in errors
    )
    # A sendAt already past is sent at once: it goes on the queue, not the schedule.
    keys = Keys(settings.namespace)
    assert redis_client.llen(keys.queue(settings.queue)) == 2
    assert redis_client.zcard(keys.schedule(settings.queue)) == 0


def test_cancel_of_thousands_of_ids_in_batches_answers_each_in_order(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = Keys(settings.namespace)
    ids = [f"bulk-cancel-{n:05d}" for n in range(2_500)]
    receipt = Receipt(ids[1_500], "cp-1500", "2026-01-01T00:00:00.000Z", 1)
    redis_client.set(keys.receipt(ids[1_500]), receipt.to_json())
    answers = cancel_intents(ids, settings)
    assert [answer.intent_id for answer in answers] == ids
    assert answers[1_500].state == "sent"
    assert answers[1_500].message_id == "cp-1500"
    assert {answer.state for n, answer in enumerate(answers) if n != 1_500} == {"cancelled"}
    assert redis_client.zcard(keys.cancelled) == 2_499


def test_a_split_done_twice_sends_each_part_once(
    settings: Settings,
    sandbox: SandboxProcess,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    """A worker killed after writing the parts but before acknowledging the whole gets the
    whole redelivered and splits it again: the parts' ids are the same, so each goes once."""
    whole = campaign("redelivered", 250)
    producer = Producer.from_settings(settings)
    try:
        # Two copies of the same intent on the queue: what a redelivery leaves.
        producer.requeue(whole, attempt=1, delay_ms=0)
        producer.requeue(whole, attempt=1, delay_ms=0)
    finally:
        producer.close()
    worker = start_worker(DISPATCHER_MAX_RECIPIENTS="100")
    refs = [part_id("redelivered", index) for index in (1, 2, 3)]
    wait_until(
        lambda: sum(event.get("event") == "delivery.split" for event in worker.events()) == 2,
        timeout=30,
        what="both copies split",
    )
    keys = Keys(settings.namespace)
    wait_until(
        lambda: (
            redis_client.llen(keys.queue(settings.queue)) == 0
            and redis_client.llen(keys.delay_queue(settings.queue)) == 0
            and all(accepted_refs(sandbox)[ref] == 1 for ref in refs)
        ),
        timeout=30,
        what="every copy of every part handled",
    )
    accepted = accepted_refs(sandbox)
    assert [accepted[ref] for ref in refs] == [1, 1, 1]
    assert sum(accepted.values()) == 3
