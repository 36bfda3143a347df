"""Redis failures: redacted URLs, and which failures are refusals, outages or neither."""

from __future__ import annotations

import pytest
from redis import exceptions as rex

from dispatcher.errors import ConfigurationError, DispatcherError, RedisRefused, RedisUnavailable
from dispatcher.store.connection import classify, redact_url, translate

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://app:pw@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("rediss://app:pw@cache.internal:6380/2", "rediss://app:***@cache.internal:6380/2"),
        ("unix://:pw@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://cache:6379/0?password=pw", "redis://cache:6379/0?password=***"),
        ("redis://app@cache:6379/0", "redis://app@cache:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://:p@ss:w/rd@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://:@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)
def test_redact_url_masks_the_password_and_keeps_the_rest(url: str, redacted: str) -> None:
    """The password (in the userinfo or a `password=` parameter) becomes ***; the user,
    host, port, database and socket path stay, so the failing Redis can still be found."""
    assert redact_url(url) == redacted


def test_redact_url_is_idempotent() -> None:
    """Redacting twice changes nothing more."""
    once = redact_url(f"redis://app:{PASSWORD}@cache:6379/0")
    assert redact_url(once) == once
    assert PASSWORD not in once


@pytest.mark.parametrize(
    "exc",
    [
        rex.AuthenticationError("invalid username-password pair or user is disabled."),
        rex.AuthenticationError("HELLO must be called with the client already authenticated"),
        rex.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth' command"),
        rex.ResponseError("NOAUTH Authentication required."),
        rex.ResponseError("WRONGPASS invalid username-password pair or user is disabled."),
        rex.NoPermissionError("this user has no permissions to run the 'lpop' command"),
        rex.ResponseError("DB index is out of range"),
        rex.ResponseError("ERR invalid DB index"),
    ],
    ids=lambda exc: f"{type(exc).__name__}:{str(exc)[:20]}",
)
def test_refusals_of_the_url(exc: rex.RedisError) -> None:
    """A wrong password or user, a missing permission or an unknown database is refused."""
    assert classify(exc) == "refused"


@pytest.mark.parametrize(
    "exc",
    [
        rex.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
        rex.TimeoutError("Timeout reading from 127.0.0.1:6379"),
        rex.TimeoutError("Timeout connecting to server"),
        rex.BusyLoadingError("Redis is loading the dataset in memory"),
        rex.ReadOnlyError("You can't write against a read only replica."),
        rex.MasterDownError("Link with MASTER is down and replica-serve-stale-data is 'no'."),
        rex.TryAgainError("Multiple keys request during rehashing of slot"),
        rex.ResponseError("LOADING Redis is loading the dataset in memory"),
        rex.ResponseError("MASTERDOWN Link with MASTER is down"),
        rex.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rex.ResponseError("READONLY You can't write against a read only replica."),
        rex.MaxConnectionsError("Too many connections"),
    ],
    ids=lambda exc: f"{type(exc).__name__}:{str(exc)[:20]}",
)
def test_outages(exc: rex.RedisError) -> None:
    """No answer, or a Redis that cannot serve now (loading, a replica after a failover)."""
    assert classify(exc) == "unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rex.DataError("Invalid input of type: 'dict'"),
        rex.InvalidResponse("Protocol Error: b'HTTP/1.1 400 Bad Request'"),
        rex.RedisError("something else"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_other_errors(exc: rex.RedisError) -> None:
    """Errors that say nothing about the URL or the availability of Redis are `other`."""
    assert classify(exc) == "other"


def test_translated_refusal_names_the_variable_without_the_password() -> None:
    """A refusal is a `RedisRefused`, a `ConfigurationError` whose one line starts with
    the variable and shows the redacted URL."""
    url = f"redis://app:{PASSWORD}@cache:6379/0"
    error = translate(rex.AuthenticationError("invalid username-password pair"), url)
    assert isinstance(error, RedisRefused)
    assert isinstance(error, ConfigurationError)
    message = str(error)
    assert message.startswith("DISPATCHER_REDIS_URL: ")
    assert "redis://app:***@cache:6379/0" in message
    assert "password" in message
    assert PASSWORD not in message
    assert "\n" not in message


def test_translated_unknown_database_says_so() -> None:
    """An unknown database index is refused as such."""
    error = translate(rex.ResponseError("DB index is out of range"), "redis://cache:6379/99")
    assert isinstance(error, RedisRefused)
    assert "database" in str(error)
    assert "redis://cache:6379/99" in str(error)


def test_translated_timeout_says_how_long_was_waited() -> None:
    """A timeout is a `RedisUnavailable` naming the bound that passed."""
    url = f"redis://:{PASSWORD}@cache:6379/0"
    reply = translate(rex.TimeoutError("Timeout reading from cache:6379"), url, socket_timeout_s=2)
    connect = translate(
        rex.TimeoutError("Timeout connecting to server"), url, connect_timeout_s=1.5
    )
    assert isinstance(reply, RedisUnavailable)
    assert str(reply) == "Redis at redis://:***@cache:6379/0 did not answer: no reply within 2 s"
    assert str(connect).endswith("did not answer: no connection within 1.5 s")


def test_translated_error_text_is_redacted_too() -> None:
    """A URL quoted inside redis-py's own message loses its password as well."""
    exc = rex.ConnectionError(f"Error connecting to redis://:{PASSWORD}@cache:6379/0")
    error = translate(exc, f"redis://:{PASSWORD}@cache:6379/0")
    assert isinstance(error, RedisUnavailable)
    assert PASSWORD not in str(error)


def test_other_errors_translate_to_the_base_error() -> None:
    """An error that is neither refusal nor outage is a plain `DispatcherError`."""
    error = translate(rex.ResponseError("WRONGTYPE Operation"), "redis://cache:6379/0")
    assert type(error) is DispatcherError
    assert "WRONGTYPE" in str(error)
