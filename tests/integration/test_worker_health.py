"""A worker whose Redis goes away stays alive, reports not ready, and resumes by itself."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.localredis import LocalRedis, free_port
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import all_sent, dead_letters, enqueue_many

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    with LocalRedis(appendonly=True) as server:
        yield server


def status(probe: httpx.Client, path: str) -> int | None:
    try:
        return probe.get(path).status_code
    except httpx.TransportError:
        return None


def test_readiness_follows_redis_and_liveness_does_not(
    own_redis: LocalRedis,
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
) -> None:
    env = {**settings_env, "DISPATCHER_REDIS_URL": own_redis.url}
    own_settings = settings.model_copy(update={"redis_url": own_redis.url})
    port = free_port()
    worker = WorkerProcess(env, threads=8, extra=("--metrics-port", str(port)))
    client = redis.Redis.from_url(own_redis.url)
    probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        wait_until(lambda: status(probe, "/readyz") == 200, timeout=30, what="ready")
        first = enqueue_many(own_settings, 5, prefix="before")
        wait_until(lambda: all_sent(client, own_settings, first), timeout=30, what="5 sent")

        own_redis.kill()
        wait_until(lambda: status(probe, "/readyz") == 503, timeout=15, what="not ready")
        body = probe.get("/readyz").json()
        assert "redis" in body["problems"]
        assert status(probe, "/healthz") == 200
        assert "dispatcher_worker_ready 0" in probe.get("/metrics").text

        own_redis.start()
        wait_until(lambda: status(probe, "/readyz") == 200, timeout=30, what="ready again")
        later = enqueue_many(own_settings, 5, prefix="after")
        wait_until(lambda: all_sent(client, own_settings, later), timeout=30, what="5 more")
        assert worker.process.poll() is None
        worker.stop()
        logged = worker.events()
    finally:
        probe.close()
        client.close()
        worker.close()
    events = [event["event"] for event in logged]
    assert "worker.not_ready" in events
    assert "worker.recovered" in events
    # Waiting an outage out is a line every few seconds, never a traceback.
    assert not any("Traceback" in str(event) for event in logged)


@pytest.mark.fault
def test_credentials_refused_while_running_hold_messages_until_they_are_accepted(
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    settings: Settings,
    settings_env: dict[str, str],
    sandbox: SandboxProcess,
) -> None:
    port = free_port()
    worker = WorkerProcess(settings_env, threads=8, extra=("--metrics-port", str(port)))
    probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        wait_until(lambda: status(probe, "/readyz") == 200, timeout=30, what="ready")
        first = enqueue_many(settings, 3, prefix="before")
        wait_until(lambda: all_sent(redis_client, settings, first), timeout=30, what="3 sent")

        # The account's secret is rotated under the running worker, and its token dropped.
        sandbox.admin.set_credentials("rotated-client", "rotated-secret")
        sandbox.admin.expire_tokens()
        held = enqueue_many(settings, 3, prefix="held")
        wait_until(lambda: status(probe, "/readyz") == 503, timeout=30, what="not ready")
        assert "credentials" in probe.get("/readyz").json()["problems"]
        assert status(probe, "/healthz") == 200
        assert dead_letters(redis_client, settings).list(None) == []

        # Ops put the worker's credentials back: it resumes by itself.
        sandbox.admin.reset()
        wait_until(lambda: all_sent(redis_client, settings, held), timeout=40, what="held sent")
        wait_until(lambda: status(probe, "/readyz") == 200, timeout=15, what="ready again")
        worker.stop()
        logged = worker.events()
    finally:
        probe.close()
        worker.close()
    held_attempts = [
        event["attempt"]
        for event in logged
        if event["event"] == "delivery.sent" and event.get("intent_id", "").startswith("held")
    ]
    assert held_attempts == [1, 1, 1]
    # One line when the refusal began (the next would come a minute later), one at recovery.
    said = [event["event"] for event in logged if event.get("cause") == "credentials"]
    assert said.count("worker.not_ready") == 1
    assert "worker.recovered" in said
