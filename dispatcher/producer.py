"""Intake for Python producers: validate intents, then put them on the queue.

Messages are written exactly as dramatiq's Redis broker writes them (body in
`<ns>:<queue>.msgs`, id pushed onto `<ns>:<queue>`), so dramatiq producers and this one are
interchangeable. Many intents go in one round trip. Each intent goes on the queue of its
lane (`dispatcher.lanes`): transactional on the configured queue, bulk on `<queue>.bulk`.
An intent with a `sendAt` still ahead waits on its lane's schedule (`<queue>.SQ`) instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from dispatcher.admission import Limits, admit
from dispatcher.intents import Intent, check_size, parse_intent
from dispatcher.lanes import lane_of, lane_queue
from dispatcher.logs import get_logger
from dispatcher.messages import now_ms, outgoing
from dispatcher.render import Templates, check_template
from dispatcher.settings import (
    DEFAULT_REDIS_CONNECT_TIMEOUT_S,
    DEFAULT_REDIS_SOCKET_TIMEOUT_S,
    Settings,
    load_settings,
)
from dispatcher.store.connection import RedisTarget, sync_redis_for, translate_target
from dispatcher.store.keys import Keys
from dispatcher.store.queue import schedule_commands
from dispatcher.templates import load_templates

log = get_logger(__name__)


class Producer:
    """Enqueues intents on one Redis and queue; safe to share between threads.

    A Redis failure raises `RedisUnavailable` (no answer within the timeouts) or
    `RedisRefused` (the URL's password, user or database was turned away).
    """

    def __init__(
        self,
        redis_url: str,
        namespace: str,
        queue_name: str,
        *,
        templates: Templates | None = None,
        connect_timeout_s: float = DEFAULT_REDIS_CONNECT_TIMEOUT_S,
        socket_timeout_s: float = DEFAULT_REDIS_SOCKET_TIMEOUT_S,
        target: RedisTarget | None = None,
        limits: Limits | None = None,
    ) -> None:
        # `target` carries TLS files and sentinels when the settings have them.
        if target is None:
            target = RedisTarget(
                redis_url, connect_timeout_s=connect_timeout_s, socket_timeout_s=socket_timeout_s
            )
        self._redis = sync_redis_for(target)
        self._target = target
        self._queue_name = queue_name
        self._namespace = namespace
        self._templates = templates
        self._keys = Keys(namespace)
        self._limits = limits if limits is not None else Limits()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, templates: Templates | None = None, check_templates: bool = True
    ) -> Producer:
        """A producer on the settings' Redis, queue and timeouts.

        Intents naming a template are checked against `templates`, else against
        `DISPATCHER_TEMPLATES_DIR`, loaded here (raises `ConfigurationError` if it cannot
        be); `check_templates=False` skips that, for intents that were checked before.
        """
        if templates is None and check_templates:
            templates = load_templates(settings.templates_dir)
        return cls(
            settings.redis_url,
            settings.namespace,
            settings.queue,
            templates=templates,
            connect_timeout_s=settings.redis_connect_timeout_s,
            socket_timeout_s=settings.redis_socket_timeout_s,
            target=RedisTarget.of(settings),
            limits=settings.limits,
        )

    def enqueue(self, intent: Intent | Mapping[str, Any]) -> str:
        """Validate and enqueue; returns the intent id. Raises `IntentRefused` if invalid."""
        [intent_id] = self.enqueue_many([intent])
        return intent_id

    def check(self, intent: Intent) -> Intent:
        """The intent, once it fits `MAX_INTENT_BYTES` and the limits (recipients, how far
        ahead it is scheduled), and its template (if any) renders; raises `IntentRefused`
        if not."""
        now = now_ms()
        admit(intent, self._limits, now_ms=now)
        check_size(intent)
        if self._templates is not None:
            check_template(intent, self._templates, now_ms=now)
        return intent

    def enqueue_many(
        self, intents: Iterable[Intent | Mapping[str, Any]], *, checked: bool = False
    ) -> list[str]:
        """Validate every intent, then enqueue them all in one round trip; returns the ids.

        Raises `IntentRefused` for the first invalid one, before anything is enqueued.
        `checked` says the intents already went through `check`.
        """
        now = now_ms()
        ready = []
        for intent in intents:
            model = intent if isinstance(intent, Intent) else parse_intent(dict(intent))
            ready.append((model if checked else self.check(model)).with_defaults(now_ms=now))
        self._push([(intent.to_wire(), 1, 0) for intent in ready])
        ids = [intent.id for intent in ready if intent.id is not None]
        log.debug("intent.enqueued", count=len(ids))
        return ids

    def requeue(self, intent: Mapping[str, Any], *, attempt: int, delay_ms: int) -> None:
        """Put an already checked intent back on the queue, to run after `delay_ms`."""
        self._push([(dict(intent), attempt, delay_ms)])

    def _push(self, items: list[tuple[dict[str, Any], int, int]]) -> None:
        now = now_ms()
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for intent, attempt, delay_ms in items:
                    queue_name = lane_queue(self._queue_name, lane_of(intent))
                    send_at = intent.get("sendAt")
                    if isinstance(send_at, int) and send_at > now + delay_ms:
                        schedule_commands(
                            pipe,
                            self._keys,
                            queue_name,
                            str(intent["id"]),
                            intent,
                            send_at_ms=send_at,
                            attempt=attempt,
                        )
                        continue
                    message = outgoing(queue_name, intent, attempt=attempt, delay_ms=delay_ms)
                    key = f"{self._namespace}:{message.queue_name}"
                    pipe.hset(f"{key}.msgs", message.message_id, message.body)
                    pipe.rpush(key, message.message_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise translate_target(exc, self._target) from exc

    def close(self) -> None:
        self._redis.close()


_producers: dict[tuple[RedisTarget, str, str], Producer] = {}


def enqueue(intent: Intent | Mapping[str, Any], *, settings: Settings | None = None) -> str:
    """Validate an intent and put it on the queue; returns its id.

    Reads the `DISPATCHER_*` settings when none are given. Producers are kept per Redis
    target (URL, timeouts, TLS files, sentinels), namespace and queue, so calling this in a
    loop reuses one connection pool. Raises
    `IntentRefused`, `RedisUnavailable` or `RedisRefused`.
    """
    chosen = settings if settings is not None else load_settings()
    key = (RedisTarget.of(chosen), chosen.namespace, chosen.queue)
    producer = _producers.get(key)
    if producer is None:
        producer = _producers[key] = Producer.from_settings(chosen)
    return producer.enqueue(intent)
