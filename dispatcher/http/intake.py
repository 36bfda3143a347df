"""Enqueueing over HTTP: one intent, or a batch all or nothing."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from dispatcher.errors import DispatcherError, IntentRefused
from dispatcher.http.answers import Refused, json_answer, read_json
from dispatcher.http.state import STATE
from dispatcher.intents import MAX_INTENT_BYTES, Intent, parse_intent
from dispatcher.logs import get_logger
from dispatcher.producer import Producer

# One intent: the largest the Python API and the CLI accept too.
MAX_BODY_BYTES: Final = MAX_INTENT_BYTES
# Room for any one intent the single route takes, and a bound on what one request holds in
# memory while it is validated.
MAX_BATCH_BODY_BYTES: Final = 2 * MAX_INTENT_BYTES
# A batch's log line names this many ids; the count says the rest.
LOGGED_IDS: Final = 5

log = get_logger(__name__)


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
        data = await read_json(request, MAX_BATCH_BODY_BYTES if batch else MAX_BODY_BYTES)
        if batch:
            if not isinstance(data, list):
                raise Refused(
                    400, [f"body: must be a JSON array of intents, not {type(data).__name__}"]
                )
            if not data:
                raise Refused(400, ["body: the array holds no intent"])
            items = data
        else:
            if not isinstance(data, dict):
                raise Refused(400, [f"body: must be a JSON object, not {type(data).__name__}"])
            items = [data]
        try:
            ids = await asyncio.to_thread(_validate_and_enqueue, state.producer, items, batch=batch)
        except IntentRefused as exc:
            raise Refused(422, exc.problems, intents=len(items)) from None
    except Refused as refused:
        state.metrics.intake_refused.inc(refused.intents)
        # A refused batch may name thousands of problems: the first ones and the count.
        log.info(
            "intent.refused",
            status=refused.status,
            errors=refused.errors[:LOGGED_IDS],
            error_count=len(refused.errors),
        )
        return refused.response()
    except DispatcherError as exc:
        # The producer's Redis error, its URL redacted; the client learns only to retry.
        log.error("intake.failed", error=str(exc), error_type=type(exc).__name__)
        return json_answer({"errors": ["queue unavailable: try again later"]}, 503)
    state.metrics.intake_accepted.inc(len(ids))
    if batch:
        log.info("intent.accepted", count=len(ids), first_ids=ids[:LOGGED_IDS])
        return json_answer({"ids": ids}, 202)
    log.info("intent.accepted", id=ids[0])
    return json_answer({"id": ids[0]}, 202)


async def post_notification(request: web.Request) -> web.Response:
    return await _accept(request, batch=False)


async def post_notifications_batch(request: web.Request) -> web.Response:
    return await _accept(request, batch=True)
