"""Lanes: transactional and bulk intents, each on a queue of its own, under one rate limit. Pure.

A campaign enqueued first must not hold a login code behind it. Each lane is its own queue in
dramatiq's format: transactional keeps the configured queue name (`DISPATCHER_QUEUE`), so
producers written before lanes keep working; bulk is `<queue>.bulk`. Every worker serves
both, and the rate limiter grants its slots transactional first, except that while both lanes
wait, bulk keeps its share (`DISPATCHER_BULK_SHARE`); while transactional is idle, bulk has
every slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

Lane = Literal["transactional", "bulk"]
TRANSACTIONAL: Lane = "transactional"
BULK: Lane = "bulk"
LANES: tuple[Lane, ...] = get_args(Lane)
BULK_SUFFIX = ".bulk"
DEFAULT_BULK_SHARE = 0.2
# Of a worker process's in-flight slots, this part is never taken by bulk, so a
# transactional intent always finds one free.
TRANSACTIONAL_RESERVE_SHARE = 0.25


def lane_queue(queue_name: str, lane: Lane) -> str:
    """The queue of `lane`, for the configured (transactional) queue `queue_name`."""
    return queue_name + BULK_SUFFIX if lane == BULK else queue_name


def lane_of_priority(priority: Any, is_marketing: Any) -> Lane:
    """The lane of an intent: its `priority`; without one, bulk for a marketing message."""
    if priority in LANES:
        return priority  # type: ignore[no-any-return]
    return BULK if is_marketing is True else TRANSACTIONAL


def lane_of(intent: Mapping[str, Any]) -> Lane:
    """The lane of an intent as it travels (its wire form, camelCase keys)."""
    return lane_of_priority(intent.get("priority"), intent.get("isMarketing"))


def parse_lanes(names: Iterable[str]) -> tuple[Lane, ...]:
    """Lane names as given on the command line, in serving order; `ValueError` names a bad
    one."""
    chosen: list[Lane] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part not in LANES:
                raise ValueError(f"unknown lane {part!r}; the lanes are {', '.join(LANES)}")
            if part not in chosen:
                chosen.append(part)
    if not chosen:
        return LANES
    return tuple(lane for lane in LANES if lane in chosen)


def next_lane(
    transactional_waiting: bool,
    bulk_waiting: bool,
    *,
    granted: int,
    bulk_granted: int,
    share: float,
) -> Lane | None:
    """Which lane the next rate slot goes to, or None when nobody waits.

    `granted` and `bulk_granted` count the slots given while both lanes were waiting: only
    those, so a long bulk-only spell leaves no debt that would starve bulk later, and a
    transactional-only one none that would let bulk jump ahead.
    """
    if not bulk_waiting:
        return TRANSACTIONAL if transactional_waiting else None
    if not transactional_waiting:
        return BULK
    return BULK if bulk_granted < share * granted else TRANSACTIONAL


class GrantShare:
    """The counts `next_lane` decides by; one per rate limiter."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.granted = 0
        self.bulk_granted = 0

    def choose(self, transactional_waiting: bool, bulk_waiting: bool) -> Lane | None:
        lane = next_lane(
            transactional_waiting,
            bulk_waiting,
            granted=self.granted,
            bulk_granted=self.bulk_granted,
            share=self.share,
        )
        if transactional_waiting and bulk_waiting:
            self.granted += 1
            if lane == BULK:
                self.bulk_granted += 1
        return lane


def bulk_cap(concurrency: int) -> int:
    """In-flight slots bulk may hold in a process: all but the transactional reserve."""
    reserve = max(1, round(concurrency * TRANSACTIONAL_RESERVE_SHARE))
    return max(1, concurrency - reserve)


def bulk_floor(concurrency: int) -> int:
    """In-flight slots kept for bulk while it has messages, so it always has sends waiting
    for its share of the rate."""
    return max(1, concurrency // 8)
