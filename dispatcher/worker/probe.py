"""A worker's own HTTP endpoint: `/healthz` and `/readyz` for Kubernetes, `/metrics`.

Served on the worker's event loop, so any answer proves the loop is not stuck. `/healthz`
(liveness) says no more than that: a Redis outage must not get every pod restarted, since a
worker waits Redis out by itself. `/readyz` (readiness) also requires that nothing keeps the
worker from working (Redis answering, credentials accepted) and a recent heartbeat.
`/metrics` is prometheus-client's exposition of this process's own registry, with the queue
overview (`dispatcher.store.overview`) read from Redis at most every `OVERVIEW_MAX_AGE_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError

from dispatcher.store.overview import Overview
from dispatcher.worker.consumer import HEARTBEAT_INTERVAL_S, Consumer
from dispatcher.worker.metrics import (
    OUTCOMES,
    ConsumerCollector,
    OverviewCollector,
    WorkerMetrics,
)

__all__ = ["OUTCOMES", "STALE_BEAT_S", "beat_age_s", "render_metrics", "start_probe"]

# Three missed beats and the worker reports itself unhealthy.
STALE_BEAT_S = 3 * HEARTBEAT_INTERVAL_S + 1

_CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer", Consumer)
_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)

# Every process of a fleet reports the same overview: scrapes in a row reuse one reading.
OVERVIEW_MAX_AGE_S = 10.0
OVERVIEW_TIMEOUT_S = 5.0

OverviewReader = Callable[[], Awaitable[Overview]]


class OverviewSource:
    """Keeps the overview collector's reading fresh enough for a scrape."""

    def __init__(self, read: OverviewReader, collector: OverviewCollector) -> None:
        self._read = read
        self._collector = collector
        self._read_at: float | None = None

    async def refresh(self) -> None:
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < OVERVIEW_MAX_AGE_S:
            return
        try:
            self._collector.overview = await asyncio.wait_for(self._read(), OVERVIEW_TIMEOUT_S)
        except (RedisError, TimeoutError):
            self._collector.overview = None
            return
        self._read_at = now


_OVERVIEW: web.AppKey[OverviewSource] = web.AppKey("overview", OverviewSource)


def beat_age_s(consumer: Consumer) -> float | None:
    last = consumer.stats.last_beat
    return None if last is None else time.monotonic() - last


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _readyz(request: web.Request) -> web.Response:
    consumer = request.app[_CONSUMER]
    age = beat_age_s(consumer)
    problems = consumer.health.problems()
    if age is None or age > STALE_BEAT_S:
        problems.setdefault("heartbeat", "no heartbeat taken by Redis lately")
    shown_age = None if age is None else round(age, 3)
    if problems:
        return web.json_response(
            {"ok": False, "problems": problems, "heartbeat_age_s": shown_age}, status=503
        )
    return web.json_response({"ok": True, "heartbeat_age_s": shown_age})


def worker_registry(consumer: Consumer, metrics: WorkerMetrics | None = None) -> CollectorRegistry:
    """The process's registry: the consumer's counters and the observer's instruments."""
    registry = (metrics or WorkerMetrics()).registry
    registry.register(ConsumerCollector(consumer))
    return registry


def render_metrics(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition in the format the scraper asked for, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


async def _metrics(request: web.Request) -> web.Response:
    source = request.app.get(_OVERVIEW)
    if source is not None:
        await source.refresh()
    body, content_type = render_metrics(request.app[_REGISTRY], request.headers.get("Accept"))
    return web.Response(
        body=body,
        headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"},
    )


async def start_probe(
    consumer: Consumer,
    host: str,
    port: int,
    *,
    metrics: WorkerMetrics | None = None,
    overview: OverviewReader | None = None,
) -> web.AppRunner:
    """Serve /healthz, /readyz and /metrics on this loop; the caller cleans the runner up.

    `metrics` is the observer the process's token cache, rate limiter and consumer report
    to; without one, their instruments are exposed at zero."""
    app = web.Application()
    app[_CONSUMER] = consumer
    app[_REGISTRY] = registry = worker_registry(consumer, metrics)
    if overview is not None:
        collector = OverviewCollector()
        registry.register(collector)
        app[_OVERVIEW] = OverviewSource(overview, collector)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
