"""The dramatiq Redis broker, namespaced by `DISPATCHER_NAMESPACE`."""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

DELIVER_ACTOR = "deliver"

# A message is redelivered once its worker's heartbeat is this old (dramatiq's default is
# 60 s, and its sweep runs rarely: recovery took minutes).
DEFAULT_HEARTBEAT_TIMEOUT_MS = 15_000
# Out of a million broker commands, how many also sweep for dead workers' messages.
DEFAULT_MAINTENANCE_CHANCE = 20_000
# Sends are bounded by the HTTP timeout; this only catches a wedged actor.
DEFAULT_TIME_LIMIT_MS = 5 * 60_000


def build_broker(
    redis_url: str,
    namespace: str,
    *,
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
    maintenance_chance: int = DEFAULT_MAINTENANCE_CHANCE,
    extra_middleware: list[Any] | None = None,
) -> RedisBroker:
    """A broker without dramatiq's Retries: the dispatcher schedules its own retries."""
    middleware: list[Any] = [
        AgeLimit(),
        TimeLimit(time_limit=DEFAULT_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        CurrentMessage(),
        AsyncIO(),
        # After-hooks run last to first, so these see the event loop still running.
        *(extra_middleware or []),
    ]
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url,
        namespace=namespace,
        middleware=middleware,
        heartbeat_timeout=heartbeat_timeout_ms,
        maintenance_chance=maintenance_chance,
    )
