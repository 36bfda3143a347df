"""The queue overview: per lane, what waits and for how long, what is scheduled or retrying;
and the dead letters by reason. Read from Redis for `dispatcher status`, the worker's
`/metrics` and the server's `GET /v1/queues`.

Depths are one call each. The age of a lane's oldest message is that of the head of its list
(its body's `message_timestamp`, written by whoever enqueued it). Scheduled is every intent
held on the lane's schedule until its `sendAt` (`<queue>.SQ`), plus the first attempts a
dramatiq producer put on the delay queue with a delay; retrying is every message on the
delay queue past its first attempt, held by a worker or not (their bodies stay in
`<queue>.DQ.msgs` until due). Telling the two apart takes a scan of those bodies, as counting
dead letters by reason takes a scan of the store: cheap for the few a healthy system holds,
and an ops read, not a hot path.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from dispatcher.lanes import LANES, Lane, lane_queue
from dispatcher.messages import now_ms
from dispatcher.store.deadletters import REASONS
from dispatcher.store.keys import Keys

# Entries read per HSCAN call.
SCAN_BATCH = 500
_REASON = re.compile(rb'"reason"\s*:\s*"([a-z_]+)"')


@dataclass(frozen=True, slots=True)
class LaneFigures:
    lane: Lane
    queue: str
    depth: int
    oldest_age_s: float | None
    scheduled: int
    retrying: int


@dataclass(frozen=True, slots=True)
class Overview:
    lanes: tuple[LaneFigures, ...]
    dead_letters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lanes": [asdict(figures) for figures in self.lanes],
            "dead_letters": dict(self.dead_letters),
        }


def age_s(body: bytes | None, at_ms: int) -> float | None:
    """Seconds since the message `body` was enqueued; None when it does not say."""
    if body is None:
        return None
    try:
        stamp = orjson.loads(body).get("message_timestamp")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    return round(max(0, at_ms - stamp) / 1000, 3)


def is_retry(body: bytes) -> bool:
    """Whether a queued message is past its first attempt (dramatiq's `kwargs.attempt`)."""
    if b'"attempt"' not in body:
        return False
    try:
        attempt = orjson.loads(body).get("kwargs", {}).get("attempt", 1)
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(attempt, int) and attempt > 1


def dead_letter_reason(raw: bytes) -> str:
    match = _REASON.search(raw)
    return match.group(1).decode() if match else "unknown"


async def read_overview(
    redis: Any, keys: Keys, queue_name: str, *, lanes: tuple[Lane, ...] = LANES
) -> Overview:
    """The overview of the lanes of `queue_name` (the configured, transactional queue)."""
    names = [lane_queue(queue_name, lane) for lane in lanes]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(keys.queue(name))
            pipe.lindex(keys.queue(name), 0)
            pipe.hlen(keys.delay_queue_messages(name))
            pipe.zcard(keys.schedule(name))
        answers = await pipe.execute()
    heads = {
        index: answers[index * 4 + 1]
        for index in range(len(names))
        if answers[index * 4 + 1] is not None
    }
    bodies: dict[int, bytes | None] = {}
    if heads:
        async with redis.pipeline(transaction=False) as pipe:
            for index, head in heads.items():
                pipe.hget(keys.queue_messages(names[index]), head)
            bodies = dict(zip(heads, await pipe.execute(), strict=True))
    at_ms = now_ms()
    figures = []
    for index, (lane, name) in enumerate(zip(lanes, names, strict=True)):
        retrying = 0
        async for _, body in redis.hscan_iter(keys.delay_queue_messages(name), count=SCAN_BATCH):
            retrying += is_retry(body)
        figures.append(
            LaneFigures(
                lane=lane,
                queue=name,
                depth=int(answers[index * 4]),
                oldest_age_s=age_s(bodies.get(index), at_ms),
                # The scan runs after the count: retries added meanwhile must not make the
                # delay queue's first attempts negative.
                scheduled=int(answers[index * 4 + 3])
                + max(0, int(answers[index * 4 + 2]) - retrying),
                retrying=retrying,
            )
        )
    dead: dict[str, int] = dict.fromkeys(REASONS, 0)
    async for _, raw in redis.hscan_iter(keys.dead_letters, count=SCAN_BATCH):
        reason = dead_letter_reason(raw)
        dead[reason] = dead.get(reason, 0) + 1
    return Overview(tuple(figures), dead)


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_overview(overview: Overview) -> list[str]:
    """The overview for humans: a table of lanes, then the dead letters by reason."""
    width = max([len("queue"), *(len(figures.queue) for figures in overview.lanes)])
    lines = [
        f"{'lane':<14} {'queue':<{width}} {'depth':>9} {'oldest':>9} "
        f"{'scheduled':>9} {'retrying':>9}"
    ]
    for figures in overview.lanes:
        lines.append(
            f"{figures.lane:<14} {figures.queue:<{width}} {figures.depth:>9} "
            f"{_age_text(figures.oldest_age_s):>9} {figures.scheduled:>9} {figures.retrying:>9}"
        )
    dead = overview.dead_letters
    total = sum(dead.values())
    by_reason = ", ".join(f"{reason} {count}" for reason, count in dead.items())
    lines.append(f"dead letters: {total} ({by_reason})")
    return lines
