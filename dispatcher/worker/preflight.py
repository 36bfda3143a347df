"""What a worker checks before it consumes anything.

A setting that can never work (a Redis password or database Redis refuses, client
credentials Catapush refuses) stops the worker at once with `ConfigurationError` naming the
variable: restarting it would only repeat the refusal. A service that is merely away is
waited out (Redis) or left to the sends' retries (Catapush), because it will come back
without anyone changing a setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatcher.errors import ConfigurationError, TokenUnavailable
from dispatcher.logs import get_logger
from dispatcher.settings import ENV_PREFIX, Settings
from dispatcher.store.connection import async_redis, classify, redact_url, translate_for
from dispatcher.worker.resources import open_token_source

RETRY_INTERVAL_S = 0.5
# A line every few seconds says the worker is waiting, not hung, without a flood.
UNAVAILABLE_LOG_EVERY_S = 5.0

CREDENTIALS_SETTINGS = f"{ENV_PREFIX}CATAPUSH_CLIENT_ID / {ENV_PREFIX}CATAPUSH_CLIENT_SECRET"

log = get_logger(__name__)


async def preflight(settings: Settings, stop: asyncio.Event) -> bool:
    """Wait until Redis answers, then take the shared token. True when the worker may
    consume; False when `stop` was set first. Raises `ConfigurationError` for a setting
    Redis or Catapush refuses."""
    client = async_redis(settings, max_connections=1)
    try:
        if not await wait_for_redis(client, settings, stop):
            return False
        await take_token(settings, client)
    finally:
        await client.aclose()
    return True


async def wait_for_redis(
    client: aioredis.Redis,
    settings: Settings,
    stop: asyncio.Event,
    *,
    retry_interval_s: float = RETRY_INTERVAL_S,
    log_every_s: float = UNAVAILABLE_LOG_EVERY_S,
) -> bool:
    """PING until Redis answers (True) or `stop` is set (False); raises `ConfigurationError`
    (`RedisRefused` for a password or database) when the URL can never work."""
    url = redact_url(settings.redis_url)
    started = time.monotonic()
    logged_at: float | None = None
    while not stop.is_set():
        try:
            await client.ping()
        except RedisError as exc:
            error = translate_for(exc, settings)
            kind = classify(exc)
            if kind == "refused":
                raise error from exc
            if kind == "other":
                # PING cannot fail on its own: an answer other than PONG means the URL leads
                # to something that is not a Redis this worker can use.
                raise ConfigurationError(f"{ENV_PREFIX}REDIS_URL: {error}") from exc
            now = time.monotonic()
            if logged_at is None or now - logged_at >= log_every_s:
                logged_at = now
                log.warning(
                    "redis.unavailable",
                    url=url,
                    error=str(error),
                    waited_s=round(now - started, 1),
                )
        else:
            if logged_at is not None:
                log.info(
                    "redis.reached",
                    url=url,
                    waited_s=round(time.monotonic() - started, 1),
                )
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_interval_s)
    return False


async def take_token(settings: Settings, redis: aioredis.Redis) -> None:
    """Take the shared OAuth token (cached, or fetched once for the fleet), so refused
    credentials stop the worker before it consumes. Catapush being away is only a warning:
    the sends fetch the token again and retry with backoff."""
    tokens, close = open_token_source(settings, redis)
    if not tokens.refreshable:
        # A permanent token is checked by Catapush on the first send; nothing to take now.
        await close()
        return
    try:
        await tokens.token()
    except TokenUnavailable as exc:
        if exc.permanent:
            raise ConfigurationError(
                f"{CREDENTIALS_SETTINGS}: Catapush at {settings.catapush_url} refused the "
                f"credentials ({exc})"
            ) from exc
        log.warning("token.unavailable", error=str(exc))
    finally:
        await close()


def preflight_blocking(settings: Settings) -> bool:
    """`preflight` on an event loop of its own, stopped early by SIGTERM or SIGINT: for the
    supervisor, before it starts any worker process."""

    async def run() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            return await preflight(settings, stop)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return asyncio.run(run())
