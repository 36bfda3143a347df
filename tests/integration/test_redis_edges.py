"""Every Redis edge against real servers: a silent one, a wrong password, an unknown
database. Each failure is one line, bounded by the configured timeouts, with the exit status
that says whether to wait or to fix the URL, and never the password."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

import dispatcher
from dispatcher.settings import Settings
from dispatcher.store.localredis import LocalRedis, free_port
from tests.conftest import DispatcherProcess, wait_until
from tests.integration.helpers import run_cli

PASSWORD = "Redis-pw-4f9c2e71"
WRONG_PASSWORD = "Wrong-pw-8d31b0aa"
TIMEOUT_S = 1
# Interpreter start and imports, on top of the Redis timeout, on a busy 2-core machine.
STARTUP_ALLOWANCE_S = 15
INTENT = '{"recipients": ["alice"], "text": "hello"}\n'


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP listener on loopback that completes connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


@pytest.fixture(scope="module")
def guarded_redis() -> Iterator[LocalRedis]:
    """A redis-server that requires PASSWORD."""
    with LocalRedis(password=PASSWORD) as server:
        yield server


def env_for(url: str) -> dict[str, str]:
    return {
        "DISPATCHER_REDIS_URL": url,
        "DISPATCHER_REDIS_CONNECT_TIMEOUT_S": str(TIMEOUT_S),
        "DISPATCHER_REDIS_SOCKET_TIMEOUT_S": str(TIMEOUT_S),
        "DISPATCHER_LOG_FORMAT": "json",
    }


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(
    "args",
    [("enqueue", "-"), ("status", "order-1234"), ("dlq", "list")],
    ids=["enqueue", "status", "dlq-list"],
)
def test_a_silent_redis_fails_within_the_timeout(silent_port: int, args: tuple[str, ...]) -> None:
    """Against a server that never answers, a command gives up after the reply timeout
    with one line naming the redacted URL, and exit status 1 (wait, then try again)."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{silent_port}/0"
    started = time.monotonic()
    result = run_cli(env_for(url), *args, stdin=INTENT)
    elapsed = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    message = one_error_line(result.stderr)
    assert message == (
        f"Redis at redis://:***@127.0.0.1:{silent_port}/0 did not answer: "
        f"no reply within {TIMEOUT_S} s"
    )
    assert result.stdout == ""
    assert PASSWORD not in result.stdout + result.stderr
    assert elapsed < TIMEOUT_S + STARTUP_ALLOWANCE_S


def test_enqueue_raises_redis_unavailable_within_the_timeout(silent_port: int) -> None:
    """`dispatcher.enqueue` against a silent server raises RedisUnavailable once the reply
    timeout has passed, not later, and its message hides the password."""
    settings = Settings(
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{silent_port}/0",
        redis_connect_timeout_s=TIMEOUT_S,
        redis_socket_timeout_s=TIMEOUT_S,
    )
    started = time.monotonic()
    with pytest.raises(dispatcher.RedisUnavailable) as caught:
        dispatcher.enqueue({"recipients": ["alice"], "text": "hello"}, settings=settings)
    elapsed = time.monotonic() - started

    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S * 3
    assert f"no reply within {TIMEOUT_S} s" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_wrong_password_is_a_configuration_error(guarded_redis: LocalRedis) -> None:
    """A refused password: exit 2 and one line naming DISPATCHER_REDIS_URL, the password
    (right or wrong) nowhere in the output."""
    url = f"redis://:{WRONG_PASSWORD}@127.0.0.1:{guarded_redis.port}/0"
    result = run_cli(env_for(url), "enqueue", "-", stdin=INTENT)

    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert message.startswith(
        f"DISPATCHER_REDIS_URL: Redis at redis://:***@127.0.0.1:{guarded_redis.port}/0 refused "
        "the user name and password"
    )
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_an_unknown_database_is_a_configuration_error(guarded_redis: LocalRedis) -> None:
    """`dlq list` on database 99 (which does not exist): exit 2, one line naming
    DISPATCHER_REDIS_URL and the database, no password."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded_redis.port}/99"
    result = run_cli(env_for(url), "dlq", "list")

    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr)
    assert message.startswith(
        f"DISPATCHER_REDIS_URL: Redis at redis://:***@127.0.0.1:{guarded_redis.port}/99 "
        "refused the database index"
    )
    assert PASSWORD not in result.stdout + result.stderr


def test_the_right_password_works(guarded_redis: LocalRedis) -> None:
    """The same server and URL shape with the right password enqueues (the refusals above
    are about the password, not the setup)."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{guarded_redis.port}/0"
    result = run_cli(env_for(url), "enqueue", "-", stdin=INTENT)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 1


def test_serve_hides_the_password_and_answers_503(guarded_redis: LocalRedis) -> None:
    """`dispatcher serve` on a refused URL: intake and /readyz answer 503 (/healthz, liveness,
    stays 200), and neither the answers nor the log show the password."""
    port = free_port()
    url = f"redis://:{WRONG_PASSWORD}@127.0.0.1:{guarded_redis.port}/0"
    server = DispatcherProcess(env_for(url), "serve", "--port", str(port))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def health() -> httpx.Response | None:
                try:
                    return http.get("/readyz")
                except httpx.TransportError:
                    assert server.process.poll() is None, server.log_text()
                    return None

            answer = wait_until(health, timeout=30, what="dispatcher serve to listen")
            intake = http.post("/v1/notifications", json={"recipients": ["a"], "text": "x"})
        assert answer.status_code == 503
        [problem] = answer.json()["errors"]
        assert problem.startswith("redis: DISPATCHER_REDIS_URL: Redis at redis://:***@")
        assert intake.status_code == 503
        assert intake.json() == {"errors": ["queue unavailable: try again later"]}
        assert server.stop() == 0
        log = server.log_text()
        assert "intake.failed" in log
        for text in (log, answer.text, intake.text):
            assert WRONG_PASSWORD not in text
    finally:
        server.close()
