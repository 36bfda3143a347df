"""One account's Redis client, shared token, rate limiter and API client, for a command or
a Python caller that talks to Catapush outside a worker (users, token revocation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from dispatcher.catapush.accounts import Account
from dispatcher.catapush.api import CatapushApi
from dispatcher.catapush.connect import open_account_tokens
from dispatcher.ratelimit import DEFAULT_MAX_WAIT_S, SharedRateLimiter
from dispatcher.settings import Settings
from dispatcher.store.connection import async_redis
from dispatcher.store.keys import Keys

# Connections for the limiter and the token cache on top of one per call in flight.
SPARE_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class AccountSession:
    account: Account
    redis: aioredis.Redis
    api: CatapushApi
    limiter: SharedRateLimiter


@asynccontextmanager
async def account_session(
    settings: Settings, account: Account, *, concurrency: int = 1
) -> AsyncIterator[AccountSession]:
    """Everything closed on exit. The limiter is the one the account's sends share, so
    these calls and the fleet's sends together stay within the account's rate limit."""
    redis = async_redis(settings, max_connections=concurrency + SPARE_CONNECTIONS)
    tokens, close_tokens = open_account_tokens(settings, account, redis)
    api = CatapushApi(settings.catapush_url, tokens=tokens, timeout_s=settings.http_timeout_s)
    limiter = SharedRateLimiter(
        redis,
        Keys(settings.namespace),
        rate_per_s=account.rate_limit,
        burst=account.rate_burst,
        max_wait_s=DEFAULT_MAX_WAIT_S,
        account=account.rate_scope,
    )
    try:
        yield AccountSession(account, redis, api, limiter)
    finally:
        await api.aclose()
        await close_tokens()
        await redis.aclose()
