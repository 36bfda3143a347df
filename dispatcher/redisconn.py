"""The one way the dispatcher connects to Redis, and what a Redis failure means.

Every component builds its clients here, so all of them share the same two bounds: a
connection must open within `DISPATCHER_REDIS_CONNECT_TIMEOUT_S` and every reply arrive
within `DISPATCHER_REDIS_SOCKET_TIMEOUT_S`. A hung Redis then becomes an error instead of a
wait without end. redis-py retries nothing here: each caller owns its retry policy, and a
hidden retry would multiply the bounds it relies on.

At each edge a `redis.RedisError` is translated with `raise translate(exc, url) from exc`:
`RedisRefused` when retrying cannot help (fix `DISPATCHER_REDIS_URL`), `RedisUnavailable`
when a later call may work. Neither ever shows the URL's password.
"""

from __future__ import annotations

from typing import Literal

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher.errors import DispatcherError, RedisRefused, RedisUnavailable
from dispatcher.logs import redact_passwords
from dispatcher.settings import ENV_PREFIX, Settings

__all__ = [
    "Failure",
    "async_redis",
    "classify",
    "redact_url",
    "sync_redis",
    "sync_redis_at",
    "translate",
    "translate_for",
]

Failure = Literal["refused", "unavailable", "other"]

REDIS_URL_VARIABLE = f"{ENV_PREFIX}REDIS_URL"

# Error texts that mean the URL itself is wrong: the database index (`/99`) does not exist.
# Redis 6+ says the first, older servers the second.
_UNKNOWN_DATABASE = ("db index is out of range", "invalid db index")
# Answers of a Redis that is there but cannot serve now. redis-py raises its own classes for
# them in some versions and a bare ResponseError carrying the code in others.
_NOT_SERVING = ("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY")


def sync_redis(settings: Settings) -> redis.Redis:
    """A client for threads and commands, with the configured timeouts and no retries."""
    return sync_redis_at(
        settings.redis_url,
        connect_timeout_s=settings.redis_connect_timeout_s,
        socket_timeout_s=settings.redis_socket_timeout_s,
    )


def sync_redis_at(url: str, *, connect_timeout_s: float, socket_timeout_s: float) -> redis.Redis:
    """`sync_redis` for a URL and timeouts given apart from the settings."""
    pool = redis.ConnectionPool.from_url(
        url,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis.from_pool(pool)


def async_redis(settings: Settings, *, max_connections: int | None = None) -> aioredis.Redis:
    """A client for an event loop, with the configured timeouts and no retries.

    The pool does not block: past `max_connections` a command fails at once (redis-py's
    `MaxConnectionsError`), which a caller sizing the pool to its concurrency never meets,
    and which saves a timer per command.
    """
    pool = aioredis.ConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


def redact_url(url: str) -> str:
    """The URL with its password (in the userinfo or a `password=` parameter) as `***`.

    The user name, host, port, database and socket path are kept: they are what an operator
    needs to find the Redis that failed. Works for `redis://`, `rediss://` and `unix://`.
    """
    return redact_passwords(url)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _is_refused(exc: redis.exceptions.RedisError) -> bool:
    # AuthenticationError is a ConnectionError in redis-py: test for it before availability.
    if isinstance(
        exc,
        redis.exceptions.AuthenticationError
        | redis.exceptions.AuthenticationWrongNumberOfArgsError
        | redis.exceptions.NoPermissionError,
    ):
        return True
    text = _message(exc)
    if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return True
    return any(marker in text.lower() for marker in _UNKNOWN_DATABASE)


def _is_unavailable(exc: redis.exceptions.RedisError) -> bool:
    if isinstance(
        exc,
        redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | redis.exceptions.BusyLoadingError
        | redis.exceptions.ReadOnlyError
        | redis.exceptions.MasterDownError
        | redis.exceptions.TryAgainError,
    ):
        return True
    return _message(exc).startswith(_NOT_SERVING)


def classify(exc: redis.exceptions.RedisError) -> Failure:
    """`refused`: Redis turned the URL away (password, user, permissions, database);
    retrying cannot help. `unavailable`: no answer, or not serving now (loading, a replica
    after a failover); a later call may work. `other`: anything else."""
    if _is_refused(exc):
        return "refused"
    if _is_unavailable(exc):
        return "unavailable"
    return "other"


def _refusal(exc: redis.exceptions.RedisError, url: str) -> str:
    text = _message(exc)
    if any(marker in text.lower() for marker in _UNKNOWN_DATABASE):
        return "the database index"
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return "a command to this user"
    if redact_url(url) == url:
        return "a connection without a password"
    return "the user name and password"


def _silence(
    exc: redis.exceptions.RedisError, connect_s: float | None, reply_s: float | None
) -> str:
    """Why Redis did not answer, in words an operator can act on."""
    if isinstance(exc, redis.exceptions.TimeoutError):
        connecting = "connect" in _message(exc).lower()
        bound = connect_s if connecting else reply_s
        if bound is not None:
            what = "connection" if connecting else "reply"
            return f"no {what} within {bound:g} s"
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return "it is loading its data set"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or _message(exc).startswith("READONLY"):
        return "it is a read-only replica (after a failover?)"
    return _message(exc)


def translate(
    exc: redis.exceptions.RedisError,
    url: str,
    *,
    connect_timeout_s: float | None = None,
    socket_timeout_s: float | None = None,
) -> DispatcherError:
    """The dispatcher's error for a Redis failure on `url`; raise it `from exc`.

    The timeouts, when given, let a timeout say how long was waited.
    """
    shown = redact_url(url)
    reason = redact_passwords(_message(exc))
    match classify(exc):
        case "refused":
            return RedisRefused(
                f"{REDIS_URL_VARIABLE}: Redis at {shown} refused {_refusal(exc, url)}: {reason}"
            )
        case "unavailable":
            why = redact_passwords(_silence(exc, connect_timeout_s, socket_timeout_s))
            return RedisUnavailable(f"Redis at {shown} did not answer: {why}")
        case _:
            return DispatcherError(f"Redis at {shown} answered with an error: {reason}")


def translate_for(exc: redis.exceptions.RedisError, settings: Settings) -> DispatcherError:
    """`translate` with the URL and timeouts of `settings`."""
    return translate(
        exc,
        settings.redis_url,
        connect_timeout_s=settings.redis_connect_timeout_s,
        socket_timeout_s=settings.redis_socket_timeout_s,
    )
