"""`dispatcher serve`: HTTP intake, Catapush status callbacks, health and metrics.

| route | answer |
|---|---|
| `POST /v1/notifications` | one intent → `202 {"id"}`; else 400/413/422/503 `{"errors"}` |
| `POST /v1/notifications:batch` | an array of intents, all or nothing → `202 {"ids"}` |

Bodies are capped per route: one intent at `MAX_INTENT_BYTES` (16 MiB, what every intake
door accepts), a batch at twice that, so a batch always holds any intent the single route
takes; a callback at 1 MiB.
| `GET`/`POST /v1/callbacks/catapush` | a Catapush status callback, stored per intent → `200` |
| `GET /healthz` | `200` when Redis answers PING, else `503` |
| `GET /metrics` | Prometheus text exposition |

One asyncio event loop serves everything. Intake goes through the synchronous `Producer`
(the same code as the CLI and the Python API) on the loop's thread pool, so a slow Redis
never stalls the loop; callbacks, health and metrics use an asyncio Redis client.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import redis
import redis.asyncio as aioredis
from aiohttp import web

from dispatcher.callbacks import (
    SECRET_PARAMETER,
    STATUSES,
    CallbackEvent,
    CallbackRefused,
    fields_from_form,
    fields_from_json,
    fields_from_query,
    parse_callback,
)
from dispatcher.errors import DispatcherError, IntentRefused
from dispatcher.exposition import family, label
from dispatcher.intents import MAX_INTENT_BYTES, Intent, parse_intent
from dispatcher.keys import Keys
from dispatcher.logs import get_logger
from dispatcher.producer import Producer
from dispatcher.redisconn import async_redis, redact_url, translate_for
from dispatcher.settings import Settings, secret_value
from dispatcher.templates import load_templates

__all__ = [
    "MAX_BATCH_BODY_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CALLBACK_BODY_BYTES",
    "Metrics",
    "build_app",
    "run_server",
]

# One intent: the largest the Python API and the CLI accept too.
MAX_BODY_BYTES: Final = MAX_INTENT_BYTES
# Room for any one intent the single route takes, and a bound on what one request holds in
# memory while it is validated.
MAX_BATCH_BODY_BYTES: Final = 2 * MAX_INTENT_BYTES
# A Catapush status callback is a few hundred bytes; this is a generous bound on a flood.
MAX_CALLBACK_BODY_BYTES: Final = 1024 * 1024
# A message has a handful of lifecycle events per recipient; 100 keeps the story of a
# message to a few recipients while bounding what a flood of callbacks can store.
CALLBACK_HISTORY: Final = 100
# As long as a receipt, so `dispatcher status` shows both for the same window.
CALLBACK_TTL_S: Final = 30 * 24 * 3600
# In-flight requests get this long to finish on SIGTERM.
SHUTDOWN_TIMEOUT_S: Final = 5.0
LISTEN_BACKLOG: Final = 1024

METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

log = get_logger(__name__)


# -- Metrics ------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Counters of this process since it started; Prometheus computes rates from them."""

    intake_accepted: int = 0
    intake_refused: int = 0
    callbacks: Counter[str] = field(default_factory=Counter)
    callbacks_refused: int = 0

    def render(self, depths: Mapping[str, int] | None) -> str:
        """The text exposition; `depths` holds the Redis gauges, None when Redis failed."""
        lines: list[str] = []
        lines += family(
            "dispatcher_intake_accepted_total",
            "counter",
            "Intents accepted over HTTP and put on the queue.",
            [("", self.intake_accepted)],
        )
        lines += family(
            "dispatcher_intake_refused_total",
            "counter",
            "Intents refused over HTTP (a refused batch counts all its intents, "
            "an unreadable body counts one).",
            [("", self.intake_refused)],
        )
        # Every documented status is exposed from the start, so that rate() sees the first one.
        lines += family(
            "dispatcher_callbacks_total",
            "counter",
            "Catapush status callbacks stored, by status.",
            [(label("status", name), self.callbacks[name]) for name in STATUSES],
        )
        lines += family(
            "dispatcher_callbacks_refused_total",
            "counter",
            "Catapush status callbacks refused: malformed, or without the right secret.",
            [("", self.callbacks_refused)],
        )
        lines += family(
            "dispatcher_redis_up",
            "gauge",
            "1 if Redis answered this scrape, else 0 (the depth gauges are then left out).",
            [("", 0 if depths is None else 1)],
        )
        gauges = (
            ("dispatcher_queue_depth", "queue", "Messages waiting on the queue."),
            (
                "dispatcher_delayed_depth",
                "delayed",
                "Messages on the delay queue (retries not yet due) that no worker holds yet.",
            ),
            ("dispatcher_dead_letters", "dead_letters", "Entries in the dead-letter store."),
        )
        for name, key, help_text in gauges:
            lines += family(name, "gauge", help_text, [] if depths is None else [("", depths[key])])
        return "\n".join(lines) + "\n"


