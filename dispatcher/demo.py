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

from dispatcher.commands.progress import PLAIN_EVERY_S, Progress
from dispatcher.errors import IntentRefused
from dispatcher.logs import configure_logging
from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import DEFAULT_REDIS_CONNECT_TIMEOUT_S, DEFAULT_REDIS_SOCKET_TIMEOUT_S
from dispatcher.store.connection import sync_redis_at
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import ReceiptReader

DEMO_MOBILE_APP_ID = 1001
BLOCKED_IDENTIFIER = "blocked-user"
# The demo's own rate limit, far above a deployment's default of 20/s: the sandbox takes it,
# and 2,000 intents then take seconds instead of minutes. `dispatcher demo --rate` changes it.
DEMO_RATE_LIMIT = 200.0
DEMO_RATE_BURST = 50
DEMO_THREADS = 64
# Start-up, token fetch and the backoff of the two 503s, besides the sends themselves.
OUTCOME_SLACK_S = 30.0
# The wait allows the sends half as long again as the rate limit needs.
RATE_HEADROOM = 1.5
# Outcomes printed one per line; the rest are summed up.
OUTCOME_LINES = 20
POLL_S = 0.1
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


def outcome_deadline_s(count: int, rate: float) -> float:
    """How long the demo waits for every outcome: the sends at the rate limit, with room for
    the slower starts of a busy machine, plus a fixed allowance for start-up and retries."""
    return OUTCOME_SLACK_S + count / rate * RATE_HEADROOM


def _settled(client: Any, keys: Keys, dead: DeadLetters, pending: list[str]) -> set[str]:
    """The pending ids that have a receipt or a dead letter: one MGET and one list."""
    waiting = set(pending)
    done = {
        intent_id
        for intent_id, found in zip(
            pending, client.mget([keys.receipt(i) for i in pending]) if pending else [], strict=True
        )
        if found is not None
    }
    done.update(entry.id for entry in dead.list() if entry.id in waiting)
    return done


def _print_outcomes(accepted: list[str], outcomes: dict[str, str]) -> None:
    print("\noutcomes:")
    for intent_id in accepted[:OUTCOME_LINES]:
        print(f"  {intent_id:<22} {outcomes.get(intent_id, 'no outcome before the deadline')}")
    rest = accepted[OUTCOME_LINES:]
    if rest:
        sent = sum(1 for i in rest if outcomes.get(i, "").startswith("sent"))
        dead = sum(1 for i in rest if outcomes.get(i, "").startswith("dead"))
        print(
            f"  ... and {len(rest)} more: {sent} sent, {dead} dead letter(s), "
            f"{len(rest) - sent - dead} without an outcome"
        )


def run_demo(count: int = 12, rate: float = DEMO_RATE_LIMIT) -> int:
    configure_logging("console", level=logging.WARNING)
    deadline_s = outcome_deadline_s(count, rate)
    print(
        "catapush-dispatcher demo: private Redis + sandbox Catapush API + 1 worker process\n"
        f"rate limit {rate:g}/s (the demo's own; a deployment's is DISPATCHER_RATE_LIMIT, "
        f"default 20/s): {count} intent(s), every outcome expected within {deadline_s:.0f} s\n"
    )
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
            "DISPATCHER_RATE_LIMIT": f"{rate:g}",
            "DISPATCHER_RATE_BURST": str(max(1, min(DEMO_RATE_BURST, int(rate)))),
        }
        producer = Producer(local_redis.url, "demo", "notifications")
        accepted: list[str] = []
        for number, sample in enumerate(_samples(count)):
            try:
                accepted.append(producer.enqueue(sample))
                if number < OUTCOME_LINES:
                    print(f"enqueued   {sample['id']}")
            except IntentRefused as exc:
                print(f"refused    {sample['id']!r}: {exc}")
        if len(accepted) > OUTCOME_LINES:
            print(f"enqueued   ... {len(accepted)} in all")
        producer.close()

        with tempfile.TemporaryFile() as worker_log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "worker", "--threads", str(DEMO_THREADS)],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
            client = sync_redis_at(
                local_redis.url,
                connect_timeout_s=DEFAULT_REDIS_CONNECT_TIMEOUT_S,
                socket_timeout_s=DEFAULT_REDIS_SOCKET_TIMEOUT_S,
            )
            keys = Keys("demo")
            reader, dead = ReceiptReader(client, keys), DeadLetters(client, keys)
            outcomes: dict[str, str] = {}
            settled: set[str] = set()
            started = time.monotonic()
            deadline = started + deadline_s
            try:
                with Progress(
                    "outcomes", len(accepted), stream=sys.stdout, plain_every_s=PLAIN_EVERY_S
                ) as progress:
                    while len(settled) < len(accepted) and time.monotonic() < deadline:
                        if worker.poll() is not None:
                            break
                        pending = [i for i in accepted if i not in settled]
                        settled |= _settled(client, keys, dead, pending)
                        elapsed = max(time.monotonic() - started, 1e-6)
                        progress.update(len(settled), f"{len(settled) / elapsed:.0f}/s")
                        time.sleep(POLL_S)
                for intent_id in accepted[:OUTCOME_LINES]:
                    found = _outcome(reader, dead, intent_id)
                    if found:
                        outcomes[intent_id] = found
                for intent_id in accepted[OUTCOME_LINES:]:
                    if intent_id in settled:
                        outcomes[intent_id] = (
                            "dead letter" if dead.get(intent_id) is not None else "sent"
                        )
                waited = time.monotonic() - started
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                client.close()
            stats = sandbox.admin.stats()

            _print_outcomes(accepted, outcomes)
            sends = stats["messages_by_status"]
            print(
                f"\nCatapush sandbox saw {stats['messages_total']} send(s) {sends}, "
                f"{stats['oauth_requests']} OAuth request(s), {stats['duplicates']} duplicate(s)."
            )
            missing = len(accepted) - len(settled)
            if missing:
                _explain(missing, len(accepted), waited, rate, worker.returncode, deadline_s)
                worker_log.seek(0)
                print("\nworker log (tail):", file=sys.stderr)
                print(worker_log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                return 1
    print(
        f"\nEvery accepted intent reached an outcome in {waited:.1f} s: sent exactly once, "
        "or a dead letter."
    )
    return 0


def _explain(
    missing: int, total: int, waited: float, rate: float, code: int | None, deadline_s: float
) -> None:
    done = total - missing
    print(f"\n{missing} of {total} intent(s) had no outcome after {waited:.0f} s.")
    if code is not None and code != 0:
        print(f"The worker exited with status {code} (its log follows).")
        return
    print(
        f"At the rate limit of {rate:g}/s the {total} sends need at least {total / rate:.0f} s; "
        f"{done} reached an outcome, {done / max(waited, 1e-6):.0f}/s. The deadline was "
        f"{deadline_s:.0f} s: a slower machine may need a higher --rate or a smaller --count."
    )
