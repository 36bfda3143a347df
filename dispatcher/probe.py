"""A worker's own HTTP endpoint: `/healthz` for Kubernetes probes, `/metrics` for Prometheus.

Served on the worker's event loop, so an answer also proves the loop is not stuck; the
health check further requires a recent heartbeat, which proves Redis is reachable.
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
    age = beat_age_s(request.app[_CONSUMER])
    if age is None or age > STALE_BEAT_S:
        return web.json_response({"ok": False, "heartbeat_age_s": age}, status=503)
    return web.json_response({"ok": True, "heartbeat_age_s": round(age, 3)})


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
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
