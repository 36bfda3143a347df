"""The start-up wait for Redis, against a stand-in client: what stops it, what it waits out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.exceptions
from structlog.testing import capture_logs

from dispatcher.errors import ConfigurationError, RedisRefused
from dispatcher.settings import Settings
from dispatcher.worker.preflight import wait_for_redis

URL = "redis://:hunter2-pw@127.0.0.1:6390/0"


class FlakyRedis:
    """Fails PING with each of `failures` in turn, then answers."""

    def __init__(self, *failures: Exception) -> None:
        self._failures = list(failures)
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if self._failures:
            raise self._failures.pop(0)
        return True


def settings() -> Settings:
    return Settings(redis_url=URL, catapush_access_token="t")


def wait(client: FlakyRedis, stop: asyncio.Event | None = None, **timing: float) -> bool:
    async def run() -> bool:
        return await wait_for_redis(
            client,  # type: ignore[arg-type]
            settings(),
            stop or asyncio.Event(),
            **{"retry_interval_s": 0.001, "log_every_s": 3600.0, **timing},
        )

    return asyncio.run(run())


@pytest.mark.timeout(10)
def test_a_redis_that_is_away_is_waited_for_with_one_line_not_one_per_try() -> None:
    """Twenty refused connections are one `redis.unavailable` line, then success."""
    client = FlakyRedis(
        *(redis.exceptions.ConnectionError("Connection refused") for _ in range(20))
    )
    with capture_logs() as logs:
        assert wait(client)
    assert client.pings == 21
    assert [entry["event"] for entry in logs if entry["log_level"] != "info"] == [
        "redis.unavailable"
    ]
    assert logs[0]["url"] == "redis://:***@127.0.0.1:6390/0"
    assert "hunter2" not in repr(logs)


@pytest.mark.timeout(10)
def test_while_redis_stays_away_a_line_comes_every_so_often() -> None:
    """With a line due every 20 ms, tries every 5 ms for about 100 ms give a handful."""
    client = FlakyRedis(*(redis.exceptions.TimeoutError("Timeout connecting") for _ in range(20)))
    with capture_logs() as logs:
        assert wait(client, retry_interval_s=0.005, log_every_s=0.02)
    lines = [entry for entry in logs if entry["event"] == "redis.unavailable"]
    assert 2 <= len(lines) < 20


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("failure", "refused"),
    [
        (redis.exceptions.AuthenticationError("invalid username-password pair"), "password"),
        (redis.exceptions.ResponseError("DB index is out of range"), "database"),
    ],
)
def test_a_url_redis_refuses_is_a_configuration_error_at_once(
    failure: Exception, refused: str
) -> None:
    """A wrong password or database raises RedisRefused naming the setting, on the first try."""
    client = FlakyRedis(failure)
    with pytest.raises(RedisRefused) as raised:
        wait(client)
    assert client.pings == 1
    message = str(raised.value)
    assert message.startswith("DISPATCHER_REDIS_URL: Redis at redis://:***@127.0.0.1:6390/0")
    assert refused in message
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.mark.timeout(10)
def test_an_answer_that_is_not_redis_is_a_configuration_error() -> None:
    """Something other than Redis on the port is a setting to fix, not an outage."""
    client = FlakyRedis(redis.exceptions.InvalidResponse("Protocol Error: b'HTTP/1.0 400'"))
    with pytest.raises(
        ConfigurationError, match=r"^DISPATCHER_REDIS_URL: Redis at redis://:\*\*\*@"
    ):
        wait(client)


@pytest.mark.timeout(10)
def test_a_stop_ends_the_wait_without_success() -> None:
    """Asked to stop while Redis is away, the wait returns False instead of waiting on."""

    class NeverUp(FlakyRedis):
        async def ping(self) -> Any:
            self.pings += 1
            if self.pings == 3:
                stop.set()
            raise redis.exceptions.ConnectionError("Connection refused")

    stop = asyncio.Event()
    client = NeverUp()
    assert not wait(client, stop)
    assert client.pings == 3
