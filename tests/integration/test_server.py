"""`dispatcher serve`: HTTP intake, Catapush status callbacks, /healthz and /metrics, run as a
subprocess against the suite's real Redis and sandbox."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import redis

from dispatcher.intents import MAX_INTENT_BYTES
from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import free_port
from tests.conftest import DispatcherProcess, wait_until
from tests.integration.helpers import run_cli, sent_count

SECRET = "callback-s3cret-value"
START_TIMEOUT_S = 30.0


class ServerProcess(DispatcherProcess):
    """`dispatcher serve` in a subprocess on a free port, its JSON log kept in a file."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(env, "serve", "--port", str(self.port))
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def wait_listening(self) -> None:
        """Until the server answers /healthz at all (200 or 503), or fail with its log."""

        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(
                    f"dispatcher serve exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                self.http.get("/healthz")
            except httpx.TransportError:
                return False
            return True

        wait_until(answers, timeout=START_TIMEOUT_S, what="dispatcher serve to listen")

    def close(self) -> None:
        super().close()
        self.http.close()


@pytest.fixture
def start_server(settings_env: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(**extra_env: str) -> ServerProcess:
        server = ServerProcess({**settings_env, **extra_env})
        started.append(server)
        server.wait_listening()
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that requires the callback secret."""
    return start_server(DISPATCHER_CALLBACK_SECRET=SECRET)


def callback(message_ref: str | None = "order-00001", **changes: str) -> dict[str, str]:
    fields = {
        "type": "MessageStatus",
        "timestamp": "2024-05-01T10:15:30Z",
        "applicationId": "4242",
        "messageId": "6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
        "recipient": "alice",
        "status": "delivered",
    }
    if message_ref is not None:
        fields["messageRef"] = message_ref
    return {**fields, **changes}


def callback_path(secret: str | None = SECRET) -> str:
    return "/v1/callbacks/catapush" + ("" if secret is None else f"?secret={secret}")


def stored_callbacks(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in client.lrange(key, 0, -1)]


def queue_length(client: redis.Redis, settings: Settings) -> int:
    return int(client.llen(Keys(settings.namespace).queue(settings.queue)))


def scrape(server: ServerProcess) -> dict[str, float]:
    """/metrics as {sample name with labels: value}, checking HELP/TYPE precede each family."""
    response = server.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"}
            typed.add(name)
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert name.split("{")[0] in typed, f"{name} has no # TYPE line before it"
            samples[name] = float(value)
    return samples


# -- Intake ------------------------------------------------------------------------------------


def test_a_valid_intent_is_accepted_and_delivered(
    server: ServerProcess,
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
) -> None:
    """A valid intent is answered 202 with its id (given or generated) and a worker sends it."""
    given = server.http.post(
        "/v1/notifications", json={"id": "http-00001", "recipients": ["alice"], "text": "hi"}
    )
    generated = server.http.post("/v1/notifications", json={"recipients": ["bob"], "text": "yo"})

    assert given.status_code == 202
    assert given.json() == {"id": "http-00001"}
    assert generated.status_code == 202
    ids = ["http-00001", generated.json()["id"]]
    start_worker()
    wait_until(lambda: sent_count(redis_client, settings, ids) == 2, timeout=30, what="2 receipts")
    assert sorted(e["messageRef"] for e in sandbox.admin.requests(kind="messages")) == sorted(ids)
    assert any(
        e.get("event") == "intent.accepted" and e.get("id") == "http-00001" for e in server.events()
    )


def test_an_invalid_intent_is_refused_naming_the_field(
    server: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """An intent breaking a constraint gets 422 with `<field>: <reason>` and is not enqueued."""
    response = server.http.post(
        "/v1/notifications", json={"id": "bad-00001", "recipients": ["eve smith"], "text": "hi"}
    )
    missing = server.http.post("/v1/notifications", json={"id": "bad-00002", "text": "hi"})

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error.startswith("recipients.0.identifier: String should match pattern")
    assert missing.status_code == 422
    assert missing.json() == {"errors": ["recipients: Field required"]}
    assert queue_length(redis_client, settings) == 0


def test_a_body_that_is_not_one_json_object_is_a_bad_request(
    server: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """Non-JSON and non-object bodies get 400 naming `body`; a body over the intent cap (the
    one every intake door shares) gets 413."""
    not_json = server.http.post(
        "/v1/notifications", content=b"{oops", headers={"content-type": "application/json"}
    )
    an_array = server.http.post("/v1/notifications", json=[{"recipients": ["a"], "text": "x"}])
    huge = server.http.post(
        "/v1/notifications",
        json={"recipients": ["alice"], "text": "x" * MAX_INTENT_BYTES},
    )

    assert not_json.status_code == 400
    assert not_json.json()["errors"][0].startswith("body: not valid JSON")
    assert an_array.status_code == 400
    assert an_array.json() == {"errors": ["body: must be a JSON object, not list"]}
    assert huge.status_code == 413
    assert huge.json() == {"errors": [f"body: larger than {MAX_INTENT_BYTES} bytes"]}
    assert queue_length(redis_client, settings) == 0


def test_a_batch_is_accepted_all_or_nothing(
    server: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """One bad intent refuses the whole batch with `<index>.<field>`; a good batch is enqueued."""
    good = {"recipients": ["alice"], "text": "one"}
    refused = server.http.post(
        "/v1/notifications:batch",
        json=[good, {"recipients": ["bob"]}, good, {"recipients": [], "text": "x"}],
    )
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        "1.text: is required unless a template is named",
        "3.recipients: List should have at least 1 item after validation, not 0",
    ]
    assert queue_length(redis_client, settings) == 0

    accepted = server.http.post(
        "/v1/notifications:batch",
        json=[{"id": "batch-00001", **good}, {"id": "batch-00002", **good}, good],
    )
    assert accepted.status_code == 202
    ids = accepted.json()["ids"]
    assert ids[:2] == ["batch-00001", "batch-00002"]
    assert len(ids) == 3
    assert queue_length(redis_client, settings) == 3

    not_an_array = server.http.post("/v1/notifications:batch", json=good)
    assert not_an_array.status_code == 400
    assert not_an_array.json() == {"errors": ["body: must be a JSON array of intents, not dict"]}


# -- Callbacks ---------------------------------------------------------------------------------


def test_callbacks_in_the_three_forms_are_stored_and_shown_by_status(
    server: ServerProcess,
    settings: Settings,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
    start_worker: Any,
) -> None:
    """GET, form POST and JSON POST callbacks land in the intent's list, in order, and
    `dispatcher status ID` shows them next to the receipt, as JSON and one line per event."""
    intent_id = server.http.post(
        "/v1/notifications", json={"id": "order-00001", "recipients": ["alice"], "text": "hi"}
    ).json()["id"]
    start_worker()
    wait_until(lambda: sent_count(redis_client, settings, [intent_id]), timeout=30, what="receipt")

    answers = [
        server.http.get(
            "/v1/callbacks/catapush", params={**callback(status="enqueued"), "secret": SECRET}
        ),
        server.http.post(callback_path(), data=callback(status="delivered")),
        server.http.post(
            callback_path(), json=callback(status="read", recipientRef="alice-order-1")
        ),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"ok": True})] * 3

    status = run_cli(settings_env, "status", intent_id, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "sent"
    event = {
        "recipient": "alice",
        "timestamp": "2024-05-01T10:15:30Z",
        "messageId": "6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
    }
    assert report["callbacks"] == [
        {"status": "enqueued", **event},
        {"status": "delivered", **event},
        {"status": "read", **event, "recipientRef": "alice-order-1"},
    ]
    key = Keys(settings.namespace).callbacks(intent_id)
    assert 0 < redis_client.ttl(key) <= 30 * 24 * 3600

    text = run_cli(settings_env, "status", intent_id)
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.startswith("callback: ")]
    assert [line.split()[2] for line in lines] == ["enqueued", "delivered", "read"]
    assert "state: sent" in text.stdout.splitlines()


def test_callbacks_without_a_receipt_or_message_ref_are_kept(
    server: ServerProcess,
    settings: Settings,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
) -> None:
    """An intent with callbacks but no receipt is still reported (exit 0), and a callback
    without messageRef is kept under its Catapush messageId."""
    assert server.http.post(callback_path(), json=callback("never-sent-1")).status_code == 200
    assert (
        server.http.post(callback_path(), json=callback(None, messageId="m-1")).status_code == 200
    )

    status = run_cli(settings_env, "status", "never-sent-1", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "unknown"
    assert [event["status"] for event in report["callbacks"]] == ["delivered"]
    by_id = stored_callbacks(redis_client, Keys(settings.namespace).callbacks_by_message_id("m-1"))
    assert [(e["status"], e["messageId"]) for e in by_id] == [("delivered", "m-1")]
    assert run_cli(settings_env, "status", "nothing-here").returncode == 1


def test_a_callback_history_keeps_the_last_hundred_events(
    server: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """The list per message is trimmed to the latest 100 events."""
    for n in range(105):
        server.http.post(callback_path(), data=callback("chatty-0001", recipient=f"r{n}"))
    events = stored_callbacks(redis_client, Keys(settings.namespace).callbacks("chatty-0001"))
    assert len(events) == 100
    assert (events[0]["recipient"], events[-1]["recipient"]) == ("r5", "r104")


def test_a_wrong_or_missing_secret_is_refused(
    server: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """With DISPATCHER_CALLBACK_SECRET set, a callback without it or with another gets 401,
    stores nothing, and the secret never appears in the logs."""
    answers = [
        server.http.get("/v1/callbacks/catapush", params=callback()),
        server.http.get("/v1/callbacks/catapush", params={**callback(), "secret": "guess"}),
        server.http.post(callback_path(None), data=callback()),
        server.http.post(callback_path("guess"), json=callback()),
        server.http.post(f"{callback_path()}&secret=other", json=callback()),
    ]
    assert [a.status_code for a in answers] == [401] * 5
    assert answers[0].json() == {"errors": ["secret: missing or wrong"]}
    assert redis_client.exists(Keys(settings.namespace).callbacks("order-00001")) == 0

    assert server.http.post(callback_path(), json=callback()).status_code == 200
    server.stop()
    refused = [e for e in server.events() if e.get("event") == "callback.refused"]
    assert len(refused) == 5
    assert SECRET not in server.log_text()
    assert not any(e.get("event") == "callback.disabled" for e in server.events())


def test_without_a_secret_the_callback_receiver_is_off(
    start_server: Callable[..., ServerProcess], settings: Settings, redis_client: redis.Redis
) -> None:
    """No secret configured: every callback route answers a JSON 404 and stores nothing, so
    a status cannot be forged; the start-up log says why once."""
    server = start_server()
    answers = [
        server.http.post("/v1/callbacks/catapush", json=callback()),
        server.http.get("/v1/callbacks/catapush", params=callback()),
        server.http.post("/v1/callbacks/catapush/anything", json=callback()),
        server.http.get("/v1/callbacks/catapush/anything", params=callback()),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(404, {"errors": ["Not Found"]})] * 4
    assert redis_client.keys(f"{settings.namespace}:callbacks:*") == []
    notes = [e for e in server.events() if e.get("event") == "callback.disabled"]
    assert len(notes) == 1


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({k: v for k, v in callback().items() if k != "messageId"}, "messageId: is required"),
        (callback(status="teleported"), "status: 'teleported' is not a documented"),
        (callback(type="InboundMessage"), "type: must be 'MessageStatus'"),
        (callback(messageRef="not a ref"), "messageRef: 'not a ref' does not match"),
    ],
)
def test_a_malformed_callback_gets_400_naming_the_key(
    server: ServerProcess,
    settings: Settings,
    redis_client: redis.Redis,
    fields: dict[str, str],
    error: str,
) -> None:
    """A missing key, an unknown status, a wrong type or a bad messageRef gets 400 naming the
    key in all three forms, is logged as `callback.refused`, and nothing is stored."""
    answers = [
        server.http.get("/v1/callbacks/catapush", params={**fields, "secret": SECRET}),
        server.http.post(callback_path(), data=fields),
        server.http.post(callback_path(), json=fields),
    ]
    for answer in answers:
        assert answer.status_code == 400
        [message] = answer.json()["errors"]
        assert message.startswith(error)
    assert redis_client.keys(f"{settings.namespace}:callbacks:*") == []
    refused = [e for e in server.events() if e.get("event") == "callback.refused"]
    assert len(refused) == 3
    assert {e["status"] for e in refused} == {400}


def test_a_callback_body_in_another_format_is_refused(server: ServerProcess) -> None:
    """A POST that is neither JSON nor form-encoded gets 415, and a broken JSON body 400."""
    text = server.http.post(
        callback_path(), content=urlencode(callback()), headers={"content-type": "text/plain"}
    )
    broken = server.http.post(
        callback_path(), content=b"{", headers={"content-type": "application/json"}
    )
    assert text.status_code == 415
    assert broken.status_code == 400
    assert broken.json()["errors"][0].startswith("body: is not valid JSON")


# -- Health and metrics ------------------------------------------------------------------------


def test_metrics_count_requests_and_read_depths_from_redis(
    server: ServerProcess,
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
) -> None:
    """Counters follow accepted and refused intents and callbacks; the gauges follow the
    queues, delay queues and schedules of both lanes, and the dead-letter store."""
    before = scrape(server)
    assert before["dispatcher_intake_accepted_total"] == 0
    assert before['dispatcher_callbacks_total{status="delivered"}'] == 0
    assert before["dispatcher_queue_depth"] == 0
    assert before["dispatcher_redis_up"] == 1

    post = server.http.post
    post("/v1/notifications", json={"id": "metric-0001", "recipients": ["alice"], "text": "a"})
    post("/v1/notifications", json={"id": "metric-0002", "recipients": ["bob"], "text": "b"})
    post("/v1/notifications:batch", json=[{"recipients": ["carol"], "text": "c"}] * 2)
    post("/v1/notifications", json={"recipients": []})
    post("/v1/notifications", content=b"not json")
    post(callback_path(), json=callback(status="delivered"))
    post(callback_path(), data=callback(status="delivered", recipient="bob"))
    post(callback_path(), data=callback(status="delivered", recipient="bob"))  # a duplicate
    post(callback_path(), json=callback(status="read"))
    post(callback_path(), json=callback(status="nope"))
    post(callback_path("wrong"), json=callback())
    producer = Producer.from_settings(settings)
    producer.requeue(
        {"id": "later-0001", "recipients": ["dan"], "text": "d"}, attempt=2, delay_ms=600_000
    )
    # One on the bulk lane and one scheduled an hour ahead: the gauges cover both lanes.
    producer.enqueue_many(
        [
            {"id": "bulk-00001", "recipients": ["erin"], "text": "e", "priority": "bulk"},
            {
                "id": "sched-0001",
                "recipients": ["fay"],
                "text": "f",
                "sendAt": int(time.time() * 1000) + 3_600_000,
            },
        ]
    )
    producer.close()

    after = scrape(server)
    assert after["dispatcher_intake_accepted_total"] == 4
    assert after["dispatcher_intake_refused_total"] == 2
    assert after['dispatcher_callbacks_total{status="delivered"}'] == 2
    assert after['dispatcher_callbacks_total{status="read"}'] == 1
    assert after['dispatcher_callbacks_total{status="enqueued"}'] == 0
    assert after["dispatcher_callbacks_refused_total"] == 2
    assert after["dispatcher_callbacks_duplicate_total"] == 1
    assert after["dispatcher_queue_depth"] == 5
    assert after["dispatcher_delayed_depth"] == 1
    assert after["dispatcher_scheduled_depth"] == 1
    assert after["dispatcher_dead_letters"] == 0

    sandbox.admin.add_fault(status=403, identifier="bob")
    start_worker()
    dead_letters = DeadLetters(redis_client, Keys(settings.namespace))
    wait_until(lambda: dead_letters.count() == 1, timeout=30, what="bob's dead letter")
    wait_until(
        lambda: scrape(server)["dispatcher_queue_depth"] == 0, timeout=30, what="an empty queue"
    )
    # The delayed retry is not checked here: a worker takes delayed messages off the list
    # and holds them until they are due, as dramatiq does.
    assert scrape(server)["dispatcher_dead_letters"] == 1


def test_probes_answer_when_redis_does(server: ServerProcess) -> None:
    """/healthz is 200 {"ok": true}; /readyz too while Redis answers PING, with the count of
    templates loaded; unknown paths get a JSON 404."""
    response = server.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})
    ready = server.http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ok": True, "templates": 0})
    missing = server.http.get("/v2/nothing")
    assert (missing.status_code, missing.json()) == (404, {"errors": ["Not Found"]})


def test_without_redis_health_and_intake_answer_503(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With Redis unreachable: /readyz and intake get 503 (/healthz stays 200: the server is
    alive), callbacks 503, /metrics still serves its counters with redis_up 0, and an invalid
    intent is still refused with 422."""
    server = start_server(
        DISPATCHER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DISPATCHER_CALLBACK_SECRET=SECRET,
    )
    alive = server.http.get("/healthz")
    health = server.http.get("/readyz")
    intake = server.http.post("/v1/notifications", json={"recipients": ["a"], "text": "x"})
    invalid = server.http.post("/v1/notifications", json={"recipients": [], "text": "x"})
    stored = server.http.post(callback_path(), json=callback())

    assert alive.status_code == 200
    assert health.status_code == 503
    assert health.json()["ok"] is False
    assert intake.status_code == 503
    assert intake.json()["errors"][0].startswith("queue unavailable: ")
    assert invalid.status_code == 422
    assert stored.status_code == 503
    samples = scrape(server)
    assert samples["dispatcher_redis_up"] == 0
    assert "dispatcher_queue_depth" not in samples


# -- The command -------------------------------------------------------------------------------


def test_sigterm_stops_the_server_cleanly(server: ServerProcess) -> None:
    """SIGTERM ends `dispatcher serve` with status 0 after logging start (host, port) and stop."""
    assert server.stop() == 0
    events = [e["event"] for e in server.events()]
    started = next(e for e in server.events() if e["event"] == "server.started")
    assert (started["host"], started["port"]) == ("127.0.0.1", server.port)
    assert events.index("server.started") < events.index("server.stopped")


def test_a_port_in_use_exits_1_with_one_line(settings_env: dict[str, str]) -> None:
    """A port that cannot be bound exits 1 with a single error line and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(settings_env, "serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_malformed_setting_exits_2(settings_env: dict[str, str]) -> None:
    """A bad DISPATCHER_* setting stops `serve` at start with exit 2 naming the variable."""
    result = run_cli(
        {**settings_env, "DISPATCHER_REDIS_URL": "http://nope"}, "serve", "--port", "0"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: DISPATCHER_REDIS_URL: ")
