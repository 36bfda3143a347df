"""The clients one worker process uses, made on its event loop: one Redis client and one
HTTP client serve every send in flight."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from dispatcher.backoff import RetryPolicy
from dispatcher.catapush.accounts import accounts_from
from dispatcher.catapush.connect import open_account_tokens
from dispatcher.catapush.router import AccountRouter
from dispatcher.client import CatapushClient, SessionFactory, default_session
from dispatcher.ratelimit import DEFAULT_MAX_WAIT_S, SharedRateLimiter
from dispatcher.settings import Settings
from dispatcher.store.cancels import CancelWatch
from dispatcher.store.connection import async_redis
from dispatcher.store.deadletters import AsyncDeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import Receipts
from dispatcher.templates import load_templates
from dispatcher.tokens import (
    TokenSource,
)
from dispatcher.worker.delivery import Deliverer
from dispatcher.worker.durable import Recorder
from dispatcher.worker.health import Health
from dispatcher.worker.metrics import WorkerMetrics
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver

# A claim must outlive the slowest send it guards: the HTTP timeout twice (a 401 resends),
# plus a margin.
CLAIM_MARGIN_MS = 5_000
# Connections for the consumer's own loops (fetch, acks, delay queue, heartbeat, limiter)
# on top of one per send in flight.
REDIS_SPARE_CONNECTIONS = 16


def open_token_source(
    settings: Settings, redis: aioredis.Redis, *, observer: WorkerObserver = NO_OBSERVER
) -> tuple[TokenSource, Callable[[], Awaitable[None]]]:
    """Where sends take their token from, and how to close it: the default app's account
    (the settings' single account unless an accounts file replaces it), its permanent token
    or its OAuth token shared through `redis` under the fingerprint of its credentials."""
    accounts = accounts_from(settings)
    account = accounts.for_app(None) or accounts.accounts[0]
    return open_account_tokens(settings, account, redis, observer=observer)


class WorkerResources:
    """Build with `open()` on the worker's event loop; `aclose()` when the worker stops."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int,
        session_factory: SessionFactory = default_session,
    ) -> None:
        self._settings = settings
        self._concurrency = concurrency
        self._session_factory = session_factory
        self._closers: list[Callable[[], Awaitable[None]]] = []
        # What keeps this process from working; the consumer and the probes read it.
        self.health = Health()
        self.recorder = Recorder(self.health)
        # The process's Prometheus instruments; the probe exposes them when it runs.
        self.metrics = WorkerMetrics()
        # The one retry policy: the deliverer and the consumer's crash path share it.
        self.retry = RetryPolicy(
            settings.max_attempts, settings.backoff_min_ms, settings.backoff_max_ms
        )
        self.tokens: TokenSource | None = None
        # The cancelled ids, for the worker to keep reading (`CancelWatch.run`).
        self.cancels: CancelWatch | None = None

    def open(self) -> tuple[aioredis.Redis, Deliverer]:
        settings = self._settings
        keys = Keys(settings.namespace)
        # A send holds at most one connection at a time, so this many can never run out;
        # a blocking pool would cost a timer per command to guard against that.
        redis = async_redis(settings, max_connections=self._concurrency + REDIS_SPARE_CONNECTIONS)
        self._closers.append(redis.aclose)
        sender: CatapushClient
        limiter: SharedRateLimiter
        route = None
        if settings.accounts_file is not None:
            # Each app's sends go with its account's token, limiter and client; the
            # default app's account stands for the worker in the credentials checks.
            router = AccountRouter(
                settings,
                accounts_from(settings),
                redis,
                session_factory=self._session_factory,
                observer=self.metrics,
            )
            self._closers.append(router.aclose)
            default = router.default
            self.tokens, sender, limiter = default.tokens, default.client, default.limiter
            route = router.route
        else:
            tokens, close_tokens = open_token_source(settings, redis, observer=self.metrics)
            self.tokens = tokens
            sender = CatapushClient(
                settings.catapush_url,
                tokens=tokens,
                timeout_s=settings.http_timeout_s,
                session_factory=self._session_factory,
            )
            self._closers.extend([close_tokens, sender.aclose])
            limiter = SharedRateLimiter(
                redis,
                keys,
                rate_per_s=settings.rate_limit,
                burst=settings.rate_burst,
                max_wait_s=DEFAULT_MAX_WAIT_S,
                observer=self.metrics,
                bulk_share=settings.bulk_share,
            )
        self.cancels = CancelWatch(redis, keys)
        deliverer = Deliverer(
            sender=sender,
            receipts=Receipts(
                redis,
                keys,
                claim_ttl_ms=int(settings.http_timeout_s * 2000) + CLAIM_MARGIN_MS,
                receipt_ttl_s=settings.receipt_ttl_s,
            ),
            dead_letters=AsyncDeadLetters(redis, keys),
            limiter=limiter,
            recorder=self.recorder,
            retry=self.retry,
            default_mobile_app_id=settings.catapush_mobile_app_id,
            notify_callback_url=str(settings.callback_url) if settings.callback_url else None,
            templates=load_templates(settings.templates_dir),
            route=route,
            limits=settings.limits,
            cancels=self.cancels,
        )
        return redis, deliverer

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()