# -- Application state -------------------------------------------------------------------------


@dataclass
class ServerState:
    settings: Settings
    keys: Keys
    producer: Producer
    redis: aioredis.Redis
    metrics: Metrics
    callback_secret: bytes | None


STATE: Final = web.AppKey("state", ServerState)


def _callback_secret(settings: Settings) -> bytes | None:
    secret = settings.callback_secret
    value = secret_value(secret)
    return None if value is None else value.encode()


# -- Answers -----------------------------------------------------------------------------------


def _json(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class _Refused(Exception):
    """A request answered with an error status and `{"errors": [...]}`."""

    def __init__(
        self, status: int, errors: list[str], *, intents: int = 1, key: str | None = None
    ) -> None:
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = errors
        self.intents = intents  # how many intents the refusal stands for, for the metrics
        self.key = key  # the request key at fault, when there is one, for the logs

    def response(self) -> web.Response:
        return _json({"errors": self.errors}, self.status)


async def _read_body(request: web.Request, limit: int) -> bytes:
    too_large = _Refused(413, [f"body: larger than {limit} bytes"])
    # A declared length over the limit is refused before a byte of it is read.
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body past the application's limit
        raise too_large from None
    if len(body) > limit:  # a chunked body past this route's (lower) limit
        raise too_large
    return body


async def _read_json(request: web.Request, limit: int) -> Any:
    body = await _read_body(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, [f"body: not valid JSON: {exc}"]) from None


# -- Intake ------------------------------------------------------------------------------------


def _validate_and_enqueue(producer: Producer, items: list[Any], *, batch: bool) -> list[str]:
    """Validate every intent, then enqueue all of them or none. Runs on a pool thread:
    validating a megabyte of intents takes long enough to matter to the event loop."""
    intents: list[Intent] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            intents.append(producer.check(parse_intent(item)))
        except IntentRefused as exc:
            problems.extend(f"{index}.{problem}" if batch else problem for problem in exc.problems)
    if problems:
        raise IntentRefused(problems)
    return producer.enqueue_many(intents, checked=True)


async def _accept(request: web.Request, *, batch: bool) -> web.Response:
    state = request.app[STATE]
    try:
        data = await _read_json(request, MAX_BATCH_BODY_BYTES if batch else MAX_BODY_BYTES)
        if batch:
            if not isinstance(data, list):
                raise _Refused(
                    400, [f"body: must be a JSON array of intents, not {type(data).__name__}"]
                )
            if not data:
                raise _Refused(400, ["body: the array holds no intent"])
            items = data
        else:
            if not isinstance(data, dict):
                raise _Refused(400, [f"body: must be a JSON object, not {type(data).__name__}"])
            items = [data]
        try:
            ids = await asyncio.to_thread(_validate_and_enqueue, state.producer, items, batch=batch)
        except IntentRefused as exc:
            raise _Refused(422, exc.problems, intents=len(items)) from None
    except _Refused as refused:
        state.metrics.intake_refused += refused.intents
        log.info("intent.refused", status=refused.status, errors=refused.errors)
        return refused.response()
    except DispatcherError as exc:
        # The producer's Redis error, its URL redacted; the client learns only to retry.
        log.error("intake.failed", error=str(exc), error_type=type(exc).__name__)
        return _json({"errors": ["queue unavailable: try again later"]}, 503)
    state.metrics.intake_accepted += len(ids)
    if batch:
        log.info("intent.accepted", ids=ids, count=len(ids))
        return _json({"ids": ids}, 202)
    log.info("intent.accepted", id=ids[0])
    return _json({"id": ids[0]}, 202)


async def post_notification(request: web.Request) -> web.Response:
    return await _accept(request, batch=False)


async def post_notifications_batch(request: web.Request) -> web.Response:
    return await _accept(request, batch=True)


# -- Catapush status callbacks -----------------------------------------------------------------


def _authorized(request: web.Request, secret: bytes | None) -> bool:
    if secret is None:
        return True
    given = request.rel_url.query.getall(SECRET_PARAMETER, [])
    # Exactly one secret: a second one could only be an attempt to confuse the comparison.
    return len(given) == 1 and hmac.compare_digest(given[0].encode(), secret)


async def _callback_fields(request: web.Request) -> Mapping[str, Any]:
    if request.method == "GET":
        # The raw (still percent-encoded) query: the decoded one would turn an encoded '&'
        # inside a value into a separator.
        return fields_from_query(request.rel_url.raw_query_string)
    body = await _read_body(request, MAX_CALLBACK_BODY_BYTES)
    if request.content_type == "application/x-www-form-urlencoded":
        return fields_from_form(body)
    if request.content_type == "application/json":
        return fields_from_json(body)
    raise _Refused(
        415,
        ["content-type: must be application/json or application/x-www-form-urlencoded"],
    )


async def _store(state: ServerState, event: CallbackEvent) -> None:
    key = (
        state.keys.callbacks(event.message_ref)
        if event.message_ref is not None
        else state.keys.callbacks_by_message_id(event.message_id)
    )
    # One transaction, so a list never exists without its expiry.
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, orjson.dumps(event.stored()))
        pipe.ltrim(key, -CALLBACK_HISTORY, -1)
        pipe.expire(key, CALLBACK_TTL_S)
        await pipe.execute()


