"""Scheduled, split and cancelled intents across a Redis crash: Redis (with its AOF) is
SIGKILLed while 2 worker processes wait for the schedule, and comes back after `sendAt` has
passed. Nothing goes out early, nothing cancelled goes out, everything else goes out once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dispatcher.fanout import part_id
from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.cancels import cancel_intents
from dispatcher.store.localredis import LocalRedis
from tests.conftest import DispatcherProcess, wait_until
from tests.faults.conftest import QUEUE, poll_until, started_worker_pids

SCHEDULED = 200
CANCELLED = 50
LEAD_S = 6.0
# Long enough after a write for the AOF's once-a-second fsync to have run.
AOF_SETTLE_S = 1.5


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_schedule_and_cancels_survive_a_redis_crash_across_send_at(
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    server = private_redis(appendonly=True)
    env = fault_env(server.url)
    send_at_ms = int((time.time() + LEAD_S) * 1000)
    intents: list[dict[str, Any]] = [
        {
            "id": f"sched-{n:05d}",
            "recipients": [f"user{n}"],
            "text": f"hi {n}",
            "sendAt": send_at_ms,
            "priority": "bulk" if n % 2 else "transactional",
        }
        for n in range(SCHEDULED)
    ]
    intents.append(
        {
            "id": "sched-campaign",
            "recipients": [f"fan{n}" for n in range(250)],
            "text": "sale",
            "sendAt": send_at_ms,
            "priority": "bulk",
        }
    )
    producer = Producer(server.url, namespace, QUEUE)
    try:
        producer.enqueue_many(intents)
    finally:
        producer.close()
    cancelled = [f"sched-{n:05d}" for n in range(0, SCHEDULED, SCHEDULED // CANCELLED)]
    settings = Settings(redis_url=server.url, namespace=namespace, queue=QUEUE)
    answers = cancel_intents(cancelled, settings)
    assert {answer.state for answer in answers} == {"cancelled"}
    assert all(answer.unscheduled for answer in answers)

    worker = launch(env, "worker", "--processes", "2", "--threads", "16")
    wait_until(
        lambda: len(started_worker_pids(worker.events())) >= 2,
        timeout=60,
        what="two worker processes started",
    )
    time.sleep(AOF_SETTLE_S)  # the AOF's fsync: the schedule and the marks are on disk
    server.kill()
    # Down until sendAt has passed: the due intents are moved once Redis is back.
    time.sleep(max(0.0, send_at_ms / 1000 - time.time()) + 2.0)
    server.start()
    back_at = time.monotonic()

    expected = {f"sched-{n:05d}" for n in range(SCHEDULED)} - set(cancelled)
    expected |= {part_id("sched-campaign", index) for index in (1, 2, 3)}

    def accepted() -> list[dict[str, Any]]:
        return [
            entry for entry in sandbox.admin.requests(kind="messages") if entry["status"] == 201
        ]

    poll_until(lambda: expected <= {entry["messageRef"] for entry in accepted()}, timeout=60)
    report("all due intents accepted, s after Redis came back", time.monotonic() - back_at)
    # Copies still moving (none expected) would show up in this time.
    time.sleep(1.0)
    entries = accepted()
    refs = [entry["messageRef"] for entry in entries]
    report("accepted", len(refs))
    assert set(refs) == expected
    assert len(refs) == len(expected), "some intent was accepted twice"
    assert not set(refs) & set(cancelled)
    assert min(entry["ts"] for entry in entries) * 1000 >= send_at_ms
    assert worker.stop() == 0
