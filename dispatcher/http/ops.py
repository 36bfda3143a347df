"""The read and ops routes: an intent's status, dead letters, the queue overview, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from dispatcher.errors import RedisRefused, RedisUnavailable
from dispatcher.http.answers import Refused, json_answer
from dispatcher.http.models import (
    CancelAnswer,
    DeadLetter,
    DeadLetterPage,
    DeadLetterQuery,
    DeadLetterSummary,
    NotificationStatus,
    Purged,
    QueueDepth,
    QueueOverview,
    Rates,
    Replayed,
)
from dispatcher.http.state import REDIS_FAILURES, STATE, ServerState, redis_deadline_s, redis_error
from dispatcher.intents import field_errors
from dispatcher.lanes import LANES, lane_queue
from dispatcher.logs import get_logger
from dispatcher.store.cancels import canceller_for
from dispatcher.store.deadletters import DeadLetterEntry, DeadLetters
from dispatcher.store.status import intent_status, is_known
from dispatcher.store.throughput import WINDOW_MINUTES, counts, window

log = get_logger(__name__)

UNAVAILABLE = ["store unavailable: try again later"]


async def _in_thread(state: ServerState, what: str, call: Any, *args: Any) -> Any:
    """A synchronous Redis reader (shared with the CLI) on a pool thread; a Redis failure
    becomes a logged 503."""
    try:
        return await asyncio.to_thread(call, *args)
    except REDIS_FAILURES as exc:
        log.error("ops.failed", what=what, error=redis_error(state.settings, exc))
        raise Refused(503, UNAVAILABLE) from None


# -- One intent --------------------------------------------------------------------------------


async def notification_report(state: ServerState, intent_id: str) -> dict[str, Any] | None:
    report = await _in_thread(
        state, "status", intent_status, state.sync_redis, state.settings, intent_id
    )
    return report if is_known(report) else None


async def get_notification(request: web.Request) -> web.Response:
    state = request.app[STATE]
    intent_id = request.match_info["id"]
    report = await notification_report(state, intent_id)
    if report is None:
        raise Refused(404, [f"id: nothing is known of {intent_id!r}"])
    return json_answer(NotificationStatus.model_validate(report))


async def post_cancel(request: web.Request) -> web.Response:
    """Cancel an intent: 200 when stopped, 409 when it went out already or was being sent."""
    state = request.app[STATE]
    intent_id = request.match_info["id"]
    canceller = canceller_for(state.sync_redis, state.settings)
    answer = await _in_thread(state, "cancel", canceller.cancel, intent_id)
    log.info("intent.cancel_requested", intent_id=intent_id, state=answer.state)
    return json_answer(
        CancelAnswer.model_validate(answer.to_json()), status=200 if answer.stopped else 409
    )


# -- Dead letters ------------------------------------------------------------------------------


def dead_letters(state: ServerState) -> DeadLetters:
    return DeadLetters(state.sync_redis, state.keys)


def page_query(request: web.Request, *, strict: bool = True) -> DeadLetterQuery:
    """The page asked for; `strict` refuses parameters the API does not know (the console
    carries its own, such as `notice`)."""
    query = request.rel_url.query
    unknown = sorted(set(query) - set(DeadLetterQuery.model_fields))
    if unknown and strict:
        raise Refused(400, [f"{unknown[0]}: unknown query parameter"])
    known = {key: query[key] for key in DeadLetterQuery.model_fields if key in query}
    try:
        return DeadLetterQuery.model_validate(known)
    except ValidationError as exc:
        raise Refused(400, field_errors(exc)) from None


def _page(store: DeadLetters, query: DeadLetterQuery) -> DeadLetterPage:
    entries, following = store.page(query.reason, query.cursor, query.limit)
    return DeadLetterPage(
        items=[
            DeadLetterSummary(
                id=e.id,
                reason=e.reason,
                status_code=e.status_code,
                title=e.title,
                attempts=e.attempts,
                dead_at=e.dead_at,
            )
            for e in entries
        ],
        next_cursor=following,
        counts=store.counts(),
    )


async def dead_letter_page(state: ServerState, query: DeadLetterQuery) -> DeadLetterPage:
    page: DeadLetterPage = await _in_thread(
        state, "dead_letters", _page, dead_letters(state), query
    )
    return page


async def list_dead_letters(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_answer(await dead_letter_page(state, page_query(request)))


async def dead_letter(state: ServerState, entry_id: str) -> DeadLetterEntry:
    entry: DeadLetterEntry | None = await _in_thread(
        state, "dead_letter", dead_letters(state).get, entry_id
    )
    if entry is None:
        raise Refused(404, [f"id: no dead letter {entry_id!r}"])
    return entry


async def get_dead_letter(request: web.Request) -> web.Response:
    entry = await dead_letter(request.app[STATE], request.match_info["id"])
    return json_answer(DeadLetter.model_validate(entry.to_dict()))


def _replay(state: ServerState, entry: DeadLetterEntry) -> None:
    # Back on the queue with a fresh attempt count, then out of the store: an entry is
    # removed only once its intent is queued. A copy already sent (it has a receipt) is
    # skipped by the worker, so replaying twice never sends twice.
    state.producer.requeue(entry.intent, attempt=1, delay_ms=0)
    dead_letters(state).remove([entry.id])


async def replay_dead_letter(state: ServerState, entry_id: str) -> None:
    entry = await dead_letter(state, entry_id)
    if not isinstance(entry.intent, dict):
        raise Refused(409, [f"id: {entry_id!r} cannot be replayed: its message was not an intent"])
    try:
        await asyncio.to_thread(_replay, state, entry)
    except (RedisUnavailable, RedisRefused, *REDIS_FAILURES) as exc:
        log.error("dead_letter.replay_failed", id=entry_id, error=str(exc))
        raise Refused(503, UNAVAILABLE) from None
    log.info("dead_letter.replayed", id=entry_id, reason=entry.reason)


async def post_replay(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    await replay_dead_letter(request.app[STATE], entry_id)
    return json_answer(Replayed(id=entry_id))


async def purge_dead_letter(state: ServerState, entry_id: str) -> None:
    removed = await _in_thread(state, "purge", dead_letters(state).remove, [entry_id])
    if not removed:
        raise Refused(404, [f"id: no dead letter {entry_id!r}"])
    log.info("dead_letter.purged", id=entry_id)


async def delete_dead_letter(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    await purge_dead_letter(request.app[STATE], entry_id)
    return json_answer(Purged(id=entry_id))


# -- The queue overview ------------------------------------------------------------------------


def _age_s(body: bytes | str | None, now_ms: int) -> float | None:
    if body is None:
        return None
    try:
        stamp = orjson.loads(body).get("message_timestamp")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(stamp, int):
        return None
    return round(max(0, now_ms - stamp) / 1000, 3)


async def overview(state: ServerState) -> QueueOverview:
    keys, queue = state.keys, state.settings.queue
    now = time.time()
    minutes = window(now)
    names = [lane_queue(queue, lane) for lane in LANES]
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(keys.queue(name))
                pipe.lindex(keys.queue(name), 0)
                pipe.llen(keys.delay_queue(name))
            pipe.hlen(keys.dead_letters)
            pipe.mget([keys.throughput("sent", m) for m in minutes])
            pipe.mget([keys.throughput("dead", m) for m in minutes])
            *per_lane, dead, sent_raw, dead_raw = await asyncio.wait_for(
                pipe.execute(), redis_deadline_s(state.settings)
            )
        queues: list[QueueDepth] = []
        for index, name in enumerate(names):
            depth, head, delayed = per_lane[index * 3 : index * 3 + 3]
            body = None
            if head is not None:
                body = await asyncio.wait_for(
                    state.redis.hget(keys.queue_messages(name), head),
                    redis_deadline_s(state.settings),
                )
            queues += [
                QueueDepth(
                    name=name,
                    lane=LANES[index],
                    depth=int(depth),
                    oldest_age_s=_age_s(body, int(now * 1000)),
                ),
                QueueDepth(
                    name=f"{name}.DQ", lane=LANES[index], depth=int(delayed), oldest_age_s=None
                ),
            ]
    except REDIS_FAILURES as exc:
        log.error("ops.failed", what="overview", error=redis_error(state.settings, exc))
        raise Refused(503, UNAVAILABLE) from None
    sent = counts(sent_raw)
    full = sent[:-1]  # the current minute is still counting
    return QueueOverview(
        queues=queues,
        dead_letters=int(dead),
        rates=Rates(
            sent_last_minute=full[-1],
            sent_per_minute_5m=round(sum(full[-5:]) / 5, 2),
            sent_last_hour=sum(sent),
            dead_last_hour=sum(counts(dead_raw)),
        ),
        sent_per_minute=sent[-WINDOW_MINUTES:],
    )


async def get_queues(request: web.Request) -> web.Response:
    return json_answer(await overview(request.app[STATE]))


# -- Metrics -----------------------------------------------------------------------------------


async def _depths(state: ServerState) -> dict[str, int] | None:
    """Depths summed over both lanes' queues (the worker's /metrics has them by lane)."""
    names = [lane_queue(state.settings.queue, lane) for lane in LANES]
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(state.keys.queue(name))
                pipe.llen(state.keys.delay_queue(name))
                pipe.zcard(state.keys.schedule(name))
            pipe.hlen(state.keys.dead_letters)
            answers = await asyncio.wait_for(pipe.execute(), redis_deadline_s(state.settings))
    except REDIS_FAILURES as exc:
        log.warning("metrics.redis_failed", error=redis_error(state.settings, exc))
        return None
    lanes = [answers[index * 3 : index * 3 + 3] for index in range(len(names))]
    return {
        "queue": sum(int(lane[0]) for lane in lanes),
        "delayed": sum(int(lane[1]) for lane in lanes),
        "scheduled": sum(int(lane[2]) for lane in lanes),
        "dead_letters": int(answers[-1]),
    }


async def get_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body, content_type = state.metrics.render(await _depths(state), request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


# -- Probes ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers. Never Redis: an outage must not restart the pods."""
    return json_answer({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis answers PING and the notification templates are loaded."""
    state = request.app[STATE]
    try:
        await asyncio.wait_for(state.redis.ping(), redis_deadline_s(state.settings))
    except REDIS_FAILURES as exc:
        return json_answer(
            {"ok": False, "errors": [f"redis: {redis_error(state.settings, exc)}"]}, 503
        )
    return json_answer({"ok": True, "templates": state.templates})
