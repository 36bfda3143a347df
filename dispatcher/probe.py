"""A worker's own HTTP endpoint: `/healthz` and `/readyz` for Kubernetes, `/metrics`.

Served on the worker's event loop, so any answer proves the loop is not stuck. `/healthz`
(liveness) says no more than that: a Redis outage must not get every pod restarted, since a
worker waits Redis out by itself. `/readyz` (readiness) also requires that nothing keeps the
worker from working (Redis answering, credentials accepted) and a recent heartbeat.
`/metrics` is prometheus-client's exposition of this process's own registry.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dispatcher.consumer import HEARTBEAT_INTERVAL_S, Consumer
from dispatcher.workermetrics import OUTCOMES, ConsumerCollector, WorkerMetrics

__all__ = ["OUTCOMES", "STALE_BEAT_S", "beat_age_s", "render_metrics", "start_probe"]

# Three missed beats and the worker reports itself unhealthy.
STALE_BEAT_S = 3 * HEARTBEAT_INTERVAL_S + 1

_CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer", Consumer)
_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


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
    body, content_type = render_metrics(request.app[_REGISTRY], request.headers.get("Accept"))
    return web.Response(
        body=body,
        headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"},
    )


async def start_probe(
    consumer: Consumer, host: str, port: int, *, metrics: WorkerMetrics | None = None
) -> web.AppRunner:
    """Serve /healthz, /readyz and /metrics on this loop; the caller cleans the runner up.

    `metrics` is the observer the process's token cache, rate limiter and consumer report
    to; without one, their instruments are exposed at zero."""
    app = web.Application()
    app[_CONSUMER] = consumer
    app[_REGISTRY] = worker_registry(consumer, metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
