"""Redis behind TLS: enqueue, the worker and `serve` over `rediss://` with the CA (and a
client certificate) the suite makes, and a wrong CA refused in one line naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import free_port
from dispatcher.store.receipts import ReceiptReader
from tests.conftest import DispatcherProcess, WorkerProcess, wait_until
from tests.integration.helpers import accepted_refs, run_cli
from tests.redisfleet import TlsRedis, tls_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(tls_available() is not None, reason=str(tls_available())),
]

INTENTS = 20


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TlsRedis]:
    with TlsRedis() as server:
        yield server


@pytest.fixture
def tls_env(settings_env: dict[str, str], tls_redis: TlsRedis) -> dict[str, str]:
    return settings_env | {
        "DISPATCHER_REDIS_URL": tls_redis.url,
        "DISPATCHER_REDIS_CA_FILE": str(tls_redis.certs.ca),
        "DISPATCHER_REDIS_CERT_FILE": str(tls_redis.certs.client_cert),
        "DISPATCHER_REDIS_KEY_FILE": str(tls_redis.certs.client_key),
    }


def _settings(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    fields = {key.removeprefix("DISPATCHER_").lower(): value for key, value in env.items()}
    return Settings(**fields)  # type: ignore[arg-type]


def test_enqueue_worker_and_serve_work_over_tls(
    tls_env: dict[str, str],
    tls_redis: TlsRedis,
    sandbox: SandboxProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Intents enqueued by the Python API, the CLI and `serve` over rediss:// (CA and client
    certificate) are all sent by a worker on the same TLS Redis."""
    settings = _settings(tls_env, tmp_path, monkeypatch)
    producer = Producer.from_settings(settings)
    try:
        ids = producer.enqueue_many(
            {"id": f"tls-py-{n:03d}", "recipients": [f"u{n}"], "text": "hi"} for n in range(INTENTS)
        )
    finally:
        producer.close()

    cli = run_cli(
        tls_env, "enqueue", "-", stdin='{"id": "tls-cli-001", "recipients": ["u"], "text": "x"}\n'
    )
    assert cli.returncode == 0, cli.stderr
    ids.append("tls-cli-001")

    port = free_port()
    serve = DispatcherProcess(tls_env, "serve", "--port", str(port))
    worker = WorkerProcess(tls_env, processes=1, threads=8)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def posted() -> bool:
                assert serve.process.poll() is None, serve.log_text()
                try:
                    response = http.post(
                        "/v1/notifications",
                        json={"id": "tls-http-001", "recipients": ["u"], "text": "x"},
                    )
                except httpx.TransportError:
                    return False
                assert response.status_code == 202, response.text
                return True

            wait_until(posted, timeout=30, what="serve to take an intent over TLS Redis")
        ids.append("tls-http-001")
        wait_until(
            lambda: set(ids) <= set(accepted_refs(sandbox)),
            timeout=60,
            what="every intent sent by the worker over TLS Redis",
        )
    finally:
        serve.close()
        worker.close()
    client = tls_redis.client()
    try:
        reader = ReceiptReader(client, Keys(settings.namespace))
        assert all(reader.get(intent_id) is not None for intent_id in ids)
    finally:
        client.close()


@pytest.mark.parametrize("command", ["enqueue", "worker"])
def test_a_wrong_ca_is_one_line_naming_the_setting(
    command: str, tls_env: dict[str, str], tls_redis: TlsRedis
) -> None:
    """A CA that did not sign the server's certificate stops `enqueue` and the worker with
    exit status 2 and one line on stderr naming DISPATCHER_REDIS_CA_FILE."""
    env = tls_env | {"DISPATCHER_REDIS_CA_FILE": str(tls_redis.certs.other_ca)}
    if command == "enqueue":
        result = run_cli(env, "enqueue", "-", stdin='{"recipients": ["u"], "text": "x"}\n')
    else:
        result = run_cli(env, "worker", "--threads", "2")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: DISPATCHER_REDIS_CA_FILE:"), lines[0]
    assert "certificate verify failed" in lines[0]
