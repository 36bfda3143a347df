"""The locked API against a real `dispatcher serve` on a free port: tokens and scopes on
every route of the router, the callback secret in the path and the query, duplicates
stored once, bad requests, dead letters and the queue overview."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from dispatcher.http.app import ACCESS, build_app
from dispatcher.http.routes import PUBLIC
from dispatcher.intents import MAX_INTENT_BYTES
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetterEntry, DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import Receipt
from tests.conftest import wait_until
from tests.integration.helpers import run_cli, sent_count
from tests.integration.test_server import SECRET, ServerProcess, callback

ALL = "all-scopes-token-000000001"
READER = "read-only-token-0000000001"
WRITER = "enqueue-only-token-000001"
OPS = "ops-token-000000000000001"
TOKENS = f"{ALL},{READER}:read,{WRITER}:enqueue,{OPS}:ops+read"
# The routes anyone may call: the probes, the Catapush callbacks and the sign-in form.
EXPECTED_PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/callbacks/catapush"),
    ("POST", "/v1/callbacks/catapush"),
    ("GET", "/v1/callbacks/catapush/{secret}"),
    ("POST", "/v1/callbacks/catapush/{secret}"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def locked(settings_env: dict[str, str]) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {**settings_env, "DISPATCHER_API_TOKENS": TOKENS, "DISPATCHER_CALLBACK_SECRET": SECRET}
    )
    server.wait_listening()
    yield server
    server.close()


def router_routes(settings: Settings) -> list[tuple[str, str]]:
    app = build_app(settings)
    return sorted({(route.method, route.resource.canonical) for route in app.router.routes()})


def test_every_protected_route_of_the_router_wants_a_token(
    locked: ServerProcess, settings: Settings
) -> None:
    """Every route the router holds, but the public ones, answers 401 without a token and
    with a wrong one, before reading a byte of the body; the public set is exactly the
    expected one, so a new route is protected unless it is added here on purpose."""
    routes = router_routes(settings)
    access = build_app(settings)[ACCESS]
    assert set(access) == set(routes)  # every route of the router has its access decided
    assert {route for route in routes if access[route][0] == PUBLIC} == EXPECTED_PUBLIC
    protected = [route for route in routes if route not in EXPECTED_PUBLIC]
    assert len(protected) == 20
    for method, path in protected:
        url = re.sub(r"\{\w+\}", "some-id-1", path)
        for headers in ({}, auth("wrong-token-0000000000001"), {"Cookie": "dispatcher_token=x"}):
            answer = locked.http.request(method, url, headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers, answer.text)
    assert locked.http.get("/v1/queues", headers=auth(ALL)).status_code == 200
    assert "WWW-Authenticate" in locked.http.get("/v1/queues").headers
    assert "login" in locked.http.get("/").text


def test_a_token_without_the_scope_gets_403(locked: ServerProcess) -> None:
    """enqueue, read and ops each open their own routes only; a bare token opens all."""
    intent = {"recipients": ["alice"], "text": "hi"}
    post = locked.http.post
    assert post("/v1/notifications", json=intent, headers=auth(READER)).status_code == 403
    assert post("/v1/notifications", json=intent, headers=auth(WRITER)).status_code == 202
    assert post("/v1/notifications", json=intent, headers=auth(ALL)).status_code == 202
    assert locked.http.get("/v1/queues", headers=auth(WRITER)).status_code == 403
    assert locked.http.get("/v1/queues", headers=auth(READER)).status_code == 200
    assert locked.http.get("/metrics", headers=auth(WRITER)).status_code == 403
    replay = post("/v1/dead-letters/nothing-1/replay", headers=auth(READER))
    assert (replay.status_code, replay.json()) == (
        403,
        {"errors": ["authorization: the token lacks the 'ops' scope"]},
    )
    assert post("/v1/dead-letters/nothing-1/replay", headers=auth(OPS)).status_code == 404
    assert locked.http.get("/openapi.json", headers=auth(WRITER)).status_code == 200


def test_callbacks_by_path_and_by_query_and_a_duplicate_stored_once(
    locked: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """The secret in the path or in the query both work (no API token needed); a wrong one
    is 401; the same callback twice is stored once and counted as a duplicate."""
    http = locked.http
    by_path = http.post(f"/v1/callbacks/catapush/{SECRET}", json=callback(status="enqueued"))
    by_path_get = http.get(f"/v1/callbacks/catapush/{SECRET}", params=callback(status="delivered"))
    by_query = http.post(f"/v1/callbacks/catapush?secret={SECRET}", data=callback(status="read"))
    again = http.post(f"/v1/callbacks/catapush/{SECRET}", json=callback(status="enqueued"))
    wrong = http.post("/v1/callbacks/catapush/guess", json=callback(status="expired"))
    both = http.post(f"/v1/callbacks/catapush/{SECRET}?secret={SECRET}", json=callback())
    assert [a.status_code for a in (by_path, by_path_get, by_query, again)] == [200] * 4
    assert (wrong.status_code, both.status_code) == (401, 401)

    stored = redis_client.lrange(Keys(settings.namespace).callbacks("order-00001"), 0, -1)
    assert [b'"enqueued"' in e or b'"delivered"' in e or b'"read"' in e for e in stored] == [
        True
    ] * 3
    assert len(stored) == 3
    status = http.get("/v1/notifications/order-00001", headers=auth(READER)).json()
    assert [event["status"] for event in status["callbacks"]] == ["enqueued", "delivered", "read"]
    metrics = http.get("/metrics", headers=auth(READER)).text
    assert "dispatcher_callbacks_duplicate_total 1.0" in metrics
    locked.stop()
    assert SECRET not in locked.log_text()
    assert ALL not in locked.log_text()


def test_bad_requests_get_clear_json_errors(locked: ServerProcess) -> None:
    """415 for a body that is not JSON by its type, 400 naming the position of broken JSON,
    413 over the cap, 404 in JSON for an unknown route; a batch logs its count and first
    ids, not every id."""
    http, headers = locked.http, auth(ALL)
    text = http.post(
        "/v1/notifications",
        content=b'{"recipients": ["a"], "text": "x"}',
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert text.status_code == 415
    assert text.json() == {"errors": ["content-type: must be application/json, not text/plain"]}
    broken = http.post(
        "/v1/notifications",
        content=b'{"recipients": ["a"],\n "text" "x"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()["errors"][0].startswith("body: not valid JSON at line 2 column 9 (byte")
    huge = http.post(
        "/v1/notifications",
        content=b"0" * (MAX_INTENT_BYTES + 1),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (huge.status_code, huge.json()) == (
        413,
        {"errors": [f"body: larger than {MAX_INTENT_BYTES} bytes"]},
    )
    unknown = http.get("/v1/nothing-here", headers=headers)
    assert (unknown.status_code, unknown.json()) == (404, {"errors": ["Not Found"]})
    batch = [{"id": f"batch-{n:05d}", "recipients": ["a"], "text": "x"} for n in range(300)]
    assert http.post("/v1/notifications:batch", json=batch, headers=headers).status_code == 202
    locked.stop()
    [line] = [e for e in locked.events() if e.get("event") == "intent.accepted"]
    assert line["count"] == 300
    assert line["first_ids"] == [f"batch-{n:05d}" for n in range(5)]
    assert "batch-00299" not in locked.log_text()
    assert not any(e.get("level") == "error" for e in locked.events())


def test_dead_letters_and_the_queue_overview_over_http(
    locked: ServerProcess,
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Callable[..., Any],
    settings_env: dict[str, str],
) -> None:
    """A rejected intent is listed (by reason, paginated), shown, replayed once the fault is
    gone and sent exactly once; another is purged; the overview counts depths and sends."""
    http, headers = locked.http, auth(ALL)
    sandbox.admin.add_fault(status=403, identifier="bob")
    ids = ["dl-ok-00001", "dl-bob-0001", "dl-bob-0002"]
    for intent_id, who in zip(ids, ["alice", "bob", "bob"], strict=True):
        body = {"id": intent_id, "recipients": [who], "text": "hi"}
        assert http.post("/v1/notifications", json=body, headers=headers).status_code == 202
    assert http.get("/v1/queues", headers=headers).json()["queues"][0]["depth"] == 3
    start_worker()
    store = DeadLetters(redis_client, Keys(settings.namespace))
    wait_until(lambda: store.count() == 2, timeout=30, what="two dead letters")
    DeadLetters(redis_client, Keys(settings.namespace)).add(
        DeadLetterEntry.create(
            intent_id=None,
            reason="invalid",
            status_code=None,
            title="t",
            detail="d",
            attempts=0,
            intent="not json",
        )
    )

    first = http.get("/v1/dead-letters", params={"reason": "rejected", "limit": 1}, headers=headers)
    page = first.json()
    # The two were refused in the same moment, by sends in flight together: either is first.
    [first_id] = [item["id"] for item in page["items"]]
    assert first_id in {"dl-bob-0001", "dl-bob-0002"}
    assert page["counts"] == {"rejected": 2, "invalid": 1, "exhausted": 0, "expired": 0}
    second = http.get(
        "/v1/dead-letters",
        params={"reason": "rejected", "limit": 1, "cursor": page["next_cursor"]},
        headers=headers,
    ).json()
    assert [item["id"] for item in second["items"]] == list(
        {"dl-bob-0001", "dl-bob-0002"} - {first_id}
    )
    # Entries of other reasons follow: the next page is asked for, and is the last.
    third = http.get(
        "/v1/dead-letters",
        params={"reason": "rejected", "cursor": second["next_cursor"]},
        headers=headers,
    ).json()
    assert (third["items"], third["next_cursor"]) == ([], None)
    bad = http.get("/v1/dead-letters", params={"reason": "lost"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["errors"][0].startswith("reason: ")

    shown = http.get("/v1/dead-letters/dl-bob-0001", headers=headers).json()
    assert (shown["status_code"], shown["intent"]["recipients"]) == (403, [{"identifier": "bob"}])
    sandbox.admin.clear_faults()
    assert http.post("/v1/dead-letters/dl-bob-0001/replay", headers=headers).status_code == 200
    assert http.post("/v1/dead-letters/dl-bob-0001/replay", headers=headers).status_code == 404
    assert http.delete("/v1/dead-letters/dl-bob-0002", headers=headers).status_code == 200
    wait_until(
        lambda: sent_count(redis_client, settings, ["dl-ok-00001", "dl-bob-0001"]) == 2,
        timeout=30,
        what="the replayed intent sent",
    )
    refs = [e["messageRef"] for e in sandbox.admin.requests(kind="messages")]
    assert refs.count("dl-bob-0001") == 2  # refused once with 403, accepted once
    status = http.get("/v1/notifications/dl-bob-0001", headers=headers).json()
    cli = run_cli(settings_env, "status", "dl-bob-0001", "--json")
    assert status["state"] == "sent"
    assert cli.returncode == 0
    overview = http.get("/v1/queues", headers=headers).json()
    assert overview["queues"][0]["depth"] == 0
    assert overview["dead_letters"] == 1
    assert overview["rates"]["sent_last_hour"] == 2
    assert overview["rates"]["dead_last_hour"] == 3


def test_cancel_and_the_status_of_scheduled_and_cancelled_intents_over_http(
    locked: ServerProcess, settings: Settings, redis_client: redis.Redis
) -> None:
    """A scheduled intent shows as such, is cancelled (200) and then shows as cancelled; a
    sent one is not cancelled (409); `read` alone may not cancel."""
    http, headers = locked.http, auth(ALL)
    later = "2099-01-01T00:00:00Z"
    body = {"id": "http-sched-1", "recipients": ["alice"], "text": "hi", "sendAt": later}
    too_far = http.post("/v1/notifications", json=body, headers=headers)
    assert too_far.status_code == 422
    assert too_far.json()["errors"][0].startswith("sendAt: ")
    body["sendAt"] = int(time.time() * 1000) + 3_600_000
    assert http.post("/v1/notifications", json=body, headers=headers).status_code == 202
    shown = http.get("/v1/notifications/http-sched-1", headers=headers)
    assert (shown.status_code, shown.json()["state"]) == (200, "scheduled")
    assert shown.json()["send_at_ms"] == body["sendAt"]
    denied = http.post("/v1/notifications/http-sched-1/cancel", headers=auth(READER))
    assert denied.status_code == 403
    cancelled = http.post("/v1/notifications/http-sched-1/cancel", headers=auth(WRITER))
    assert (cancelled.status_code, cancelled.json()) == (
        200,
        {"id": "http-sched-1", "state": "cancelled"},
    )
    after = http.get("/v1/notifications/http-sched-1", headers=headers).json()
    assert after["state"] == "cancelled"
    assert isinstance(after["cancelled_at_ms"], int)

    keys = Keys(settings.namespace)
    receipt = Receipt("http-sent-01", "cp-1", "2026-01-01T00:00:00.000Z", 1)
    redis_client.set(keys.receipt("http-sent-01"), receipt.to_json())
    sent = http.post("/v1/notifications/http-sent-01/cancel", headers=headers)
    assert (sent.status_code, sent.json()) == (
        409,
        {"id": "http-sent-01", "state": "sent", "message_id": "cp-1"},
    )


def test_serve_off_loopback_without_tokens_refuses_to_start(settings_env: dict[str, str]) -> None:
    """One line, exit 2, unless --insecure."""
    result = run_cli(settings_env, "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DISPATCHER_API_TOKENS: required to serve on 0.0.0.0, which is not a loopback "
        "address (or pass --insecure to serve without authentication)"
    ]
    bad = run_cli({**settings_env, "DISPATCHER_API_TOKENS": "short"}, "serve", "--port", "0")
    assert bad.returncode == 2
    assert "entry 1: the token is shorter" in bad.stderr
