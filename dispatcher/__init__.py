"""catapush-dispatcher: push notifications through Catapush for any number of services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dispatcher.intents import Intent
    from dispatcher.settings import Settings

__all__ = ["__version__", "enqueue"]


def enqueue(intent: Intent | Mapping[str, Any], *, settings: Settings | None = None) -> str:
    """Validate an intent and put it on the queue; returns its id.

    Raises `dispatcher.errors.IntentRefused` (naming each bad field) for an invalid intent.
    Reads the `DISPATCHER_*` settings when none are given.
    """
    # Imported on use so that `import dispatcher` stays light for the CLI and the sandbox.
    from dispatcher.producer import enqueue as _enqueue

    return _enqueue(intent, settings=settings)
