"""Hooks through which the worker's parts report what the metrics count.

The token cache, the rate limiter and the consumer take an observer and call it; the default
does nothing, so a part built without metrics (a test, the benchmark) pays nothing. The
worker's probe passes a `WorkerMetrics` (`dispatcher.worker.metrics`), which counts them in
Prometheus instruments.
"""

from __future__ import annotations

from typing import Protocol


class WorkerObserver(Protocol):
    def accepted(self, waited_s: float) -> None:
        """Catapush accepted an intent `waited_s` seconds after it was enqueued."""

    def token_refreshed(self, *, ok: bool) -> None:
        """A fetch of a new OAuth token ended, with a token (`ok`) or without one."""

    def rate_limit_waited(self, seconds: float) -> None:
        """A send waited `seconds` for a slot of the shared rate limit."""


class NoObserver:
    """Counts nothing."""

    def accepted(self, waited_s: float) -> None:
        return None

    def token_refreshed(self, *, ok: bool) -> None:
        return None

    def rate_limit_waited(self, seconds: float) -> None:
        return None


NO_OBSERVER: WorkerObserver = NoObserver()


def enqueue_to_accepted_s(message_timestamp_ms: int, now_ms: int) -> float:
    """Seconds between a message's `message_timestamp` (dramatiq's envelope, or an intent's
    `createdAt`) and now; never negative, as clocks of two hosts may disagree."""
    return max(0.0, (now_ms - message_timestamp_ms) / 1000)
