"""`dispatcher demo`: the whole pipeline on this machine, with nothing to set up.

Starts a private Redis, the sandbox Catapush API and a worker process, enqueues sample
intents (some meant to fail, to show retries and dead letters), waits for every outcome and
prints it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from dispatcher.deadletters import DeadLetters
from dispatcher.errors import IntentRefused
from dispatcher.keys import Keys
from dispatcher.localredis import LocalRedis
from dispatcher.logs import configure_logging
from dispatcher.producer import Producer
from dispatcher.receipts import ReceiptReader
from dispatcher.redisconn import sync_redis_at
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import DEFAULT_REDIS_CONNECT_TIMEOUT_S, DEFAULT_REDIS_SOCKET_TIMEOUT_S

DEMO_MOBILE_APP_ID = 1001
BLOCKED_IDENTIFIER = "blocked-user"
OUTCOME_DEADLINE_S = 60.0
FORBIDDEN_TITLE = (
    "Forbidden - Wrong authentication / Bad OAuth request (re-authenticating won't help)"
)


def _samples(count: int) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = [
        {
            "id": "welcome-alice",
            "recipients": [{"identifier": "alice", "recipientRef": "alice-welcome"}],
            "text": "Welcome aboard, Alice!",
            "notificationText": "Welcome!",
        },
        {
            "id": "order-1234-shipped",
            "recipients": ["bob", {"identifier": "carol", "mobileNumber": "393331234567"}],
            "text": "Your order 1234 has shipped",
            "fallback": {"text": "Order 1234 shipped", "timeout": 60},
        },
        {
            "id": "blocked-notice",
            "recipients": [BLOCKED_IDENTIFIER],
            "text": "Catapush refuses this recipient: this intent ends as a dead letter",
        },
        {"id": "bad id with spaces", "recipients": ["dave"], "text": "refused at intake"},
    ]
    samples.extend(
        {"id": f"reminder-{n:04d}", "recipients": [f"user{n}"], "text": f"Reminder #{n}"}
        for n in range(max(0, count - len(samples)))
    )
    return samples


def _outcome(reader: ReceiptReader, dead: DeadLetters, intent_id: str) -> str | None:
    receipt = reader.get(intent_id)
    if receipt is not None:
        return f"sent        messageId={receipt.message_id} attempts={receipt.attempts}"
    entry = dead.get(intent_id)
    if entry is not None:
        return f"dead letter reason={entry.reason} status={entry.status_code} title={entry.title!r}"
    return None


def run_demo(count: int = 12) -> int:
    configure_logging("console", level=logging.WARNING)
    print("catapush-dispatcher demo: private Redis + sandbox Catapush API + 1 worker process\n")
    with LocalRedis() as local_redis, SandboxProcess() as sandbox:
        sandbox.admin.add_fault(
            status=403,
            identifier=BLOCKED_IDENTIFIER,
            title=FORBIDDEN_TITLE,
        )
        # Two 503s: the first intents are retried with backoff, then go through.
        sandbox.admin.add_fault(status=503, count=2)
        env = {
            **os.environ,
            "DISPATCHER_REDIS_URL": local_redis.url,
            "DISPATCHER_NAMESPACE": "demo",
            "DISPATCHER_CATAPUSH_BASE_URL": sandbox.base_url,
            "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
            "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "DISPATCHER_CATAPUSH_MOBILE_APP_ID": str(DEMO_MOBILE_APP_ID),
            "DISPATCHER_BACKOFF_MIN_MS": "200",
            "DISPATCHER_BACKOFF_MAX_MS": "2000",
            "DISPATCHER_LOG_FORMAT": "json",
        }
        producer = Producer(local_redis.url, "demo", "notifications")
        accepted: list[str] = []
        for sample in _samples(count):
            try:
                accepted.append(producer.enqueue(sample))
                print(f"enqueued   {sample['id']}")
            except IntentRefused as exc:
                print(f"refused    {sample['id']!r}: {exc}")
        producer.close()

        with tempfile.TemporaryFile() as worker_log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "worker", "--threads", "16"],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
            client = sync_redis_at(
                local_redis.url,
                connect_timeout_s=DEFAULT_REDIS_CONNECT_TIMEOUT_S,
                socket_timeout_s=DEFAULT_REDIS_SOCKET_TIMEOUT_S,
            )
            reader, dead = ReceiptReader(client, Keys("demo")), DeadLetters(client, Keys("demo"))
            outcomes: dict[str, str] = {}
            deadline = time.monotonic() + OUTCOME_DEADLINE_S
            try:
                while len(outcomes) < len(accepted) and time.monotonic() < deadline:
                    if worker.poll() is not None:
                        break
                    for intent_id in accepted:
                        if intent_id not in outcomes:
                            found = _outcome(reader, dead, intent_id)
                            if found:
                                outcomes[intent_id] = found
                    time.sleep(0.1)
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                client.close()
            stats = sandbox.admin.stats()

            print("\noutcomes:")
            for intent_id in accepted:
                print(
                    f"  {intent_id:<22} {outcomes.get(intent_id, 'no outcome before the deadline')}"
                )
            sends = stats["messages_by_status"]
            print(
                f"\nCatapush sandbox saw {stats['messages_total']} send(s) {sends}, "
                f"{stats['oauth_requests']} OAuth request(s), {stats['duplicates']} duplicate(s)."
            )
            if len(outcomes) < len(accepted):
                worker_log.seek(0)
                print("\nworker log (tail):", file=sys.stderr)
                print(worker_log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                return 1
    print("\nEvery accepted intent reached an outcome: sent exactly once, or a dead letter.")
    return 0
