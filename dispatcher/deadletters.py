"""The dead-letter store: intents that could not be sent, kept in Redis until purged.

Unlike dramatiq's own dead-letter set, entries never expire: ops list, inspect, replay or
purge them. An entry is keyed by the intent id (or a generated id for a message that was not
even a readable intent), so dead-lettering the same intent again replaces its entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis

from dispatcher.keys import Keys
from dispatcher.outcome import DeadReason

REASONS: tuple[DeadReason, ...] = ("rejected", "invalid", "exhausted", "expired")


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
