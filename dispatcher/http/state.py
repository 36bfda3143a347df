"""What the handlers of one `serve` process share."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from aiohttp import web
from redis import Redis as SyncRedis

from dispatcher.http.auth import ApiToken
from dispatcher.http.metrics import ServeMetrics
from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.connection import redact_url, translate_for
from dispatcher.store.keys import Keys


@dataclass
class ServerState:
    settings: Settings
    keys: Keys
    producer: Producer
    redis: aioredis.Redis
    # For the synchronous readers shared with the CLI (status, dead letters), on a thread.
    sync_redis: SyncRedis
    metrics: ServeMetrics
    callback_secret: bytes | None
    tokens: tuple[ApiToken, ...]
    templates: int
    # Signs the console's forms when no API tokens are set; per process.
    process_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))


STATE = web.AppKey("state", ServerState)


def redis_error(settings: Settings, exc: BaseException) -> str:
    """What went wrong with Redis, for a log line or an answer: the URL redacted."""
    if isinstance(exc, redis.RedisError):
        return str(translate_for(exc, settings))
    return f"Redis at {redact_url(settings.redis_url)}: {str(exc) or type(exc).__name__}"


def redis_deadline_s(settings: Settings) -> float:
    # The client's own timeouts end a call first; this only guards against a call that
    # would somehow outlive both (a connection and a reply).
    return settings.redis_connect_timeout_s + settings.redis_socket_timeout_s


# Errors a Redis call can end with, the guard's timeout included.
REDIS_FAILURES = (redis.RedisError, OSError, TimeoutError)
