"""Redis going away under running workers: killed mid-send and back 2 s or 20 s later (with
its AOF), and not there yet when a worker starts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.localredis import LocalRedis
from tests.conftest import DispatcherProcess, wait_until
from tests.faults.conftest import (
    describe,
    enqueue_intents,
    intent_errors_without_id,
    leftovers,
    message_bodies_left,
    poll_until,
    receipt_count,
    started_worker_pids,
)
from tests.integration.helpers import accepted_refs

INTENTS = 400
# After Redis is back: time for every intent to be accepted, then for every ack to land.
DELIVERY_DEADLINE_S = 60
SETTLE_DEADLINE_S = 30


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("outage_s", [2, 20], ids=["down-2s", "down-20s"])
def test_redis_killed_mid_send_loses_nothing_and_no_worker_restarts(
    outage_s: int,
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """Redis (AOF) is SIGKILLed while 2 worker processes have sends in flight and started
    again on the same port `outage_s` later: all 400 intents are delivered, by the same two
    processes, nothing is left on a queue or in an ack set, and every error line about an
    intent names it. Duplicates are reported, not asserted."""
    server = private_redis(appendonly=True)
    env = fault_env(server.url)
    sandbox.admin.set_latency(20)
    ids = enqueue_intents(server.url, namespace, INTENTS)
    worker = launch(env, "worker", "--processes", "2", "--threads", "8")
    pids = wait_until(
        lambda: (found := started_worker_pids(worker.events())) and len(found) >= 2 and found,
        timeout=60,
        what="two worker processes started",
    )
    wait_until(
        lambda: sandbox.admin.stats()["accepted"] >= 100, timeout=60, what="100 accepted sends"
    )

    server.kill()
    report("accepted when Redis was killed", sandbox.admin.stats()["accepted"])
    time.sleep(outage_s)  # the outage itself
    report("accepted while Redis was down", sandbox.admin.stats()["accepted"])
    server.start()
    back_at = time.monotonic()

    poll_until(lambda: set(ids) <= set(accepted_refs(sandbox)), timeout=DELIVERY_DEADLINE_S)
    missing = set(ids) - set(accepted_refs(sandbox))
    if not missing:
        report("all delivered, s after Redis came back", time.monotonic() - back_at)
    client = redis.Redis.from_url(server.url)
    try:
        # Nothing can settle while intents are missing: then only look once.
        settle_s = SETTLE_DEADLINE_S if not missing else 1
        poll_until(lambda: not leftovers(client, namespace), timeout=settle_s)
        left = leftovers(client, namespace)
        bodies = message_bodies_left(client, namespace)
        receipts = receipt_count(client, namespace, ids)
    finally:
        client.close()

    refs = accepted_refs(sandbox)
    events = worker.events()
    died = [event for event in events if event.get("event") == "worker.died"]
    unnamed = intent_errors_without_id(events)
    now_started = started_worker_pids(events)
    report("duplicates (messageRefs accepted more than once)", sum(refs.values()) - len(refs))
    report("receipts", receipts)
    report("message bodies left in .msgs hashes", bodies)
    report("intent error lines without intent_id", len(unnamed))
    report("worker.died events", len(died))

    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {INTENTS} never accepted within {DELIVERY_DEADLINE_S} s "
            f"after Redis came back (e.g. {sorted(missing)[:3]})"
        )
    if left:
        problems.append(f"stranded: {left}")
    if worker.process.poll() is not None:
        problems.append(f"`dispatcher worker` exited with {worker.process.returncode}")
    if died or now_started != pids or not all(_alive(pid) for pid in pids):
        problems.append(
            f"worker processes restarted: started pids {now_started} (first {pids}), "
            f"{len(died)} worker.died: {describe(died)}"
        )
    if unnamed:
        problems.append(
            f"{len(unnamed)} intent error lines without intent_id, e.g. {describe(unnamed)}"
        )
    assert not problems, "\n".join(problems)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_worker_started_before_redis_delivers_once_it_is_up(
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """A worker started 5 s before its Redis stays up and delivers what is enqueued once
    Redis answers."""
    server = private_redis(start=False)  # its port is chosen, nothing listens on it yet
    worker = launch(fault_env(server.url), "worker", "--threads", "8")
    time.sleep(5)  # the scenario: Redis comes up 5 s after the worker
    exited_before = worker.process.poll()
    server.start()
    up_at = time.monotonic()
    ids = enqueue_intents(server.url, namespace, 20, prefix="late")
    poll_until(lambda: set(ids) <= set(accepted_refs(sandbox)), timeout=DELIVERY_DEADLINE_S)
    missing = set(ids) - set(accepted_refs(sandbox))
    if not missing:
        report("all 20 delivered, s after Redis came up", time.monotonic() - up_at)
    refs = accepted_refs(sandbox)
    report("duplicates", sum(refs.values()) - len(refs))

    assert exited_before is None, (
        f"the worker exited with {exited_before} while Redis was not up yet: "
        f"{worker.log_text()[-1500:]}"
    )
    assert not missing, f"{len(missing)} of 20 never accepted within {DELIVERY_DEADLINE_S} s"
    assert worker.process.poll() is None
    assert set(refs.values()) == {1}
