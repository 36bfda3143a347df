"""Intake for Python producers: validate intents, then put them on the queue.

Messages are written exactly as dramatiq's Redis broker writes them (body in
`<ns>:<queue>.msgs`, id pushed onto `<ns>:<queue>`), so dramatiq producers and this one are
interchangeable. Many intents go in one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from dispatcher.intents import Intent, parse_intent
from dispatcher.logs import get_logger
from dispatcher.messages import outgoing
from dispatcher.render import Templates, check_template
from dispatcher.settings import Settings, load_settings
from dispatcher.templates import load_templates

log = get_logger(__name__)


class Producer:
    """Enqueues intents on one Redis and queue; safe to share between threads."""

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        queue_name: str,
        *,
        templates: Templates | None = None,
        timeout_s: float | None = None,
    ) -> None:
        # A timeout turns a hung Redis into an error instead of a wait without end.
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._queue_name = queue_name
        self._namespace = namespace
        self._templates = templates

    @classmethod
    def from_settings(cls, settings: Settings) -> Producer:
        """Raises `ConfigurationError` if `DISPATCHER_TEMPLATES_DIR` cannot be loaded."""
        return cls(
            settings.redis_url,
            settings.namespace,
            settings.queue,
            templates=load_templates(settings.templates_dir),
        )

    def enqueue(self, intent: Intent | Mapping[str, Any]) -> str:
        """Validate and enqueue; returns the intent id. Raises `IntentRefused` if invalid."""
        [intent_id] = self.enqueue_many([intent])
        return intent_id

    def check(self, intent: Intent) -> Intent:
        """The intent, once its template (if any) renders; raises `IntentRefused` if not."""
        if self._templates is not None:
            check_template(intent, self._templates, now_ms=time.time_ns() // 1_000_000)
        return intent

    def enqueue_many(
        self, intents: Iterable[Intent | Mapping[str, Any]], *, checked: bool = False
    ) -> list[str]:
        """Validate every intent, then enqueue them all in one round trip; returns the ids.

        Raises `IntentRefused` for the first invalid one, before anything is enqueued.
        `checked` says the intents already went through `check`.
        """
        now_ms = time.time_ns() // 1_000_000
        ready = []
        for intent in intents:
            model = intent if isinstance(intent, Intent) else parse_intent(dict(intent))
            ready.append((model if checked else self.check(model)).with_defaults(now_ms=now_ms))
        self._push([(intent.to_wire(), 1, 0) for intent in ready])
        ids = [intent.id for intent in ready if intent.id is not None]
        log.debug("intent.enqueued", count=len(ids))
        return ids

    def requeue(self, intent: Mapping[str, Any], *, attempt: int, delay_ms: int) -> None:
        """Put an already checked intent back on the queue, to run after `delay_ms`."""
        self._push([(dict(intent), attempt, delay_ms)])

    def _push(self, items: list[tuple[dict[str, Any], int, int]]) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            for intent, attempt, delay_ms in items:
                message = outgoing(self._queue_name, intent, attempt=attempt, delay_ms=delay_ms)
                key = f"{self._namespace}:{message.queue_name}"
                pipe.hset(f"{key}.msgs", message.message_id, message.body)
                pipe.rpush(key, message.message_id)
            pipe.execute()

    def close(self) -> None:
        self._redis.close()


_producers: dict[tuple[str, str, str], Producer] = {}


def enqueue(intent: Intent | Mapping[str, Any], *, settings: Settings | None = None) -> str:
    """Validate an intent and put it on the queue; returns its id.

    Reads the `DISPATCHER_*` settings when none are given. Producers are kept per Redis URL,
    namespace and queue, so calling this in a loop reuses one connection pool.
    """
    chosen = settings if settings is not None else load_settings()
    key = (chosen.redis_url, chosen.namespace, chosen.queue)
    producer = _producers.get(key)
    if producer is None:
        producer = _producers[key] = Producer.from_settings(chosen)
    return producer.enqueue(intent)
