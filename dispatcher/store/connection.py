"""The one way the dispatcher connects to Redis, and what a Redis failure means.

Every component builds its clients here, so all of them share the same two bounds: a
connection must open within `DISPATCHER_REDIS_CONNECT_TIMEOUT_S` and every reply arrive
within `DISPATCHER_REDIS_SOCKET_TIMEOUT_S`. A hung Redis then becomes an error instead of a
wait without end. redis-py retries nothing here: each caller owns its retry policy, and a
hidden retry would multiply the bounds it relies on.

TLS and Sentinel are redis-py's own: a `rediss://` URL verifies the server against
`DISPATCHER_REDIS_CA_FILE` (and presents `DISPATCHER_REDIS_CERT_FILE` /
`DISPATCHER_REDIS_KEY_FILE` when set); with `DISPATCHER_REDIS_SENTINELS` the master named
`DISPATCHER_REDIS_SENTINEL_MASTER` is asked of the sentinels before each new connection, and
the URL gives only the scheme, database, user and password. After a failover a connection to
the demoted master fails (`READONLY`, or the old master gone) and the next one finds the new
master: callers see `RedisUnavailable` in between, as in any outage.

At each edge a `redis.RedisError` is translated with `raise translate(exc, url) from exc`:
`RedisRefused` when retrying cannot help (fix `DISPATCHER_REDIS_URL`, or the TLS files),
`RedisUnavailable` when a later call may work. Neither ever shows the URL's password.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from dispatcher.errors import DispatcherError, RedisRefused, RedisUnavailable
from dispatcher.logs import redact_passwords
from dispatcher.settings import ENV_PREFIX, Settings

__all__ = [
    "Failure",
    "RedisTarget",
    "async_redis",
    "classify",
    "redact_url",
    "sync_redis",
    "sync_redis_at",
    "translate",
    "translate_for",
    "translate_target",
]

Failure = Literal["refused", "unavailable", "other"]

REDIS_URL_VARIABLE = f"{ENV_PREFIX}REDIS_URL"
CA_FILE_VARIABLE = f"{ENV_PREFIX}REDIS_CA_FILE"
CLIENT_CERT_VARIABLES = f"{ENV_PREFIX}REDIS_CERT_FILE / {ENV_PREFIX}REDIS_KEY_FILE"

# Error texts that mean the URL itself is wrong: the database index (`/99`) does not exist.
# Redis 6+ says the first, older servers the second.
_UNKNOWN_DATABASE = ("db index is out of range", "invalid db index")
# Answers of a Redis that is there but cannot serve now. redis-py raises its own classes for
# them in some versions and a bare ResponseError carrying the code in others.
_NOT_SERVING = ("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY")
# TLS failures that a retry cannot heal: the certificate, the client certificate or the port
# is wrong. Any other TLS error (a handshake cut short by a restarting Redis) is an outage.
_TLS_VERIFY = ("CERTIFICATE_VERIFY_FAILED",)
_TLS_CLIENT_CERT = (
    "CERTIFICATE_REQUIRED",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "KEY_VALUES_MISMATCH",
    "PEM_LIB",
)
_TLS_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
# Under Sentinel, how often a pool asks the sentinels who the master is. redis-py asks only
# when it opens a connection, and a demoted master keeps taking writes until Sentinel
# reconfigures it (about 10 s after a failover): writes that are then lost. Asking every
# half second moves the pool's connections to the new master within about that instead.
MASTER_CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to reach Redis: the URL, its timeouts, TLS files and sentinels."""

    url: str
    connect_timeout_s: float | None = None
    socket_timeout_s: float | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> RedisTarget:
        def text(path: object) -> str | None:
            return None if path is None else str(path)

        password = settings.redis_sentinel_password
        return cls(
            url=settings.redis_url,
            connect_timeout_s=settings.redis_connect_timeout_s,
            socket_timeout_s=settings.redis_socket_timeout_s,
            ca_file=text(settings.redis_ca_file),
            cert_file=text(settings.redis_cert_file),
            key_file=text(settings.redis_key_file),
            sentinels=settings.redis_sentinel_addresses,
            sentinel_master=settings.redis_sentinel_master,
            sentinel_password=None if password is None else password.get_secret_value() or None,
        )

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def describe(self) -> str:
        """Where Redis is, for messages: the redacted URL, or the master and its sentinels."""
        if not self.sentinels:
            return redact_url(self.url)
        listed = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"master {self.sentinel_master!r} via sentinels {listed} ({redact_url(self.url)})"

    def _tls_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.ca_file is not None:
            options["ssl_ca_certs"] = self.ca_file
        if self.cert_file is not None:
            options["ssl_certfile"] = self.cert_file
            options["ssl_keyfile"] = self.key_file
        return options

    def _common(self) -> dict[str, Any]:
        return {
            "socket_connect_timeout": self.connect_timeout_s,
            "socket_timeout": self.socket_timeout_s,
            **self._tls_options(),
        }

    def _credentials(self) -> dict[str, Any]:
        """What the URL gives under Sentinel: database, user and password."""
        parsed: dict[str, Any] = parse_url(self.url)  # type: ignore[no-untyped-call]
        return {
            key: parsed[key]
            for key in ("db", "username", "password")
            if parsed.get(key) is not None
        }

    def _sentinel_options(self, retry: object) -> dict[str, Any]:
        options = {**self._common(), "retry": retry}
        if self.tls:
            options["ssl"] = True
        if self.sentinel_password is not None:
            options["password"] = self.sentinel_password
        return options


