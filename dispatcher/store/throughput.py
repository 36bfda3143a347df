"""Events per minute, counted in Redis so that `serve` can plot the fleet's throughput.

Each event (an intent sent, an intent dead-lettered) increments the counter of its minute in
the same transaction that records it; counters expire after two hours, so the store costs
at most 120 small keys per kind.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal

from dispatcher.store.keys import Keys

Kind = Literal["sent", "dead"]
KINDS: Final[tuple[Kind, ...]] = ("sent", "dead")
COUNTER_TTL_S: Final = 2 * 3600
WINDOW_MINUTES: Final = 60


def minute_of(epoch_s: float) -> int:
    return int(epoch_s // 60)


def stage_count(
    pipe: Any, keys: Keys, kind: Kind, now_s: float | None = None, *, amount: int = 1
) -> None:
    """Queue the increment of this minute's counter on a pipeline (sync or async)."""
    key = keys.throughput(kind, minute_of(time.time() if now_s is None else now_s))
    pipe.incrby(key, amount)
    pipe.expire(key, COUNTER_TTL_S)


def window(now_s: float, minutes: int = WINDOW_MINUTES) -> list[int]:
    """The minutes of the last `minutes`, oldest first, the current (partial) one last."""
    current = minute_of(now_s)
    return list(range(current - minutes + 1, current + 1))


def counts(raw: list[Any]) -> list[int]:
    """MGET answers as numbers; a missing counter is a minute with nothing."""
    return [0 if value is None else int(value) for value in raw]