async def catapush_callback(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # Never log the query string or the URL: with a secret configured, it carries it.
    if not _authorized(request, state.callback_secret):
        state.metrics.callbacks_refused += 1
        log.warning("callback.refused", status=401, key=SECRET_PARAMETER, method=request.method)
        return _json({"errors": [f"{SECRET_PARAMETER}: missing or wrong"]}, 401)
    try:
        try:
            event = parse_callback(await _callback_fields(request))
        except CallbackRefused as exc:
            raise _Refused(400, [str(exc)], key=exc.key) from None
    except _Refused as refused:
        state.metrics.callbacks_refused += 1
        log.warning(
            "callback.refused",
            status=refused.status,
            key=refused.key,
            errors=refused.errors,
            method=request.method,
        )
        return refused.response()
    try:
        await _store(state, event)
    except (redis.RedisError, OSError) as exc:
        # Not the callback's fault: a 5xx tells the sender it may try again.
        log.error("callback.failed", message_id=event.message_id, error=_redis_error(state, exc))
        return _json({"errors": ["store unavailable: try again later"]}, 503)
    state.metrics.callbacks[event.status] += 1
    log.info(
        "callback.received",
        callback_status=event.status,
        message_id=event.message_id,
        message_ref=event.message_ref,
    )
    return _json({"ok": True})


# -- Health and metrics ------------------------------------------------------------------------


def _redis_error(state: ServerState, exc: BaseException) -> str:
    """What went wrong with Redis, for a log line or a health answer: the URL redacted."""
    if isinstance(exc, redis.RedisError):
        return str(translate_for(exc, state.settings))
    return f"Redis at {redact_url(state.settings.redis_url)}: {str(exc) or type(exc).__name__}"


def _redis_deadline_s(settings: Settings) -> float:
    # The client's own timeouts end a call first; this only guards against a call that
    # would somehow outlive both (a connection and a reply).
    return settings.redis_connect_timeout_s + settings.redis_socket_timeout_s


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        await asyncio.wait_for(state.redis.ping(), _redis_deadline_s(state.settings))
    except (redis.RedisError, OSError, TimeoutError) as exc:
        return _json({"ok": False, "errors": [f"redis: {_redis_error(state, exc)}"]}, 503)
    return _json({"ok": True})


async def _depths(state: ServerState) -> dict[str, int] | None:
    queue = state.settings.queue
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.llen(state.keys.queue(queue))
            pipe.llen(state.keys.delay_queue(queue))
            pipe.hlen(state.keys.dead_letters)
            queued, delayed, dead = await asyncio.wait_for(
                pipe.execute(), _redis_deadline_s(state.settings)
            )
    except (redis.RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics.redis_failed", error=_redis_error(state, exc))
        return None
    return {"queue": int(queued), "delayed": int(delayed), "dead_letters": int(dead)}


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = state.metrics.render(await _depths(state))
    return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


# -- The application ---------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is `{"errors": [...]}`, aiohttp's own 404/405/413 included, and an
    unexpected exception is logged and answered with a 500 instead of a traceback page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _json({"errors": [exc.reason]}, exc.status, headers)
    except Exception:
        # The path only: the query string may hold the callback secret.
        log.exception("request.failed", method=request.method, path=request.path)
        return _json({"errors": ["internal error"]}, 500)


def build_app(settings: Settings) -> web.Application:
    """The application; its Redis clients open on startup and close on cleanup."""
    templates = load_templates(settings.templates_dir)  # ConfigurationError before serving
    # The largest of the routes' limits; each route checks its own in `_read_body`.
    app = web.Application(client_max_size=MAX_BATCH_BODY_BYTES, middlewares=[_json_errors])

    async def resources(app: web.Application) -> Any:
        producer = Producer.from_settings(settings, templates=templates)
        client = async_redis(settings)
        app[STATE] = ServerState(
            settings=settings,
            keys=Keys(settings.namespace),
            producer=producer,
            redis=client,
            metrics=Metrics(),
            callback_secret=_callback_secret(settings),
        )
        yield
        await client.aclose()
        await asyncio.to_thread(producer.close)

    app.cleanup_ctx.append(resources)
    app.router.add_post("/v1/notifications", post_notification)
    app.router.add_post("/v1/notifications:batch", post_notifications_batch)
    # No HEAD: it would reach the handler as a bodiless POST-like request; Catapush never
    # sends one, so a 405 is the honest answer.
    app.router.add_get("/v1/callbacks/catapush", catapush_callback, allow_head=False)
    app.router.add_post("/v1/callbacks/catapush", catapush_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def _serve(settings: Settings, sock: socket.socket) -> None:
    # No access log: aiohttp's would write every callback URL, secret included.
    runner = web.AppRunner(
        build_app(settings),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
        host, port = sock.getsockname()[:2]
        log.info(
            "server.started",
            host=host,
            port=port,
            pid=os.getpid(),
            redis=redact_url(settings.redis_url),
        )
        if _callback_secret(settings) is None:
            log.warning(
                "callback.auth_disabled",
                hint="DISPATCHER_CALLBACK_SECRET is not set: anyone can post status callbacks",
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("server.stopping")
    finally:
        await runner.cleanup()
    log.info("server.stopped")


def run_server(settings: Settings, sock: socket.socket) -> int:
    """Serve on a bound socket until SIGTERM or SIGINT; returns the exit status."""
    asyncio.run(_serve(settings, sock))
    return 0
