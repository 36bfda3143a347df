"""A worker's own HTTP endpoint: `/healthz` and `/readyz` for Kubernetes, `/metrics`.

Served on the worker's event loop, so any answer proves the loop is not stuck. `/healthz`
(liveness) says no more than that: a Redis outage must not get every pod restarted, since a
worker waits Redis out by itself. `/readyz` (readiness) also requires that nothing keeps the
worker from working (Redis answering, credentials accepted) and a recent heartbeat.
"""

from __future__ import annotations

import time

from aiohttp import web

from dispatcher.consumer import HEARTBEAT_INTERVAL_S, Consumer
from dispatcher.deadletters import REASONS
from dispatcher.exposition import family, label

# Three missed beats and the worker reports itself unhealthy.
STALE_BEAT_S = 3 * HEARTBEAT_INTERVAL_S + 1
OUTCOMES = ("sent", "skipped", "retried", "deferred", "dead_lettered", "crashed")

_CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer", Consumer)


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


def render_metrics(consumer: Consumer) -> str:
    stats = consumer.stats
    lines = family(
        "dispatcher_deliveries_total",
        "counter",
        "Delivery attempts of this worker process, by outcome.",
        [(label("outcome", outcome), stats.outcomes[outcome]) for outcome in OUTCOMES],
    )
    lines += family(
        "dispatcher_dead_lettered_total",
        "counter",
        "Intents this worker process dead-lettered, by reason.",
        [(label("reason", reason), stats.dead_letters[reason]) for reason in REASONS],
    )
    lines += family(
        "dispatcher_worker_ready",
        "gauge",
        "1 when nothing keeps this worker process from working, else 0.",
        [("", 1 if consumer.health.ready else 0)],
    )
    lines += family(
        "dispatcher_sends_in_flight",
        "gauge",
        "Messages this worker process holds and is working on.",
        [("", consumer.in_flight)],
    )
    age = beat_age_s(consumer)
    lines += family(
        "dispatcher_heartbeat_age_seconds",
        "gauge",
        "Seconds since Redis last took this worker's heartbeat.",
        [] if age is None else [("", round(age, 3))],
    )
    return "\n".join(lines) + "\n"


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=render_metrics(request.app[_CONSUMER]),
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def start_probe(consumer: Consumer, host: str, port: int) -> web.AppRunner:
    """Serve /healthz and /metrics on this loop; the caller cleans the runner up."""
    app = web.Application()
    app[_CONSUMER] = consumer
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
