"""Intake for Python producers: validate an intent, then put it on the dramatiq queue."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dramatiq

from dispatcher.broker import DELIVER_ACTOR, build_broker
from dispatcher.intents import Intent, parse_intent
from dispatcher.logs import get_logger
from dispatcher.settings import Settings, load_settings

log = get_logger(__name__)


def build_message(
    queue_name: str, intent: Mapping[str, Any], attempt: int = 1
) -> dramatiq.Message[Any]:
    """The dramatiq message that carries an intent (the format raw producers write too)."""
    kwargs = {} if attempt == 1 else {"attempt": attempt}
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=DELIVER_ACTOR,
        args=(dict(intent),),
        kwargs=kwargs,
        options={},
    )


class Producer:
    """Enqueues intents on one Redis and queue; safe to share between threads."""

    def __init__(self, redis_url: str, namespace: str, queue_name: str) -> None:
        self._broker = build_broker(redis_url, namespace)
        self._queue_name = queue_name
        self._broker.declare_queue(queue_name)

    @classmethod
    def from_settings(cls, settings: Settings) -> Producer:
        return cls(settings.redis_url, settings.namespace, settings.queue)

    def enqueue(self, intent: Intent | Mapping[str, Any]) -> str:
        """Validate and enqueue; returns the intent id. Raises `IntentRefused` if invalid."""
        checked = intent if isinstance(intent, Intent) else parse_intent(dict(intent))
        ready = checked.with_defaults(now_ms=time.time_ns() // 1_000_000)
        self._broker.enqueue(build_message(self._queue_name, ready.to_wire()))
        log.debug("intent.enqueued", intent_id=ready.id)
        assert ready.id is not None
        return ready.id

    def requeue(self, intent: Mapping[str, Any], *, attempt: int, delay_ms: int) -> None:
        """Put an already checked intent back on the queue, to run after `delay_ms`."""
        self._broker.enqueue(
            build_message(self._queue_name, intent, attempt),
            delay=delay_ms if delay_ms > 0 else None,
        )

    def close(self) -> None:
        self._broker.close()


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
