"""What a worker checks at start: settings Redis or Catapush refuse stop it with one line and
exit status 2; a Redis that is away is waited for; rotated credentials take a token of
their own."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.tokens import credentials_fingerprint
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import all_sent, enqueue_many, run_cli

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-Pa55word-right"
CREDENTIALS_SETTINGS = "DISPATCHER_CATAPUSH_CLIENT_ID / DISPATCHER_CATAPUSH_CLIENT_SECRET"


@pytest.fixture(scope="module")
def guarded_redis() -> Iterator[LocalRedis]:
    with LocalRedis(password=REDIS_PASSWORD) as server:
        yield server


def the_one_error_line(result: Any) -> str:
    """stderr is exactly one `error: ...` line and stdout is empty: no log line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    line: str = lines[0]
    return line


def events_named(worker: WorkerProcess, name: str) -> list[dict[str, Any]]:
    return [event for event in worker.events() if event.get("event") == name]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize(
    ("auth", "refused"),
    [("wrong-Pa55word-xyz", "the user name and password"), (None, "without a password")],
)
def test_a_redis_password_redis_refuses_is_one_line_and_exit_2(
    settings_env: dict[str, str],
    guarded_redis: LocalRedis,
    processes: int,
    auth: str | None,
    refused: str,
) -> None:
    """A wrong or missing Redis password stops the worker (and the supervisor before any
    child) with one line naming DISPATCHER_REDIS_URL and showing no password."""
    userinfo = "" if auth is None else f":{auth}@"
    url = f"redis://{userinfo}127.0.0.1:{guarded_redis.port}/0"
    env = {**settings_env, "DISPATCHER_REDIS_URL": url}
    result = run_cli(env, "worker", "--processes", str(processes), "--threads", "4")

    line = the_one_error_line(result)
    assert line.startswith("error: DISPATCHER_REDIS_URL: Redis at redis://")
    assert refused in line
    assert f"127.0.0.1:{guarded_redis.port}/0" in line
    output = result.stdout + result.stderr
    assert REDIS_PASSWORD not in output
    if auth is not None:
        assert auth not in output
        assert ":***@" in line


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
def test_a_redis_database_that_does_not_exist_is_one_line_and_exit_2(
    settings_env: dict[str, str], redis_server: LocalRedis, processes: int
) -> None:
    """Database 99 of a Redis with 16 stops the worker with one line naming the setting."""
    env = {**settings_env, "DISPATCHER_REDIS_URL": redis_server.url.removesuffix("/0") + "/99"}
    result = run_cli(env, "worker", "--processes", str(processes), "--threads", "4")

    line = the_one_error_line(result)
    assert line.startswith("error: DISPATCHER_REDIS_URL: ")
    assert "/99" in line
    assert "database" in line


