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
    from pathlib import Path

    from dispatcher.catapush.importer import ImportReport
    from dispatcher.intents import Intent
    from dispatcher.settings import Settings
    from dispatcher.store.cancels import Cancellation

__all__ = [
    "ConfigurationError",
    "DispatcherError",
    "IntentRefused",
    "RedisRefused",
    "RedisUnavailable",
    "__version__",
    "cancel",
    "enqueue",
    "import_users",
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


def cancel(intent_id: str, *, settings: Settings | None = None) -> Cancellation:
    """Stop an intent that has not gone out (queued, scheduled, retrying, or the unsent parts
    of a split one); it is then never sent and `dispatcher status` says `cancelled`.

    The answer's `state` is `cancelled`, `sent` (it went out before; nothing was stopped) or
    `sending` (a worker was sending it at that moment); `describe()` says it in a line. An
    id not enqueued yet is cancelled too: if it comes later it is not sent. Raises
    `RedisUnavailable` or `RedisRefused` as `enqueue` does.
    """
    from dispatcher.settings import load_settings
    from dispatcher.store.cancels import cancel_intents

    [answer] = cancel_intents([intent_id], settings or load_settings())
    return answer


def import_users(
    path: str | Path,
    *,
    app_id: int | None = None,
    account: str | None = None,
    settings: Settings | None = None,
    concurrency: int = 32,
) -> ImportReport:
    """Create the users of a file (CSV `identifier,password` or JSON lines) in a Catapush app,
    under the account's shared rate limit, as `dispatcher users import` does.

    Users that exist are skipped (`report.skipped`), so an interrupted import is resumed by
    running it again. Rows that failed are in `report.failed` (`row`, `field`, `reason`).
    Raises `ConfigurationError` for a file that cannot be read or a missing app id. Reads
    the `DISPATCHER_*` settings when none are given.
    """
    from dispatcher.catapush.operations import import_users_file
    from dispatcher.settings import load_settings

    return import_users_file(
        path,
        settings=settings or load_settings(),
        app_id=app_id,
        account=account,
        concurrency=concurrency,
    )