def sync_redis(settings: Settings) -> redis.Redis:
    """A client for threads and commands, with the configured timeouts and no retries."""
    return sync_redis_for(RedisTarget.of(settings))


def sync_redis_at(url: str, *, connect_timeout_s: float, socket_timeout_s: float) -> redis.Redis:
    """`sync_redis` for a URL and timeouts given apart from the settings."""
    return sync_redis_for(
        RedisTarget(url, connect_timeout_s=connect_timeout_s, socket_timeout_s=socket_timeout_s)
    )


def _on(connection: Any, address: object) -> bool:
    return address is None or (connection.host, connection.port) == address


class _SyncSentinelPool(redis.sentinel.SentinelConnectionPool):
    """Follows a failover within `MASTER_CHECK_INTERVAL_S`; closing the client closes its
    connections to the sentinels too."""

    _checked_at = float("-inf")

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked_at >= MASTER_CHECK_INTERVAL_S:
            self._checked_at = now
            # Sentinels away: keep the master already known rather than fail the command.
            with contextlib.suppress(redis.RedisError):
                self.get_master_address()  # type: ignore[no-untyped-call]
        connection = super().get_connection(*args, **kwargs)
        if not _on(connection, self.master_address):
            connection.disconnect()  # type: ignore[no-untyped-call]  # reconnects to the master on its next command
        return connection

    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            sentinel.connection_pool.disconnect()


class _AsyncSentinelPool(aiosentinel.SentinelConnectionPool):
    """Follows a failover within `MASTER_CHECK_INTERVAL_S`; closing the client closes its
    connections to the sentinels too."""

    _checked_at = float("-inf")

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked_at >= MASTER_CHECK_INTERVAL_S:
            self._checked_at = now
            with contextlib.suppress(redis.RedisError):
                await self.get_master_address()  # type: ignore[no-untyped-call]
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if not _on(connection, self.master_address):
            await connection.disconnect()
        return connection

    async def release(self, connection: Any) -> None:
        # A connection in use while the master changed goes back closed, not to the old one.
        if not _on(connection, self.master_address):
            await connection.disconnect()
        await super().release(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.connection_pool.disconnect()


def sync_redis_for(target: RedisTarget) -> redis.Redis:
    """A synchronous client for `target`, with its timeouts and no retries."""
    retry = Retry(NoBackoff(), 0)
    if target.sentinels:
        manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=target._sentinel_options(retry)
        )
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            target.sentinel_master,
            connection_pool_class=_SyncSentinelPool,
            **target._common(),
            **target._credentials(),
            ssl=target.tls,
            retry=retry,
        )
        return client
    pool = redis.ConnectionPool.from_url(target.url, **target._common(), retry=retry)
    return redis.Redis.from_pool(pool)


