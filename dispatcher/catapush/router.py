"""Which account sends an app's messages: mobileAppId -> (token source, limiter, client).

One route per account, made on the worker's event loop: each account has its own shared
token (cached under the fingerprint of its own credentials), its own rate limit in Redis and
its own client (and so its own HTTP connections), over the one Redis pool of the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from dispatcher.catapush.accounts import Account, Accounts
from dispatcher.catapush.connect import open_account_tokens
from dispatcher.client import CatapushClient, SessionFactory, default_session
from dispatcher.errors import IntentRefused
from dispatcher.ratelimit import DEFAULT_MAX_WAIT_S, SharedRateLimiter
from dispatcher.settings import Settings
from dispatcher.store.keys import Keys
from dispatcher.tokens import TokenSource
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver


@dataclass(frozen=True, slots=True)
class Route:
    account: Account
    tokens: TokenSource
    limiter: SharedRateLimiter
    client: CatapushClient


class AccountRouter:
    """`route(message)` gives the client and limiter its app's account sends with."""

    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        redis: aioredis.Redis,
        *,
        session_factory: SessionFactory = default_session,
        limiter_options: dict[str, Any] | None = None,
        observer: WorkerObserver = NO_OBSERVER,
    ) -> None:
        self._accounts = accounts
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._routes: dict[str, Route] = {}
        keys = Keys(settings.namespace)
        for account in accounts.accounts:
            tokens, close_tokens = open_account_tokens(settings, account, redis, observer=observer)
            client = CatapushClient(
                settings.catapush_url,
                tokens=tokens,
                timeout_s=settings.http_timeout_s,
                session_factory=session_factory,
            )
            limiter = SharedRateLimiter(
                redis,
                keys,
                rate_per_s=account.rate_limit,
                burst=account.rate_burst,
                max_wait_s=DEFAULT_MAX_WAIT_S,
                account=account.rate_scope,
                observer=observer,
                bulk_share=settings.bulk_share,
                **(limiter_options or {}),
            )
            self._routes[account.name] = Route(account, tokens, limiter, client)
            self._closers.extend([client.aclose, close_tokens])

    def for_app(self, app_id: int | None) -> Route | None:
        account = self._accounts.for_app(app_id)
        return None if account is None else self._routes[account.name]

    @property
    def default(self) -> Route:
        """The default app's route (or the first account's): what a start-up check uses."""
        return self.for_app(None) or self._routes[self._accounts.accounts[0].name]

    def route(self, app_id: int) -> tuple[CatapushClient, SharedRateLimiter]:
        """The client and limiter for a message to app `app_id`; `IntentRefused` when no
        account sends for it, which no retry can change."""
        found = self.for_app(app_id)
        if found is None:
            raise IntentRefused(
                [f"mobileAppId: no account of the accounts file sends for app {app_id}"]
            )
        return found.client, found.limiter

    async def aclose(self) -> None:
        for close in self._closers:
            await close()
        self._closers.clear()
