"""catapush-dispatcher: push notifications through Catapush for any number of services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.errors import (
    ConfigurationError,
    DispatcherError,
    IntentRefused,
    RedisRefused,
    RedisUnavailable,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dispatcher.intents import Intent
    from dispatcher.settings import Settings

__all__ = [
    "ConfigurationError",
    "DispatcherError",
    "IntentRefused",
    "RedisRefused",
    "RedisUnavailable",
    "__version__",
    "enqueue",
]


def enqueue(intent: Intent | Mapping[str, Any], *, settings: Settings | None = None) -> str:
    """Validate an intent and put it on the queue; returns its id.

    Raises `IntentRefused` (naming each bad field) for an invalid intent, `RedisUnavailable`
    when Redis does not answer within `DISPATCHER_REDIS_SOCKET_TIMEOUT_S`, and `RedisRefused`
    (a `ConfigurationError`) when it turns `DISPATCHER_REDIS_URL` away. Reads the
    `DISPATCHER_*` settings when none are given.
    """
    # Imported on use so that `import dispatcher` stays light for the CLI and the sandbox.
    from dispatcher.producer import enqueue as _enqueue

    return _enqueue(intent, settings=settings)
