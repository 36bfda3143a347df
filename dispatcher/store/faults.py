"""How a worker speaks of a failed Redis call: its one-line description, and how often a
still-open failure of that kind is worth a log line. Pure."""

from __future__ import annotations

from redis.exceptions import RedisError

from dispatcher.store.connection import classify

# Redis away (restart, failover, network): a line every few seconds while it lasts.
UNAVAILABLE_REPEAT_S = 5.0
# Redis refusing us (password, database): only ops can mend it, a line a minute.
REFUSED_REPEAT_S = 60.0


def describe(exc: RedisError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def repeat_s_for(exc: RedisError) -> float:
    return REFUSED_REPEAT_S if classify(exc) == "refused" else UNAVAILABLE_REPEAT_S
