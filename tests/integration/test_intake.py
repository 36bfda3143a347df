"""Intake: the CLI, the Python API and a raw Redis producer, against real Redis and sandbox."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

import dispatcher
from dispatcher.errors import IntentRefused
from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import wait_until
from tests.integration.helpers import all_sent, run_cli


def test_a_file_mixing_good_and_bad_lines_enqueues_the_good_and_names_each_fault(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    """Bad lines are reported with their number and field, exit 1, and only valid lines are sent."""
    lines = [
        json.dumps({"id": "good-00001", "recipients": ["alice"], "text": "one"}),
        "this is not json",
        json.dumps({"id": "no-recipients", "text": "two"}),
        json.dumps(
            {"id": "good-00002", "recipients": ["bob", {"identifier": "carol"}], "text": "three"}
        ),
        json.dumps({"id": "too-long-text", "recipients": ["dave"], "text": "x" * 40_000}),
        "",
        json.dumps({"id": "space-in-name", "recipients": ["eve smith"], "text": "four"}),
        json.dumps({"id": "bad id!", "recipients": ["frank"], "text": "five"}),
        json.dumps({"recipients": ["grace"], "text": "six, no id given"}),
    ]
    intents = tmp_path / "intents.jsonl"
    intents.write_text("\n".join(lines) + "\n")

    result = run_cli(settings_env, "enqueue", str(intents))

    assert result.returncode == 1, result.stderr
    errors = result.stderr.splitlines()
    assert "line 2: not valid JSON" in errors[0]
    assert errors[1] == "line 3: recipients: Field required"
    assert errors[2] == "line 5: text: String should have at most 32768 characters"
    assert errors[3].startswith("line 7: recipients.0.identifier: String should match pattern")
    assert errors[4].startswith("line 8: id: String should match pattern")
    assert errors[5] == "5 line(s) refused"
    accepted = result.stdout.split()
    assert accepted[:2] == ["good-00001", "good-00002"]
    assert len(accepted) == 3  # the line without an id got a generated one

    start_worker()
    wait_until(lambda: all_sent(redis_client, settings, accepted), timeout=30, what="3 receipts")
    requests = sandbox.admin.requests(kind="messages")
    assert Counter(entry["messageRef"] for entry in requests) == Counter(accepted)
    assert {entry["status"] for entry in requests} == {201}


def test_enqueue_reads_standard_input(settings_env: dict[str, str]) -> None:
    """`dispatcher enqueue -` reads JSON lines from stdin and prints the accepted ids."""
    result = run_cli(
        settings_env,
        "enqueue",
        "-",
        stdin='{"id": "from-stdin", "recipients": ["a"], "text": "t"}\n',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from-stdin"]


def test_a_missing_file_is_a_usage_error(settings_env: dict[str, str], tmp_path: Path) -> None:
    """A file that cannot be read exits 2 with one line naming it."""
    result = run_cli(settings_env, "enqueue", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read")
    assert "absent.jsonl" in result.stderr


def test_a_malformed_setting_stops_the_process_with_one_line(settings_env: dict[str, str]) -> None:
    """A bad setting exits 2 naming the variable, without a traceback."""
    result = run_cli({**settings_env, "DISPATCHER_RATE_LIMIT": "fast"}, "worker")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DISPATCHER_RATE_LIMIT: Input should be a valid number, unable to parse string "
        "as a number (got 'fast')"
    ]


def test_a_worker_without_credentials_refuses_to_start(settings_env: dict[str, str]) -> None:
    """No client id and no permanent token: exit 2 naming the missing variable."""
    env = {**settings_env, "DISPATCHER_CATAPUSH_CLIENT_ID": ""}
    result = run_cli(env, "worker")
    assert result.returncode == 2
    assert "DISPATCHER_CATAPUSH_CLIENT_ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_producers_enqueue_with_one_call(
    settings: Settings, sandbox: SandboxProcess, redis_client: redis.Redis, start_worker: Any
) -> None:
    """`dispatcher.enqueue` validates, enqueues and returns the id; invalid intents raise."""
    intent_id = dispatcher.enqueue(
        {"recipients": [{"identifier": "alice", "recipientRef": "alice-ref-1"}], "text": "hi"},
        settings=settings,
    )
    with pytest.raises(IntentRefused) as refused:
        dispatcher.enqueue({"recipients": [], "text": "hi"}, settings=settings)
    assert refused.value.problems == [
        "recipients: List should have at least 1 item after validation, not 0"
    ]

    start_worker()
    wait_until(lambda: all_sent(redis_client, settings, [intent_id]), timeout=30, what="receipt")
    [request] = sandbox.admin.requests(kind="messages")
    assert request["body"]["recipients"] == [{"identifier": "alice", "recipientRef": "alice-ref-1"}]


def test_a_raw_redis_producer_is_delivered(
    settings: Settings, sandbox: SandboxProcess, redis_client: redis.Redis, start_worker: Any
) -> None:
    """The two Redis commands the README gives a non-Python producer deliver an intent."""
    message_id = str(uuid.uuid4())
    # The README's message, field for field: no ids or timestamps inside the body.
    message = {
        "queue_name": "notifications",
        "actor_name": "deliver",
        "args": [{"id": "raw-producer-1", "recipients": ["alice"], "text": "from redis-cli"}],
        "kwargs": {},
        "options": {},
    }
    namespace = settings.namespace
    redis_client.hset(f"{namespace}:notifications.msgs", message_id, json.dumps(message))
    redis_client.rpush(f"{namespace}:notifications", message_id)

    start_worker()
    wait_until(
        lambda: all_sent(redis_client, settings, ["raw-producer-1"]), timeout=30, what="receipt"
    )
    assert [entry["messageRef"] for entry in sandbox.admin.requests(kind="messages")] == [
        "raw-producer-1"
    ]


def test_a_dramatiq_producer_is_delivered(
    settings: Settings, sandbox: SandboxProcess, redis_client: redis.Redis, start_worker: Any
) -> None:
    """dramatiq's own broker and an actor named `deliver` enqueue intents the worker sends."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=settings.redis_url, namespace=settings.namespace, middleware=[])

    @dramatiq.actor(broker=broker, actor_name="deliver", queue_name="notifications")
    def deliver(intent: dict[str, Any]) -> None:  # pragma: no cover - only sent, never run here
        raise AssertionError("the dispatcher's worker runs this")

    deliver.send({"id": "from-dramatiq", "recipients": ["alice"], "text": "hi"})
    broker.close()
    start_worker()
    wait_until(
        lambda: all_sent(redis_client, settings, ["from-dramatiq"]), timeout=30, what="receipt"
    )
    assert [e["messageRef"] for e in sandbox.admin.requests(kind="messages")] == ["from-dramatiq"]


def test_status_tells_queued_and_retrying_intents_apart(
    settings: Settings, settings_env: dict[str, str]
) -> None:
    """`dispatcher status` finds an intent waiting on the queue or on the delay queue."""
    producer = Producer.from_settings(settings)
    producer.enqueue({"id": "wait-12", "recipients": ["a"], "text": "x"})
    producer.enqueue({"id": "wait-1", "recipients": ["a"], "text": "x"})
    producer.requeue(
        {"id": "later-1", "recipients": ["a"], "text": "x"}, attempt=3, delay_ms=60_000
    )
    producer.close()

    queued = json.loads(run_cli(settings_env, "status", "wait-1", "--json").stdout)
    retrying = json.loads(run_cli(settings_env, "status", "later-1", "--json").stdout)
    unknown = run_cli(settings_env, "status", "never-seen", "--json")

    assert (queued["state"], queued["attempt"]) == ("queued", 1)
    assert (retrying["state"], retrying["attempt"]) == ("retrying", 3)
    assert retrying["eta_ms"] > 0
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["state"] == "unknown"
