"""The dead-letter store: intents that could not be sent, kept in Redis until purged.

Unlike dramatiq's own dead-letter set, entries never expire: ops list, inspect, replay or
purge them. An entry is keyed by the intent id (or a generated id for a message that was not
even a readable intent), so dead-lettering the same intent again replaces its entry.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis

from dispatcher.outcome import DeadReason
from dispatcher.store.keys import Keys
from dispatcher.store.throughput import stage_count

REASONS: tuple[DeadReason, ...] = ("rejected", "invalid", "exhausted", "expired")
# Entries read per round trip while paging or counting.
PAGE_CHUNK = 200


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    id: str
    reason: DeadReason
    status_code: int | None
    title: str
    detail: str
    attempts: int
    dead_at: str
    intent: Any  # the intent as JSON, or the raw text of a message that was not one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetterEntry:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)

    @classmethod
    def create(
        cls,
        *,
        intent_id: str | None,
        reason: DeadReason,
        status_code: int | None,
        title: str,
        detail: str,
        attempts: int,
        intent: Any,
        now: datetime | None = None,
    ) -> DeadLetterEntry:
        moment = now or datetime.now(UTC)
        return cls(
            id=intent_id or f"invalid-{uuid.uuid4().hex}",
            reason=reason,
            status_code=status_code,
            title=title,
            detail=detail,
            attempts=attempts,
            dead_at=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            intent=intent,
        )


def _score(entry: DeadLetterEntry) -> float:
    return datetime.fromisoformat(entry.dead_at.replace("Z", "+00:00")).timestamp()


def _stage_add(pipe: Any, keys: Keys, entry: DeadLetterEntry) -> None:
    """Queue on a pipeline (sync or async) the two writes that store an entry."""
    pipe.hset(keys.dead_letters, entry.id, entry.to_json())
    pipe.zadd(keys.dead_letter_index, {entry.id: _score(entry)})
    stage_count(pipe, keys, "dead")


class AsyncDeadLetters:
    """Writes from the worker's event loop."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    async def add(self, entry: DeadLetterEntry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            _stage_add(pipe, self._keys, entry)
            await pipe.execute()


class DeadLetters:
    """Synchronous access for the worker threads, the CLI and tests."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def add(self, entry: DeadLetterEntry) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            _stage_add(pipe, self._keys, entry)
            pipe.execute()

    def get(self, entry_id: str) -> DeadLetterEntry | None:
        raw = self._redis.hget(self._keys.dead_letters, entry_id)
        return None if raw is None else DeadLetterEntry.from_json(raw)

    def list(self, reason: DeadReason | None = None) -> list[DeadLetterEntry]:
        """Oldest first."""
        ids = cast(list[bytes], self._redis.zrange(self._keys.dead_letter_index, 0, -1))
        if not ids:
            return []
        entries = [
            DeadLetterEntry.from_json(raw)
            for raw in self._redis.hmget(self._keys.dead_letters, ids)
            if raw is not None
        ]
        return [entry for entry in entries if reason is None or entry.reason == reason]

    def page(
        self, reason: DeadReason | None, start: int, limit: int
    ) -> tuple[builtins.list[DeadLetterEntry], int | None]:
        """Up to `limit` entries, oldest first, from position `start` of the index; and the
        position to ask for next (None at the end). Filtering by reason reads on in chunks
        until the page is full."""
        found: builtins.list[DeadLetterEntry] = []
        position = start
        chunk = max(limit, PAGE_CHUNK)
        while len(found) < limit:
            ids = cast(
                builtins.list[bytes],
                self._redis.zrange(self._keys.dead_letter_index, position, position + chunk - 1),
            )
            if not ids:
                return found, None
            raws = self._redis.hmget(self._keys.dead_letters, ids)
            for offset, raw in enumerate(raws):
                if raw is None:
                    continue
                entry = DeadLetterEntry.from_json(raw)
                if reason is None or entry.reason == reason:
                    found.append(entry)
                    if len(found) == limit:
                        following = position + offset + 1
                        more = self._redis.zcard(self._keys.dead_letter_index) > following
                        return found, following if more else None
            position += len(ids)
        return found, position

    def counts(self) -> dict[str, int]:
        """Entries by reason, every reason present (0 when none)."""
        totals: dict[str, int] = dict.fromkeys(REASONS, 0)
        for _, raw in self._redis.hscan_iter(self._keys.dead_letters, count=PAGE_CHUNK):
            reason = DeadLetterEntry.from_json(raw).reason
            totals[reason] = totals.get(reason, 0) + 1
        return totals

    def remove(self, entry_ids: Iterable[str]) -> int:
        ids = list(entry_ids)
        if not ids:
            return 0
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.dead_letters, *ids)
            pipe.zrem(self._keys.dead_letter_index, *ids)
            removed, _ = pipe.execute()
        return int(removed)

    def count(self) -> int:
        return int(self._redis.hlen(self._keys.dead_letters))