@pytest.mark.timeout(60)
def test_a_redis_url_that_leads_to_something_else_is_one_line_and_exit_2(
    settings_env: dict[str, str], sandbox: SandboxProcess
) -> None:
    """A URL whose port answers, but not as Redis does (here: an HTTP server), is a setting
    to fix, not an outage to wait out."""
    env = {**settings_env, "DISPATCHER_REDIS_URL": f"redis://127.0.0.1:{sandbox.port}/0"}
    result = run_cli(env, "worker", "--processes", "2", "--threads", "4")

    line = the_one_error_line(result)
    assert line.startswith(
        f"error: DISPATCHER_REDIS_URL: Redis at redis://127.0.0.1:{sandbox.port}/0"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
def test_client_credentials_catapush_refuses_are_one_line_and_exit_2(
    settings_env: dict[str, str], sandbox: SandboxProcess, processes: int
) -> None:
    """A wrong client secret (`invalid_client`) stops the worker with one line naming the
    credential settings, never the secret, after one OAuth request for the whole fleet."""
    wrong_secret = "not-the-Secret-4711"
    env = {**settings_env, "DISPATCHER_CATAPUSH_CLIENT_SECRET": wrong_secret}
    result = run_cli(env, "worker", "--processes", str(processes), "--threads", "4")

    line = the_one_error_line(result)
    assert line.startswith(f"error: {CREDENTIALS_SETTINGS}: ")
    assert "invalid_client" in line
    assert wrong_secret not in result.stdout + result.stderr
    oauth = sandbox.admin.requests(kind="oauth")
    assert [(entry["status"], entry["error"]) for entry in oauth] == [(400, "invalid_client")]
    assert sandbox.admin.stats()["messages_total"] == 0


@pytest.mark.timeout(120)
def test_a_child_that_meets_a_setting_it_cannot_use_stops_the_supervisor_with_2(
    settings_env: dict[str, str], sandbox: SandboxProcess
) -> None:
    """A worker process that exits with status 2 (here: its metrics port is taken) is not
    restarted for ever: the supervisor stops the others and exits 2 too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        # Process i serves its probe on --metrics-port + i: hold the port of process 1.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = int(taken.getsockname()[1])
        started = time.monotonic()
        result = run_cli(
            settings_env,
            "worker",
            *("--processes", "2", "--threads", "4"),
            *("--metrics-port", str(held - 1), "--metrics-host", "127.0.0.1"),
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(f"cannot listen on 127.0.0.1:{held}" in line for line in errors), result.stderr
    assert all(line.startswith("error: --metrics-port: ") for line in errors)
    assert '"worker.died"' not in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.timeout(120)
def test_rotated_credentials_fetch_a_token_of_their_own_at_once(
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
    report: Any,
) -> None:
    """A worker with credentials A sends and caches A's token; once Catapush accepts only B, a
    worker started with B fetches one token of its own before its first send and never sends
    with A's, even though A's token is still cached (and still valid)."""
    first = start_worker(threads=4)
    [before] = enqueue_many(settings, 1, prefix="before-rotation")
    wait_until(lambda: all_sent(redis_client, settings, [before]), timeout=30, what="A's send")
    assert first.stop() == 0
    [issued_to_a] = [entry["token"] for entry in sandbox.admin.requests(kind="oauth")]
    seen = max(entry["seq"] for entry in sandbox.admin.requests())

    client_b, secret_b = "rotated-client", "rotated-Secret-B-0815"
    sandbox.admin.set_credentials(client_b, secret_b)
    second = start_worker(
        threads=4,
        DISPATCHER_CATAPUSH_CLIENT_ID=client_b,
        DISPATCHER_CATAPUSH_CLIENT_SECRET=secret_b,
    )
    [after] = enqueue_many(settings, 1, prefix="after-rotation")
    wait_until(lambda: all_sent(redis_client, settings, [after]), timeout=30, what="B's send")
    assert second.stop() == 0

    later = sandbox.admin.requests(since=seen)
    oauth = [entry for entry in later if entry["kind"] == "oauth"]
    sends = [entry for entry in later if entry["kind"] == "messages"]
    report("OAuth requests with credentials B", len(oauth))
    report("sends with credentials B", len(sends))
    assert [(entry["status"], entry["client_id"]) for entry in oauth] == [(200, client_b)]
    issued_to_b = oauth[0]["token"]
    assert oauth[0]["seq"] < sends[0]["seq"]
    assert [(entry["messageRef"], entry["status"], entry["token"]) for entry in sends] == [
        (after, 201, issued_to_b)
    ]
    assert issued_to_a != issued_to_b

    # Each set of credentials keeps its own token, under a key that shows no secret.
    keys = Keys(settings.namespace)
    cached = {key.decode() for key in redis_client.scan_iter(match=f"{settings.namespace}:token:*")}
    old = credentials_fingerprint(sandbox.base_url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    new = credentials_fingerprint(sandbox.base_url, client_b, secret_b)
    assert cached == {keys.token(old), keys.token(new)}
    for text in (first.log_text(), second.log_text(), *cached):
        assert secret_b not in text
        assert DEFAULT_CLIENT_SECRET not in text


@pytest.fixture
def absent_redis() -> Iterator[LocalRedis]:
    """A Redis on a port of its own that is not started yet."""
    server = LocalRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.fault
def test_a_worker_started_before_redis_waits_and_delivers_once_redis_is_up(
    settings: Settings,
    absent_redis: LocalRedis,
    sandbox: SandboxProcess,
    start_worker: Any,
    report: Any,
) -> None:
    """Redis down at start is waited out, a log line every few seconds and no traceback;
    started 5 s later, it gets the worker's intents delivered."""
    worker = start_worker(processes=2, threads=4, DISPATCHER_REDIS_URL=absent_redis.url)
    # Two lines a few seconds apart: the worker is waiting, and says so without a flood.
    wait_until(
        lambda: len(events_named(worker, "redis.unavailable")) >= 2,
        timeout=30,
        what="two redis.unavailable lines",
    )
    assert worker.process.poll() is None
    absent_redis.start()
    late = settings.model_copy(update={"redis_url": absent_redis.url})
    ids = enqueue_many(late, 3, prefix="after-redis")
    client = redis.Redis.from_url(absent_redis.url)
    try:
        wait_until(lambda: all_sent(client, late, ids), timeout=60, what="3 receipts")
        # One process may deliver all three while the other is still starting.
        wait_until(
            lambda: len(events_named(worker, "worker.started")) == 2,
            timeout=60,
            what="both processes started",
        )
    finally:
        client.close()
    assert worker.stop() == 0

    waits = events_named(worker, "redis.unavailable")
    gaps = [later["waited_s"] - earlier["waited_s"] for earlier, later in itertools.pairwise(waits)]
    report("redis.unavailable lines", len(waits))
    report("shortest gap between them s", min(gaps))
    assert min(gaps) >= 4.5
    assert events_named(worker, "redis.reached")
    assert len(events_named(worker, "worker.started")) == 2
    assert "Traceback" not in worker.log_text()


@pytest.mark.timeout(60)
def test_a_worker_waiting_for_redis_stops_at_once_on_sigterm(
    absent_redis: LocalRedis, sandbox: SandboxProcess, start_worker: Any
) -> None:
    """SIGTERM while Redis is away ends the wait and the worker, with status 0."""
    worker = start_worker(processes=2, threads=4, DISPATCHER_REDIS_URL=absent_redis.url)
    wait_until(
        lambda: events_named(worker, "redis.unavailable"), timeout=30, what="redis.unavailable"
    )
    started = time.monotonic()
    assert worker.stop(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert not events_named(worker, "workers.started")
