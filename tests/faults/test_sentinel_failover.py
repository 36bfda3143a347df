"""A Sentinel failover under running workers: one master, one replica and three sentinels,
`SENTINEL FAILOVER` forced while 2 worker processes send 400 intents."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import DispatcherProcess, wait_until
from tests.faults.conftest import (
    describe,
    leftovers,
    poll_until,
    receipt_count,
    started_worker_pids,
)
from tests.redisfleet import SENTINEL_MASTER, SentinelGroup, sentinel_available

INTENTS = 400
PASSWORD = "fleet-Pa55word"
# Slow enough that the failover lands in the middle of the run (400 at 50/s: 8 s).
RATE_LIMIT = "50"
DELIVERY_DEADLINE_S = 90
# A write the old master took after the replica was promoted, and before it was demoted, is
# lost; a send recorded then may go out again. Sends accepted a little before the failover
# were still being recorded, hence the margin before it.
WINDOW_MARGIN_S = 1.0

pytestmark = [
    pytest.mark.fault,
    pytest.mark.integration,
    pytest.mark.skipif(sentinel_available() is not None, reason=str(sentinel_available())),
]


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup(PASSWORD) as made:
        yield made


def _accepted(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    return [entry for entry in sandbox.admin.requests(kind="messages") if entry["status"] == 201]


@pytest.mark.timeout(240)
def test_a_forced_failover_delivers_everything_and_resumes(
    group: SentinelGroup,
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """All 400 intents are delivered through a forced failover; the workers find the new
    master by themselves and no process restarts. Sends accepted twice are reported, and
    allowed only for sends recorded in the failover's window (promotion to demotion)."""
    env = fault_env(group.url) | {
        "DISPATCHER_REDIS_SENTINELS": group.sentinels,
        "DISPATCHER_REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        "DISPATCHER_RATE_LIMIT": RATE_LIMIT,
        "DISPATCHER_RATE_BURST": "10",
    }
    settings = Settings(**{k.removeprefix("DISPATCHER_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    producer = Producer.from_settings(settings, check_templates=False)
    try:
        ids = producer.enqueue_many(
            {"id": f"fo-{n:05d}", "recipients": [f"user{n}"], "text": f"hi {n}"}
            for n in range(INTENTS)
        )
    finally:
        producer.close()

    sandbox.admin.set_latency(20)
    old_master = group.master_port()
    worker = launch(env, "worker", "--processes", "2", "--threads", "8")
    pids = wait_until(
        lambda: (found := started_worker_pids(worker.events())) and len(found) >= 2 and found,
        timeout=60,
        what="two worker processes started",
    )
    wait_until(
        lambda: sandbox.admin.stats()["accepted"] >= 100, timeout=60, what="100 accepted sends"
    )

    accepted_before = sandbox.admin.stats()["accepted"]
    failover_wall = time.time()
    failover_at = time.monotonic()
    group.failover()
    wait_until(lambda: group.master_port() != old_master, timeout=30, what="a new master")
    promoted_s = time.monotonic() - failover_at
    client = group.data_client(group.master_port())
    try:
        # Resumed: the workers write to the new master (a receipt it did not have at promotion).
        at_promotion = receipt_count(client, namespace, ids)
        resumed = poll_until(
            lambda: receipt_count(client, namespace, ids) > at_promotion, timeout=60, interval=0.02
        )
        resumed_s = time.monotonic() - failover_at
        wait_until(
            lambda: group.role(old_master) == "slave", timeout=30, what="the old master demoted"
        )
        demoted_wall = time.time()
        report("accepted when the failover was forced", accepted_before)
        report("s from SENTINEL FAILOVER to the new master named", promoted_s)
        if resumed:
            report("s from SENTINEL FAILOVER to the first receipt on the new master", resumed_s)
        report("s from SENTINEL FAILOVER to the old master demoted", demoted_wall - failover_wall)

        poll_until(
            lambda: receipt_count(client, namespace, ids) == INTENTS, timeout=DELIVERY_DEADLINE_S
        )
        report("s from SENTINEL FAILOVER to all delivered", time.monotonic() - failover_at)
        receipts = receipt_count(client, namespace, ids)
        poll_until(lambda: not leftovers(client, namespace), timeout=30)
        left = leftovers(client, namespace)
    finally:
        client.close()

    accepted = _accepted(sandbox)
    first_seen: dict[str, float] = {}
    duplicates: list[tuple[str, float]] = []
    for entry in sorted(accepted, key=lambda entry: entry["ts"]):
        ref = entry["messageRef"]
        if ref in first_seen:
            duplicates.append((ref, first_seen[ref]))
        else:
            first_seen[ref] = entry["ts"]
    outside = [
        ref
        for ref, first in duplicates
        if not failover_wall - WINDOW_MARGIN_S <= first <= demoted_wall + WINDOW_MARGIN_S
    ]
    events = worker.events()
    died = [event for event in events if event.get("event") == "worker.died"]
    report("duplicates (messageRefs accepted more than once)", len(duplicates))
    report("receipts on the new master", receipts)

    problems = []
    missing = set(ids) - set(first_seen)
    if missing:
        problems.append(f"{len(missing)} of {INTENTS} never accepted (e.g. {sorted(missing)[:3]})")
    if not resumed:
        problems.append("no receipt reached the new master within 60 s of its promotion")
    if receipts != INTENTS:
        problems.append(f"{receipts} receipts on the new master, not {INTENTS}")
    if left:
        problems.append(f"stranded: {left}")
    if outside:
        problems.append(f"{len(outside)} duplicates first sent outside the failover window")
    if worker.process.poll() is not None:
        problems.append(f"`dispatcher worker` exited with {worker.process.returncode}")
    if died or started_worker_pids(events) != pids:
        problems.append(f"worker processes restarted: {describe(died)}")
    assert not problems, "\n".join(problems)
