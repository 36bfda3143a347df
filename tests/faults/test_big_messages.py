"""Big messages: 60 intents with a 5 MiB attachment each, under the default settings."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from tests.conftest import DispatcherProcess
from tests.faults.conftest import (
    QUEUE,
    leftovers,
    peak_rss_mib,
    poll_until,
    receipt_count,
    started_worker_pids,
)
from tests.integration.helpers import accepted_refs

INTENTS = 60
ATTACHMENT_BYTES = 5 * 1024 * 1024
DELIVERY_DEADLINE_S = 120


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_sixty_five_mib_attachments_are_each_delivered_exactly_once(
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """60 intents with a 5 MiB attachment (about 400 MB of queue), one worker with the
    default `--threads` and byte budget: all 60 are accepted, each exactly once, with its
    whole file, and nothing is left on a queue or dead."""
    server = private_redis()
    producer = Producer(server.url, namespace, QUEUE)
    try:
        ids = [
            producer.enqueue(
                {
                    "id": f"big-{n:03d}",
                    "recipients": [f"user{n}"],
                    "text": f"your file {n}",
                    "attachment": {
                        "filename": "f.bin",
                        "contentType": "application/octet-stream",
                        "data": base64.b64encode(os.urandom(ATTACHMENT_BYTES)).decode(),
                    },
                }
            )
            for n in range(INTENTS)
        ]
    finally:
        producer.close()

    started = time.monotonic()
    # Every setting at its default: no --threads, no byte budget, the default rate limit.
    worker = launch(fault_env(server.url, defaults=True), "worker")
    poll_until(
        lambda: set(ids) <= set(accepted_refs(sandbox)) or worker.process.poll() is not None,
        timeout=DELIVERY_DEADLINE_S,
        interval=0.5,
    )
    elapsed = time.monotonic() - started
    pids = started_worker_pids(worker.events())
    peak = peak_rss_mib(pids[-1]) if pids else None
    refs = accepted_refs(sandbox)
    missing = set(ids) - set(refs)
    client = redis.Redis.from_url(server.url)
    try:
        # The last receipts and acks land just after the last send is accepted.
        poll_until(
            lambda: (
                receipt_count(client, namespace, ids) == INTENTS
                and not leftovers(client, namespace)
            ),
            timeout=15 if not missing else 1,
        )
        receipts = receipt_count(client, namespace, ids)
        left = leftovers(client, namespace)
        dead = int(client.hlen(Keys(namespace).dead_letters))
    finally:
        client.close()

    if not missing:
        report("60 x 5 MiB delivered in s", elapsed)
    report("worker peak RSS MiB", peak)
    report("sends by status", sandbox.admin.stats()["messages_by_status"])
    report("duplicates", sum(refs.values()) - len(refs))
    report("receipts", receipts)
    report("dead letters", dead)

    assert worker.process.poll() is None, (
        f"the worker exited with {worker.process.returncode}: {worker.log_text()[-1500:]}"
    )
    assert not missing, f"{len(missing)} of {INTENTS} never accepted in {DELIVERY_DEADLINE_S} s"
    assert {ref: count for ref, count in refs.items() if count != 1} == {}
    sizes = {
        entry["attachment"]["size"]
        for entry in sandbox.admin.requests(kind="messages")
        if entry["status"] == 201
    }
    assert sizes == {ATTACHMENT_BYTES}
    assert dead == 0
    assert receipts == INTENTS
    assert left == {}
