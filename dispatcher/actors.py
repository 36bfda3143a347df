"""The dramatiq actor that delivers intents, and the per-process resources it uses.

The actor is synchronous and thin: each dramatiq worker thread hands the attempt to the
process's event loop, where one HTTP client and one Redis client serve every in-flight
send. Retries are new messages with a delay, carrying the attempt number, so dramatiq's own
retry machinery (which dead-letters into a set that expires) is not involved.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import httpx
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread

from dispatcher.broker import DELIVER_ACTOR
from dispatcher.client import USER_AGENT, CatapushClient
from dispatcher.deadletters import AsyncDeadLetters
from dispatcher.delivery import Deliverer, NoLimit, Reschedule
from dispatcher.keys import Keys
from dispatcher.producer import Producer
from dispatcher.receipts import Receipts
from dispatcher.settings import Settings
from dispatcher.tokens import (
    OAuthTokenSource,
    PermanentTokenAuth,
    SharedTokenAuth,
    SharedTokenCache,
)

# A claim must outlive the slowest send it guards: the HTTP timeout, twice (a 401 resends).
CLAIM_MARGIN_MS = 5_000


class WorkerResources:
    """Clients for one worker process, created on its event loop at first use."""

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._deliverer: Deliverer | None = None
        self._closers: list[Any] = []

    def deliverer(self) -> Deliverer:
        # Called on the event loop thread only, so no lock is needed.
        if self._deliverer is None:
            self._deliverer = self._build()
        return self._deliverer

    def _build(self) -> Deliverer:
        settings = self._settings
        keys = Keys(settings.namespace)
        redis = aioredis.Redis.from_url(settings.redis_url)
        auth: httpx.Auth
        if (
            settings.catapush_access_token is not None
            and settings.catapush_access_token.get_secret_value()
        ):
            auth = PermanentTokenAuth(settings.catapush_access_token.get_secret_value())
        else:
            # require_credentials() ran at start-up, so both are set here.
            assert settings.catapush_client_id is not None
            assert settings.catapush_client_secret is not None
            source = OAuthTokenSource(
                settings.catapush_url,
                settings.catapush_client_id,
                settings.catapush_client_secret.get_secret_value(),
                timeout_s=settings.http_timeout_s,
                user_agent=USER_AGENT,
            )
            self._closers.append(source.aclose)
            auth = SharedTokenAuth(SharedTokenCache(redis, keys, source))
        client = CatapushClient(
            settings.catapush_url,
            auth=auth,
            timeout_s=settings.http_timeout_s,
            transport=self._transport,
        )
        self._closers.extend([client.aclose, redis.aclose])
        return Deliverer(
            sender=client,
            receipts=Receipts(
                redis,
                keys,
                claim_ttl_ms=int(settings.http_timeout_s * 2000) + CLAIM_MARGIN_MS,
            ),
            dead_letters=AsyncDeadLetters(redis, keys),
            limiter=NoLimit(),
            max_attempts=settings.max_attempts,
            backoff_min_ms=settings.backoff_min_ms,
            backoff_max_ms=settings.backoff_max_ms,
            default_mobile_app_id=settings.catapush_mobile_app_id,
            notify_callback_url=str(settings.callback_url) if settings.callback_url else None,
        )

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()
        self._deliverer = None


def declare_deliver_actor(
    broker: dramatiq.Broker, settings: Settings, resources: WorkerResources
) -> dramatiq.Actor[Any, None]:
    requeue = Producer(settings.redis_url, settings.namespace, settings.queue)

    def deliver(*args: Any, **kwargs: Any) -> None:
        intent = args[0] if len(args) == 1 else {"args": list(args)}
        attempt = kwargs.get("attempt", 1)
        if not isinstance(attempt, int) or attempt < 1:
            attempt = 1
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware starts the event loop"

        async def run() -> Any:
            return await resources.deliverer().attempt(intent, attempt)

        result = loop_thread.run_coroutine(run())
        if isinstance(result, Reschedule):
            requeue.requeue(result.intent, attempt=result.attempt, delay_ms=result.delay_ms)

    declare = dramatiq.actor(broker=broker, actor_name=DELIVER_ACTOR, queue_name=settings.queue)
    actor: dramatiq.Actor[Any, None] = declare(deliver)
    return actor
