"""An account's token source and clients, made on the running event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from dispatcher.catapush.accounts import Account
from dispatcher.client import USER_AGENT
from dispatcher.settings import Settings, secret_value
from dispatcher.store.keys import Keys
from dispatcher.tokens import (
    OAuthTokenSource,
    PermanentToken,
    SharedTokenCache,
    TokenSource,
    credentials_fingerprint,
)
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver

Closer = Callable[[], Awaitable[None]]


async def _nothing_to_close() -> None:
    return None


def fingerprint_of(settings: Settings, account: Account) -> str | None:
    """What the account's shared token is cached under; None for a permanent token."""
    if secret_value(account.access_token) is not None:
        return None
    assert account.client_id is not None
    assert account.client_secret is not None
    return credentials_fingerprint(
        settings.catapush_url, account.client_id, account.client_secret.get_secret_value()
    )


def open_account_tokens(
    settings: Settings,
    account: Account,
    redis: aioredis.Redis,
    *,
    observer: WorkerObserver = NO_OBSERVER,
) -> tuple[TokenSource, Closer]:
    """The account's permanent token, or its OAuth token shared through `redis` under the
    fingerprint of its credentials (so two accounts never share a token)."""
    token = secret_value(account.access_token)
    if token is not None:
        return PermanentToken(token), _nothing_to_close
    assert account.client_id is not None
    assert account.client_secret is not None
    source = OAuthTokenSource(
        settings.catapush_url,
        account.client_id,
        account.client_secret.get_secret_value(),
        timeout_s=settings.http_timeout_s,
        user_agent=USER_AGENT,
    )
    cache = SharedTokenCache(
        redis,
        Keys(settings.namespace),
        source,
        fingerprint=source.fingerprint,
        observer=observer,
    )
    return cache, source.aclose
