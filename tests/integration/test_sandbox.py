"""The sandbox Catapush API, run as a real subprocess on loopback and driven over HTTP."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PERMANENT_TOKEN
from dispatcher.sandbox.admin import SandboxAdminError
from dispatcher.sandbox.process import SandboxProcess, SandboxStartError

pytestmark = pytest.mark.integration

UNAUTHORISED = "Unauthorised - Bad or expired token (re-authenticate)"
BAD_REQUEST = "Bad Request - Missing Required Parameters"
PERMANENT = {"Authorization": f"Bearer {DEFAULT_PERMANENT_TOKEN}"}


def message(identifier: str = "alice", ref: str | None = "order-00001", **extra: Any) -> Any:
    body: dict[str, Any] = {
        "mobileAppId": 123,
        "text": "Your order has shipped",
        "recipients": [{"identifier": identifier}],
        **extra,
    }
    if ref is not None:
        body["messageRef"] = ref
    return body


def oauth_params(**override: str) -> dict[str, str]:
    return {
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "grant_type": "client_credentials",
        **override,
    }


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess() as process:
        yield process


@pytest.fixture
def api(sandbox: SandboxProcess) -> Iterator[httpx.Client]:
    sandbox.admin.reset()
    with httpx.Client(base_url=sandbox.base_url, timeout=10, trust_env=False) as client:
        yield client


def new_token(api: httpx.Client) -> str:
    answer = api.post("/auth/oauth", params=oauth_params())
    assert answer.status_code == 200
    token: str = answer.json()["access_token"]
    return token


def test_oauth_issues_a_temporary_token(api: httpx.Client) -> None:
    """Client credentials get a url-safe token that then authenticates a send."""
    answer = api.post("/auth/oauth", params=oauth_params())
    assert answer.status_code == 200
    body = answer.json()
    assert body["grant_type"] == "client_credentials"
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", body["access_token"])
    sent = api.post(
        "/messages", json=message(), headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert sent.status_code == 201


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (oauth_params(client_secret="wrong"), "invalid_client"),
        (oauth_params(client_id="someone-else"), "invalid_client"),
        (oauth_params(grant_type="password"), "invalid_request"),
        ({"client_id": DEFAULT_CLIENT_ID, "grant_type": "client_credentials"}, "invalid_request"),
    ],
)
def test_oauth_refuses_bad_requests(api: httpx.Client, params: dict[str, str], error: str) -> None:
    """Wrong credentials answer invalid_client, a missing parameter or grant invalid_request."""
    answer = api.post("/auth/oauth", params=params)
    assert answer.status_code == 400
    assert answer.json() == {"error": error}


def test_unknown_token_is_401(api: httpx.Client) -> None:
    """A token the sandbox never issued gets 401 with Catapush's error body and title."""
    answer = api.post("/messages", json=message(), headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
    body = answer.json()
    assert body["status"] == 401
    assert body["title"] == UNAUTHORISED
    assert body["detail"]
    assert answer.headers["title"] == UNAUTHORISED


def test_token_in_query_and_header_together_is_400(api: httpx.Client) -> None:
    """The query-string token works alone, and sending it twice is refused."""
    token = DEFAULT_PERMANENT_TOKEN
    alone = api.post("/messages", json=message(), params={"access_token": token})
    assert alone.status_code == 201
    both = api.post("/messages", json=message(), params={"access_token": token}, headers=PERMANENT)
    assert both.status_code == 400
    assert both.json()["title"] == BAD_REQUEST


def test_token_expires_after_its_ttl() -> None:
    """With a 1 s TTL an OAuth token turns into a 401 by itself, and a new one works again."""
    with (
        SandboxProcess(token_ttl_s=1) as sandbox,
        httpx.Client(base_url=sandbox.base_url, timeout=10, trust_env=False) as api,
    ):
        headers = {"Authorization": f"Bearer {new_token(api)}"}
        assert api.post("/messages", json=message(), headers=headers).status_code == 201

        def rejected() -> bool:
            return api.post("/messages", json=message(), headers=headers).status_code == 401

        wait_for(rejected, timeout_s=10, what="token expiry")
        fresh = {"Authorization": f"Bearer {new_token(api)}"}
        assert api.post("/messages", json=message(), headers=fresh).status_code == 201
        assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201


def test_expire_tokens_and_revoke(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """Admin expiry and DELETE /auth/oauth end temporary tokens but not the permanent one."""
    headers = {"Authorization": f"Bearer {new_token(api)}"}
    assert sandbox.admin.expire_tokens() == 1
    expired = api.post("/messages", json=message(), headers=headers)
    assert expired.status_code == 401
    assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201

    headers = {"Authorization": f"Bearer {new_token(api)}"}
    assert api.delete("/auth/oauth", headers=headers).status_code == 200
    assert api.post("/messages", json=message(), headers=headers).status_code == 401
    assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201


def test_send_echoes_the_message_with_an_id(api: httpx.Client) -> None:
    """A valid message gets 201 with the message echoed plus messageId and createdAt."""
    sent = message(notificationText="Shipped")
    answer = api.post("/messages", json=sent, headers=PERMANENT)
    assert answer.status_code == 201
    body = answer.json()
    uuid.UUID(body.pop("messageId"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body.pop("createdAt"))
    assert body == sent


def test_invalid_body_is_400_naming_the_field(api: httpx.Client) -> None:
    """A body breaking a Catapush constraint gets 400 whose detail names the field."""
    answer = api.post("/messages", json=message(identifier="has space"), headers=PERMANENT)
    assert answer.status_code == 400
    body = answer.json()
    assert body["title"] == BAD_REQUEST
    assert body["status"] == 400
    assert "recipients.0.identifier" in body["detail"]

    broken = api.post("/messages", content=b"{not json", headers=PERMANENT)
    assert broken.status_code == 400
    assert broken.json()["title"] == BAD_REQUEST


def test_multipart_attachment_is_accepted_and_logged(
    api: httpx.Client, sandbox: SandboxProcess
) -> None:
    """The multipart form (metadata + file) is validated like JSON and its file is logged."""
    metadata = '{"mobileAppId": 1, "text": "Invoice", "recipients": [{"identifier": "bob"}]}'
    answer = api.post(
        "/messages",
        data={"metadata": metadata},
        files={"file": ("invoice.pdf", b"%PDF-1.4 tiny", "application/pdf")},
        headers=PERMANENT,
    )
    assert answer.status_code == 201
    assert answer.json()["text"] == "Invoice"
    [entry] = sandbox.admin.requests("messages")
    assert entry["attachment"] == {
        "filename": "invoice.pdf",
        "size": 13,
        "contentType": "application/pdf",
    }


def test_fault_with_count_then_success(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """A fault with count 2 answers the next two sends with its status, then sends succeed."""
    sandbox.admin.add_fault(status=500, count=2)
    statuses = [api.post("/messages", json=message(), headers=PERMANENT) for _ in range(3)]
    assert [answer.status_code for answer in statuses] == [500, 500, 201]
    assert statuses[0].json() == {
        "detail": statuses[0].json()["detail"],
        "status": 500,
        "title": "Internal Server Error",
    }
    assert sandbox.admin.faults() == []


def test_identifier_scoped_fault(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """A fault naming an identifier hits only messages to that recipient."""
    sandbox.admin.add_fault(status=403, identifier="mallory", detail="blocked")
    other = api.post("/messages", json=message("alice"), headers=PERMANENT)
    assert other.status_code == 201
    hit = api.post("/messages", json=message("mallory"), headers=PERMANENT)
    assert hit.status_code == 403
    assert hit.json()["detail"] == "blocked"
    assert hit.json()["title"].startswith("Forbidden")
    again = api.post("/messages", json=message("mallory"), headers=PERMANENT)
    assert again.status_code == 403


def test_retry_after_header(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """A fault with retry_after sends a Retry-After header, integer or decimal seconds."""
    sandbox.admin.add_fault(status=429, count=1, retry_after=2)
    sandbox.admin.add_fault(status=503, count=1, retry_after=0.25)
    first = api.post("/messages", json=message(), headers=PERMANENT)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert first.json()["title"] == "Too Many Requests"
    second = api.post("/messages", json=message(), headers=PERMANENT)
    assert second.status_code == 503
    assert second.headers["Retry-After"] == "0.25"


def test_drop_closes_the_connection(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """A drop fault closes the connection without answering; the next send is served."""
    sandbox.admin.add_fault(drop=True, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/messages", json=message(), headers=PERMANENT)
    assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201
    assert sandbox.admin.stats()["messages_dropped"] == 1


def test_latency_delays_answers(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """Base latency and a fault's latency_ms both hold the answer back."""
    sandbox.admin.set_latency(200)
    started = time.monotonic()
    assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201
    assert time.monotonic() - started >= 0.2
    sandbox.admin.set_latency(0)
    sandbox.admin.add_fault(latency_ms=300, count=1)
    started = time.monotonic()
    assert api.post("/messages", json=message(), headers=PERMANENT).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_request_log_and_stats(api: httpx.Client, sandbox: SandboxProcess) -> None:
    """Every OAuth and send request is logged in order with its outcome and counted."""
    token = new_token(api)
    api.post("/messages", json=message("alice", "ref-00001"), headers=PERMANENT)
    api.post("/messages", json=message("bob", "ref-00002"), headers={"Authorization": "Bearer x"})
    api.post("/messages", json=message("alice", "ref-00001"), headers=PERMANENT)

    entries = sandbox.admin.requests()
    assert [entry["kind"] for entry in entries] == ["oauth", "messages", "messages", "messages"]
    assert [entry["seq"] for entry in entries] == sorted(entry["seq"] for entry in entries)
    assert entries[0]["token"] == token
    sends = sandbox.admin.requests("messages")
    assert [(s["status"], s["messageRef"], s["identifiers"]) for s in sends] == [
        (201, "ref-00001", ["alice"]),
        (401, "ref-00002", ["bob"]),
        (201, "ref-00001", ["alice"]),
    ]
    assert sends[0]["token"] == DEFAULT_PERMANENT_TOKEN
    assert sends[0]["body"] == message("alice", "ref-00001")
    assert sandbox.admin.requests("messages", since=sends[1]["seq"]) == [sends[2]]

    stats = sandbox.admin.stats()
    assert stats["oauth_requests"] == 1
    assert stats["messages_by_status"] == {"201": 2, "401": 1}
    assert stats["accepted"] == 2
    assert stats["duplicates"] == 1
    assert stats["cpu_s"] > 0
    assert stats["uptime_s"] > 0

    sandbox.admin.clear_requests()
    assert sandbox.admin.requests() == []


def test_admin_refuses_a_meaningless_fault(sandbox: SandboxProcess) -> None:
    """A fault rule with nothing to do, or a status that is not an error, is refused."""
    with pytest.raises(SandboxAdminError):
        sandbox.admin.add_fault(count=1)
    with pytest.raises(SandboxAdminError):
        sandbox.admin.add_fault(status=200)


def test_process_start_failure_reports_stderr() -> None:
    """A sandbox that exits before listening raises SandboxStartError quoting its stderr."""
    with pytest.raises(SandboxStartError, match="latency-ms"), SandboxProcess(latency_ms=-1):
        pass
