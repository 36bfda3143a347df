"""The `serve` application: the operation table, the access check, and the server's life.

- `enqueue`: `POST /v1/notifications`, `POST /v1/notifications:batch`,
  `POST /v1/notifications/{id}/cancel`;
- `read`: `GET /v1/notifications/{id}`, `/v1/dead-letters[/{id}]`, `/v1/queues`, `/metrics`,
  and the console's pages;
- `ops`: `POST /v1/dead-letters/{id}/replay`, `DELETE /v1/dead-letters/{id}`, and the
  console's confirmations and actions;
- any token: `/docs`, `/openapi.json`;
- the callback secret: `GET`/`POST /v1/callbacks/catapush/{secret}` (and `?secret=`);
- nothing: `/healthz`, `/readyz`, `/login`, `/logout`.

With `DISPATCHER_API_TOKENS` unset every route is open: `dispatcher serve` allows that only on
a loopback address, or with `--insecure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
from typing import Any, Final

from aiohttp import web

from dispatcher import __version__
from dispatcher.errors import ConfigurationError
from dispatcher.http import console, docs, intake, ops
from dispatcher.http.answers import Refused, json_answer
from dispatcher.http.auth import ApiToken, bearer, find_token, parse_tokens
from dispatcher.http.callbacks import catapush_callback
from dispatcher.http.metrics import ServeMetrics
from dispatcher.http.models import (
    Accepted,
    AcceptedBatch,
    Callback,
    CallbackQuery,
    CancelAnswer,
    DeadLetter,
    DeadLetterPage,
    DeadLetterQuery,
    Errors,
    Health,
    IntentBatch,
    NotificationStatus,
    Ok,
    Purged,
    QueueOverview,
    Replayed,
    SecretQuery,
)
from dispatcher.http.openapi import build_document
from dispatcher.http.routes import ANY_TOKEN, PUBLIC, Access, Body, Handler, Operation, register
from dispatcher.http.state import STATE, ServerState
from dispatcher.intents import ID_PATTERN, Intent
from dispatcher.logs import get_logger
from dispatcher.producer import Producer
from dispatcher.settings import Settings, secret_value
from dispatcher.store.connection import async_redis, redact_url, sync_redis
from dispatcher.store.keys import Keys
from dispatcher.templates import load_templates

__all__ = ["API_OPERATIONS", "build_app", "check_exposure", "operations", "run_server"]

# In-flight requests get this long to finish on SIGTERM.
SHUTDOWN_TIMEOUT_S: Final = 5.0
LISTEN_BACKLOG: Final = 1024
ACCESS: Final = web.AppKey("access", dict)

log = get_logger(__name__)

Answer = tuple[int, tuple[str, Body]]


def _answers(*answers: Answer) -> dict[int, tuple[str, Body]]:
    return dict(answers)


_UNAUTHORIZED: Answer = (401, ("No token, or one that is not in DISPATCHER_API_TOKENS.", Errors))
_FORBIDDEN: Answer = (403, ("The token lacks the scope this operation needs.", Errors))
_UNAVAILABLE: Answer = (503, ("Redis did not answer: try again later.", Errors))
_BAD: Answer = (400, ("The body or a parameter is malformed; the error names it.", Errors))
_TOO_LARGE: Answer = (413, ("The body is larger than the route allows.", Errors))
_WRONG_TYPE: Answer = (415, ("The body is not of a content type the route takes.", Errors))
_NOT_FOUND: Answer = (404, ("No such entry.", Errors))
_INTENT_ANSWERS = _answers(
    _BAD,
    _UNAUTHORIZED,
    _FORBIDDEN,
    _TOO_LARGE,
    _WRONG_TYPE,
    _UNAVAILABLE,
    (422, ("An intent is invalid: `<field>: <reason>` each.", Errors)),
)
_CALLBACK_ANSWERS = _answers(
    (200, ("Stored, or a duplicate of one stored already (stored once).", Ok)),
    (400, ("A key is missing or malformed; the error names it.", Errors)),
    (401, ("The secret is missing or wrong.", Errors)),
    (404, ("The receiver is off: DISPATCHER_CALLBACK_SECRET is not set.", Errors)),
    _TOO_LARGE,
    _WRONG_TYPE,
    _UNAVAILABLE,
)
_CALLBACK_TYPES = ("application/json", "application/x-www-form-urlencoded")
_CALLBACK_TEXT = (
    "A Catapush `MessageStatus` callback: GET with the keys in the query string, or POST "
    "them as JSON or form-encoded. A callback delivered twice is stored once."
)
_IDS = {"id": ID_PATTERN}

API_OPERATIONS: Final = [
    Operation(
        "POST",
        "/v1/notifications",
        intake.post_notification,
        "enqueue",
        "Enqueue one intent",
        "notifications",
        {202: ("Enqueued; its id (given or generated).", Accepted), **_INTENT_ANSWERS},
        body=Intent,
        description=f"At most {intake.MAX_BODY_BYTES} bytes. `recipients` also takes "
        "plain identifier strings.",
    ),
    Operation(
        "POST",
        "/v1/notifications:batch",
        intake.post_notifications_batch,
        "enqueue",
        "Enqueue a batch of intents, all or none",
        "notifications",
        {202: ("All enqueued, ids in order.", AcceptedBatch), **_INTENT_ANSWERS},
        body=IntentBatch,
        description=f"At most {intake.MAX_BATCH_BODY_BYTES} bytes; a refusal names "
        "`<index>.<field>`.",
    ),
    Operation(
        "GET",
        "/v1/notifications/{id}",
        ops.get_notification,
        "read",
        "Where an intent stands, with its status callbacks",
        "notifications",
        {
            200: ("The same report as `dispatcher status ID --json`.", NotificationStatus),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _UNAVAILABLE]),
            404: ("Nothing is known of this intent.", Errors),
        },
    ),
    Operation(
        "POST",
        "/v1/notifications/{id}/cancel",
        ops.post_cancel,
        "enqueue",
        "Cancel an intent that has not gone out",
        "notifications",
        {
            200: (
                "Cancelled: it will not be sent (a split intent: its unsent parts).",
                CancelAnswer,
            ),
            409: ("Not cancelled: it went out already, or was being sent.", CancelAnswer),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _UNAVAILABLE]),
        },
        description="Queued, scheduled and retrying intents are never sent once cancelled; "
        "an id not enqueued yet is cancelled too.",
        patterns=_IDS,
    ),
    Operation(
        "GET",
        "/v1/dead-letters",
        ops.list_dead_letters,
        "read",
        "List dead letters, oldest first",
        "dead letters",
        {
            200: ("A page, and the counts by reason.", DeadLetterPage),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _UNAVAILABLE]),
        },
        query=DeadLetterQuery,
    ),
    Operation(
        "GET",
        "/v1/dead-letters/{id}",
        ops.get_dead_letter,
        "read",
        "Show one dead letter, its intent included",
        "dead letters",
        {
            200: ("The entry.", DeadLetter),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _NOT_FOUND, _UNAVAILABLE]),
        },
        patterns=_IDS,
    ),
    Operation(
        "POST",
        "/v1/dead-letters/{id}/replay",
        ops.post_replay,
        "ops",
        "Put a dead letter's intent back on the queue",
        "dead letters",
        {
            200: ("Queued again with a fresh attempt count, and out of the store.", Replayed),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _NOT_FOUND, _UNAVAILABLE]),
            409: ("The entry holds no intent (reason `invalid`): purge it.", Errors),
        },
        description="An intent sent already (it has a receipt) is not sent again.",
        patterns=_IDS,
    ),
    Operation(
        "DELETE",
        "/v1/dead-letters/{id}",
        ops.delete_dead_letter,
        "ops",
        "Purge a dead letter",
        "dead letters",
        {
            200: ("Deleted for good.", Purged),
            **dict([_BAD, _UNAUTHORIZED, _FORBIDDEN, _NOT_FOUND, _UNAVAILABLE]),
        },
        patterns=_IDS,
    ),
    Operation(
        "GET",
        "/v1/queues",
        ops.get_queues,
        "read",
        "The queue overview: depths, oldest age, rates",
        "queues",
        {
            200: ("Depths now, and sends per minute over the last hour.", QueueOverview),
            **dict([_UNAUTHORIZED, _FORBIDDEN, _UNAVAILABLE]),
        },
    ),
    Operation(
        "GET",
        "/v1/callbacks/catapush/{secret}",
        catapush_callback,
        PUBLIC,
        "Receive a status callback (query form)",
        "callbacks",
        _CALLBACK_ANSWERS,
        query=Callback,
        description=_CALLBACK_TEXT,
    ),
    Operation(
        "POST",
        "/v1/callbacks/catapush/{secret}",
        catapush_callback,
        PUBLIC,
        "Receive a status callback (JSON or form body)",
        "callbacks",
        _CALLBACK_ANSWERS,
        body=Callback,
        body_types=_CALLBACK_TYPES,
        description=_CALLBACK_TEXT,
    ),
    Operation(
        "GET",
        "/v1/callbacks/catapush",
        catapush_callback,
        PUBLIC,
        "Receive a status callback, the secret in the query (older form)",
        "callbacks",
        _CALLBACK_ANSWERS,
        query=CallbackQuery,
        description=_CALLBACK_TEXT,
    ),
    Operation(
        "POST",
        "/v1/callbacks/catapush",
        catapush_callback,
        PUBLIC,
        "Receive a status callback, the secret in the query (older form)",
        "callbacks",
        _CALLBACK_ANSWERS,
        body=Callback,
        body_types=_CALLBACK_TYPES,
        query=SecretQuery,
        description=_CALLBACK_TEXT,
    ),
    Operation(
        "GET",
        "/healthz",
        ops.healthz,
        PUBLIC,
        "Liveness: the server answers",
        "probes",
        {200: ("Alive.", Health)},
    ),
    Operation(
        "GET",
        "/readyz",
        ops.readyz,
        PUBLIC,
        "Readiness: Redis answers and the templates are loaded",
        "probes",
        {200: ("Ready.", Health), 503: ("Not ready; `errors` says why.", Health)},
    ),
    Operation(
        "GET",
        "/metrics",
        ops.get_metrics,
        "read",
        "Prometheus metrics",
        "probes",
        {200: ("The text exposition.", "text/plain"), **dict([_UNAUTHORIZED, _FORBIDDEN])},
    ),
]

_HTML_ANSWERS: dict[int, tuple[str, Any]] = {200: ("A page.", "text/html")}


def _page(method: str, path: str, handler: Handler, access: Access, summary: str) -> Operation:
    return Operation(
        method,
        path,
        handler,
        access,
        summary,
        "console",
        _HTML_ANSWERS,
        documented=False,
        html=True,
    )


CONSOLE_OPERATIONS: Final = [
    _page("GET", "/", console.overview_page, "read", "Queues, throughput, dead letters"),
    _page("GET", "/console/dead-letters", console.dead_letters_page, "read", "Dead letters"),
    _page("GET", "/console/dead-letters/{id}", console.dead_letter_page_one, "read", "Inspect"),
    _page(
        "GET",
        "/console/dead-letters/{id}/replay",
        console._confirm_page("replay"),
        "ops",
        "Confirm a replay",
    ),
    _page("POST", "/console/dead-letters/{id}/replay", console.replay_action, "ops", "Replay"),
    _page(
        "GET",
        "/console/dead-letters/{id}/purge",
        console._confirm_page("purge"),
        "ops",
        "Confirm a purge",
    ),
    _page("POST", "/console/dead-letters/{id}/purge", console.purge_action, "ops", "Purge"),
    _page("GET", "/console/notifications", console.notification_page, "read", "Intent status"),
    _page("GET", "/login", console.login_form, PUBLIC, "Sign-in form"),
    _page("POST", "/login", console.login, PUBLIC, "Sign in"),
    _page("POST", "/logout", console.logout, PUBLIC, "Sign out"),
    _page("GET", "/docs", docs.docs_page, ANY_TOKEN, "The API, described"),
    Operation(
        "GET",
        "/openapi.json",
        docs.openapi_json,
        ANY_TOKEN,
        "The OpenAPI document",
        "docs",
        {200: ("The document.", "application/json")},
        documented=False,
    ),
]


def operations() -> list[Operation]:
    return [*API_OPERATIONS, *CONSOLE_OPERATIONS]


def openapi_document() -> dict[str, Any]:
    return build_document(
        operations(),
        title="catapush-dispatcher",
        version=__version__,
        description="Enqueue notification intents, follow them, and handle dead letters. "
        "Every operation but the probes and the Catapush callbacks needs "
        "`Authorization: Bearer <token>` when DISPATCHER_API_TOKENS is set.",
    )


# -- Access ------------------------------------------------------------------------------------


def _presented(request: web.Request) -> str | None:
    header = bearer(request.headers.get("Authorization"))
    return header if header is not None else request.cookies.get(console.TOKEN_COOKIE)


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    resource = route.resource
    table: dict[tuple[str, str], tuple[Access, bool]] = request.app[ACCESS]
    entry = None if resource is None else table.get((route.method, resource.canonical))
    if entry is None:  # no route (404/405): nothing to protect
        return await handler(request)
    access, html = entry
    state = request.app[STATE]
    if access == PUBLIC or not state.tokens:
        return await handler(request)
    token = find_token(state.tokens, _presented(request))
    if token is None:
        if html:
            return console.login_page(request, 401)
        raise Refused(
            401,
            ["authorization: a bearer token is required"],
            headers={"WWW-Authenticate": "Bearer"},
        )
    if access != ANY_TOKEN and access not in token.scopes:
        raise Refused(403, [f"authorization: the token lacks the {access!r} scope"])
    request[console.CALLER] = token.secret
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is `{"errors": [...]}`, aiohttp's own 404/405/413 included, and an
    unexpected exception is logged and answered with a 500 instead of a traceback page."""
    try:
        return await handler(request)
    except Refused as refused:
        return refused.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_answer({"errors": [exc.reason]}, exc.status, headers)
    except Exception:
        # The path only: the query string may hold the callback secret. Not even the path
        # for the callback routes: it may hold it too.
        path = "/v1/callbacks/..." if request.path.startswith("/v1/callbacks/") else request.path
        log.exception("request.failed", method=request.method, path=path)
        return json_answer({"errors": ["internal error"]}, 500)


