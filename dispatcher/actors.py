"""The dramatiq actor that delivers intents, and the per-process resources it uses.

The actor is synchronous and thin: each dramatiq worker thread hands the attempt to the
process's event loop, where one HTTP client and one Redis client serve every in-flight
send. Retries are new messages with a delay, carrying the attempt number, so dramatiq's own
retry machinery (which dead-letters into a set that expires) is not involved.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import dramatiq
import httpx
import orjson
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread

from dispatcher.backoff import backoff_delay_ms
from dispatcher.broker import DELIVER_ACTOR, POISON_KWARG
from dispatcher.client import USER_AGENT, CatapushClient
from dispatcher.deadletters import AsyncDeadLetters
from dispatcher.delivery import Deliverer, Reschedule
from dispatcher.keys import Keys
from dispatcher.logs import get_logger
from dispatcher.producer import Producer
from dispatcher.ratelimit import DEFAULT_MAX_WAIT_S, SharedRateLimiter
from dispatcher.receipts import Receipts
from dispatcher.settings import Settings
from dispatcher.tokens import (
    OAuthTokenSource,
    PermanentTokenAuth,
    SharedTokenAuth,
    SharedTokenCache,
)

# A claim must outlive the slowest send it guards: the HTTP timeout twice (a 401 resends),
# plus a margin.
CLAIM_MARGIN_MS = 5_000

log = get_logger(__name__)


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
            limiter=SharedRateLimiter(
                redis,
                keys,
                rate_per_s=settings.rate_limit,
                burst=settings.rate_burst,
                max_wait_s=DEFAULT_MAX_WAIT_S,
            ),
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

    def run(make: Callable[[Deliverer], Coroutine[Any, Any, Any]]) -> Any:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware has not started the event loop")

        async def on_loop() -> Any:
            return await make(resources.deliverer())

        return loop_thread.run_coroutine(on_loop())

    def deliver(*args: Any, **kwargs: Any) -> None:
        poison = kwargs.get(POISON_KWARG)
        if isinstance(poison, dict):
            run(lambda d: d.bury_unreadable(str(poison.get("raw")), str(poison.get("problem"))))
            return
        if len(args) != 1:
            raw = orjson.dumps({"args": list(args), "kwargs": kwargs}, default=str).decode()
            problem = f"args: expected one argument, the intent; got {len(args)}"
            run(lambda d: d.bury_unreadable(raw, problem))
            return
        intent = args[0]
        attempt = kwargs.get("attempt", 1)
        if not isinstance(attempt, int) or attempt < 1:
            attempt = 1
        try:
            result = run(lambda d: d.attempt(intent, attempt))
        except Exception as exc:
            # A bug or an outage (Redis gone) must not lose the intent: count it as a failed
            # attempt and try again later, and dead-letter it once the attempts are spent.
            error = repr(exc)
            log.exception("delivery.crashed", attempt=attempt, error=error)
            if attempt >= settings.max_attempts:
                run(lambda d: d.bury_exhausted(intent, attempt, error))
            else:
                delay = backoff_delay_ms(attempt, settings.backoff_min_ms, settings.backoff_max_ms)
                requeue.requeue(intent, attempt=attempt + 1, delay_ms=delay)
            return
        if isinstance(result, Reschedule):
            requeue.requeue(result.intent, attempt=result.attempt, delay_ms=result.delay_ms)

    declare = dramatiq.actor(broker=broker, actor_name=DELIVER_ACTOR, queue_name=settings.queue)
    actor: dramatiq.Actor[Any, None] = declare(deliver)
    return actor