def async_redis(settings: Settings, *, max_connections: int | None = None) -> aioredis.Redis:
    """A client for an event loop, with the configured timeouts and no retries.

    The pool does not block: past `max_connections` a command fails at once (redis-py's
    `MaxConnectionsError`), which a caller sizing the pool to its concurrency never meets,
    and which saves a timer per command.
    """
    return async_redis_for(RedisTarget.of(settings), max_connections=max_connections)


def async_redis_for(target: RedisTarget, *, max_connections: int | None = None) -> aioredis.Redis:
    """`async_redis` for a target given apart from the settings."""
    retry = AsyncRetry(NoBackoff(), 0)
    if target.sentinels:
        manager = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=target._sentinel_options(retry)
        )
        client: aioredis.Redis = manager.master_for(
            target.sentinel_master or "",
            connection_pool_class=_AsyncSentinelPool,
            **target._common(),
            **target._credentials(),
            ssl=target.tls,
            retry=retry,
            max_connections=max_connections,
        )
        return client
    pool = aioredis.ConnectionPool.from_url(
        target.url, **target._common(), max_connections=max_connections, retry=retry
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


def _tls_text(exc: BaseException) -> str | None:
    """The text of the TLS error behind `exc`, if a TLS error caused it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return str(current)
        current = current.__cause__ or current.__context__
    text = _message(exc)
    return text if "[SSL" in text else None


def _tls_refusal(exc: BaseException) -> str | None:
    """The setting to fix when a TLS error behind `exc` cannot heal, else None."""
    text = _tls_text(exc)
    if text is None:
        return None
    if any(marker in text for marker in _TLS_VERIFY):
        return CA_FILE_VARIABLE
    if any(marker in text for marker in _TLS_CLIENT_CERT):
        return CLIENT_CERT_VARIABLES
    if any(marker in text for marker in _TLS_NOT_TLS):
        return REDIS_URL_VARIABLE
    return None


def _is_refused(exc: redis.exceptions.RedisError) -> bool:
    if _tls_refusal(exc) is not None:
        return True
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
    """`refused`: Redis turned the URL away (password, user, permissions, database), or TLS
    cannot be set up with these files (a certificate not signed by the CA, a client
    certificate refused, a port without TLS); retrying cannot help. `unavailable`: no
    answer, or not serving now (loading, a replica or a demoted master after a failover, a
    TLS handshake cut short); a later call may work. `other`: anything else."""
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


def _tls_refused(
    exc: redis.exceptions.RedisError, shown: str, variable: str, ca_file: str | None
) -> RedisRefused:
    text = redact_passwords(_tls_text(exc) or _message(exc))
    if variable == CA_FILE_VARIABLE:
        what = (
            f"its TLS certificate is not signed by the CA in {ca_file}"
            if ca_file is not None
            else f"its TLS certificate is not signed by a CA this system trusts (set {variable})"
        )
    elif variable == REDIS_URL_VARIABLE:
        what = "it does not speak TLS on that port (use redis://, or the TLS port)"
    else:
        what = f"it refused the client certificate (check {variable})"
    return RedisRefused(f"{variable}: Redis at {shown}: {what}: {text}")


def translate(
    exc: redis.exceptions.RedisError,
    url: str,
    *,
    connect_timeout_s: float | None = None,
    socket_timeout_s: float | None = None,
    where: str | None = None,
    ca_file: str | None = None,
) -> DispatcherError:
    """The dispatcher's error for a Redis failure on `url`; raise it `from exc`.

    The timeouts, when given, let a timeout say how long was waited; `where` replaces the
    redacted URL in the message (a Sentinel master); `ca_file` is the CA a TLS certificate
    was checked against.
    """
    shown = where if where is not None else redact_url(url)
    reason = redact_passwords(_message(exc))
    tls_variable = _tls_refusal(exc)
    if tls_variable is not None:
        return _tls_refused(exc, shown, tls_variable, ca_file)
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
    """`translate` with the URL, timeouts, TLS files and sentinels of `settings`."""
    return translate_target(exc, RedisTarget.of(settings))


def translate_target(exc: redis.exceptions.RedisError, target: RedisTarget) -> DispatcherError:
    """`translate` for a failure on `target`."""
    return translate(
        exc,
        target.url,
        connect_timeout_s=target.connect_timeout_s,
        socket_timeout_s=target.socket_timeout_s,
        where=target.describe(),
        ca_file=target.ca_file,
    )