# -- The application ---------------------------------------------------------------------------


def _callback_secret(settings: Settings) -> bytes | None:
    value = secret_value(settings.callback_secret)
    return None if value is None else value.encode()


def build_app(settings: Settings, tokens: tuple[ApiToken, ...] | None = None) -> web.Application:
    """The application; its Redis clients open on startup and close on cleanup."""
    templates = load_templates(settings.templates_dir)  # ConfigurationError before serving
    chosen = parse_tokens(secret_value(settings.api_tokens)) if tokens is None else tokens
    # The largest of the routes' limits; each route checks its own.
    app = web.Application(
        client_max_size=intake.MAX_BATCH_BODY_BYTES, middlewares=[_errors, _access]
    )
    app[console.JINJA] = console.environment()
    app[docs.DOCUMENT] = openapi_document()

    async def resources(app: web.Application) -> Any:
        producer = Producer.from_settings(settings, templates=templates)
        client = async_redis(settings)
        reader = sync_redis(settings)
        app[STATE] = ServerState(
            settings=settings,
            keys=Keys(settings.namespace),
            producer=producer,
            redis=client,
            sync_redis=reader,
            metrics=ServeMetrics(),
            callback_secret=_callback_secret(settings),
            tokens=chosen,
            templates=0 if templates is None else len(templates.names()),
        )
        yield
        await client.aclose()
        await asyncio.to_thread(producer.close)
        await asyncio.to_thread(reader.close)

    app.cleanup_ctx.append(resources)
    ops_table = operations()
    access = register(app, ops_table)
    html = {(op.method, op.path): op.html for op in ops_table}
    app[ACCESS] = {key: (value, html[key]) for key, value in access.items()}
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str, *, insecure: bool) -> tuple[ApiToken, ...]:
    """The API tokens; refuses an open server on an address others can reach."""
    tokens = parse_tokens(secret_value(settings.api_tokens))
    if not tokens and not insecure and not _is_loopback(host):
        raise ConfigurationError(
            f"DISPATCHER_API_TOKENS: required to serve on {host}, which is not a loopback "
            "address (or pass --insecure to serve without authentication)"
        )
    return tokens


async def _serve(settings: Settings, sock: socket.socket, tokens: tuple[ApiToken, ...]) -> None:
    # No access log: aiohttp's would write every callback URL, secret included.
    runner = web.AppRunner(
        build_app(settings, tokens),
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
            api_tokens=len(tokens),
        )
        if not tokens:
            log.warning("api.auth_disabled", hint="DISPATCHER_API_TOKENS is not set")
        if _callback_secret(settings) is None:
            log.info(
                "callback.disabled",
                hint="DISPATCHER_CALLBACK_SECRET is not set: the callback routes answer 404",
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


def run_server(settings: Settings, sock: socket.socket, tokens: tuple[ApiToken, ...] = ()) -> int:
    """Serve on a bound socket until SIGTERM or SIGINT; returns the exit status."""
    asyncio.run(_serve(settings, sock, tokens))
    return 0
