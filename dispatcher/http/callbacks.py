"""The Catapush status callback receiver.

Off (404) unless `DISPATCHER_CALLBACK_SECRET` is set. The secret travels in the path
(`/v1/callbacks/catapush/{secret}`), which proxies log less readily than a query string;
the query form (`?secret=`) is still taken. Either way it is compared in constant time and
never logged: no access log, and these handlers log neither the path nor the query.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, Final

import redis
from aiohttp import web

from dispatcher.callbacks import (
    SECRET_PARAMETER,
    CallbackRefused,
    fields_from_form,
    fields_from_json,
    fields_from_query,
    parse_callback,
)
from dispatcher.catapush.events import publish_event
from dispatcher.http.answers import Refused, is_json_type, json_answer, read_body
from dispatcher.http.state import STATE, redis_error
from dispatcher.logs import get_logger
from dispatcher.store.callbacks import store_callback

# A Catapush status callback is a few hundred bytes; this is a generous bound on a flood.
MAX_CALLBACK_BODY_BYTES: Final = 1024 * 1024
FORM_TYPE: Final = "application/x-www-form-urlencoded"
PATH_SECRET: Final = "secret"

log = get_logger(__name__)


def _authorized(request: web.Request, secret: bytes) -> bool:
    in_path = request.match_info.get(PATH_SECRET)
    in_query = request.rel_url.query.getall(SECRET_PARAMETER, [])
    if in_path is not None:
        # A second secret in the query could only be an attempt to confuse the check.
        return not in_query and hmac.compare_digest(in_path.encode(), secret)
    # Exactly one secret: a second one could only be an attempt to confuse the comparison.
    return len(in_query) == 1 and hmac.compare_digest(in_query[0].encode(), secret)


async def _callback_fields(request: web.Request) -> Mapping[str, Any]:
    if request.method == "GET":
        # The raw (still percent-encoded) query: the decoded one would turn an encoded '&'
        # inside a value into a separator.
        return fields_from_query(request.rel_url.raw_query_string)
    body = await read_body(request, MAX_CALLBACK_BODY_BYTES)
    if request.content_type == FORM_TYPE:
        return fields_from_form(body)
    if is_json_type(request.content_type):
        return fields_from_json(body)
    raise Refused(415, [f"content-type: must be application/json or {FORM_TYPE}"])


async def catapush_callback(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.callback_secret is None:
        # Without a secret anyone could forge a status: the receiver is off.
        return json_answer({"errors": ["Not Found"]}, 404)
    if not _authorized(request, state.callback_secret):
        state.metrics.callbacks_refused.inc()
        log.warning("callback.refused", status=401, key=SECRET_PARAMETER, method=request.method)
        return json_answer({"errors": [f"{SECRET_PARAMETER}: missing or wrong"]}, 401)
    try:
        try:
            event = parse_callback(await _callback_fields(request))
        except CallbackRefused as exc:
            raise Refused(400, [str(exc)], key=exc.key) from None
    except Refused as refused:
        state.metrics.callbacks_refused.inc()
        log.warning(
            "callback.refused",
            status=refused.status,
            key=refused.key,
            errors=refused.errors,
            method=request.method,
        )
        return refused.response()
    try:
        stored = await store_callback(
            state.redis, state.keys, event, ttl_s=state.settings.status_ttl_s
        )
        # Whether stored or a repeat: a repeat may follow a 503 that came after the store.
        await publish_event(state.redis, state.keys, event)
    except (redis.RedisError, OSError) as exc:
        # Not the callback's fault: a 5xx tells the sender it may try again.
        log.error(
            "callback.failed",
            message_id=event.message_id,
            error=redis_error(state.settings, exc),
        )
        return json_answer({"errors": ["store unavailable: try again later"]}, 503)
    context = {
        "callback_status": event.status,
        "message_id": event.message_id,
        "message_ref": event.message_ref,
    }
    if not stored:
        state.metrics.callbacks_duplicate.inc()
        log.info("callback.duplicate", **context)
        return json_answer({"ok": True})
    state.metrics.callbacks.labels(event.status).inc()
    log.info("callback.received", **context)
    return json_answer({"ok": True})
