"""Exactly-once sending: a receipt per intent id, and a claim while one worker sends it.

A receipt (Catapush `messageId`, time) is written when Catapush accepts an intent; any later
copy of that intent (a redelivery, a retry, a replay) finds it and is not sent again. The
claim, held only while sending, keeps two workers from sending the same intent at once; it
expires so that a worker killed mid-send cannot block the intent for ever.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
import redis.asyncio as aioredis

from dispatcher.store.coalesce import Coalescer
from dispatcher.store.keys import Keys
from dispatcher.store.throughput import COUNTER_TTL_S, minute_of

DEFAULT_RECEIPT_TTL_S = 30 * 24 * 3600

# KEYS: the cancelled set, then receipt and claim of each intent in turn. ARGV: claim ttl
# ms, then for each intent its owner, its id and the id of the intent it is a part of ('' for
# none). Answers, for each intent: its receipt if there is one, else 2 if it or the intent
# it is part of was cancelled, else 1 if the claim was taken (or is the owner's already),
# else 0 (busy).
_CLAIM_MANY = """
local cancelled, ttl = KEYS[1], ARGV[1]
local out = {}
for i = 1, (#KEYS - 1) / 2 do
    local receipt_key, claim_key = KEYS[2 * i], KEYS[2 * i + 1]
    local owner, id, whole = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
    local receipt = redis.call('get', receipt_key)
    if receipt then
        out[i] = receipt
    elseif redis.call('zscore', cancelled, id)
        or (whole ~= '' and redis.call('zscore', cancelled, whole)) then
        out[i] = 2
    elseif redis.call('set', claim_key, owner, 'NX', 'PX', ttl) then
        out[i] = 1
    elseif redis.call('get', claim_key) == owner then
        redis.call('pexpire', claim_key, ttl)
        out[i] = 1
    else
        out[i] = 0
    end
end
return out
"""

# KEYS: the receipt of each intent, then the minute's send counter. ARGV: receipt ttl s,
# counter ttl s, then each receipt. The counter feeds the console's throughput plot.
_RECORD_MANY = """
local count = #KEYS - 1
for i = 1, count do
    redis.call('set', KEYS[i], ARGV[i + 2], 'EX', ARGV[1])
end
redis.call('incrby', KEYS[count + 1], count)
redis.call('expire', KEYS[count + 1], ARGV[2])
return count
"""

# KEYS: claim. ARGV: owner.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Receipt:
    intent_id: str
    message_id: str
    sent_at: str
    attempts: int

    def to_json(self) -> bytes:
        # orjson writes dataclasses itself, several times faster than asdict().
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Receipt:
        data: Any = orjson.loads(raw)
        return cls(
            str(data["intent_id"]),
            str(data["message_id"]),
            str(data["sent_at"]),
            int(data.get("attempts", 1)),
        )


class ClaimState(Enum):
    CLAIMED = "claimed"
    ALREADY_SENT = "already_sent"
    BUSY = "busy"
    CANCELLED = "cancelled"


_CLAIM_STATES = {1: ClaimState.CLAIMED, 2: ClaimState.CANCELLED}


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    owner: str
    receipt: Receipt | None = None


class Receipts:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        claim_ttl_ms: int,
        receipt_ttl_s: int = DEFAULT_RECEIPT_TTL_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._claim_ttl_ms = claim_ttl_ms
        self._receipt_ttl_s = receipt_ttl_s
        self._claim_many = redis.register_script(_CLAIM_MANY)
        self._record_many = redis.register_script(_RECORD_MANY)
        self._release = redis.register_script(_RELEASE)
        # Sends that reach these steps in the same turn of the loop share one Redis call.
        self._claims: Coalescer[tuple[str, str, str], Any] = Coalescer(self._claim_batch)
        self._records: Coalescer[Receipt, None] = Coalescer(self._record_batch)

    async def claim(
        self, intent_id: str, owner: str | None = None, *, part_of: str | None = None
    ) -> Claim:
        """One round trip: the receipt if the intent went out already, else CANCELLED if it
        (or the intent `part_of` names, for a part) was cancelled, else try to claim it.

        An `owner` that stays the same when an attempt runs again (after Redis failed under
        it) finds its own claim held, not busy: the claim may have been taken by a call whose
        answer was lost, and waiting for it to expire would hold the intent for nothing.
        """
        owner = owner or secrets.token_hex(8)
        answer = await self._claims.submit((intent_id, owner, part_of or ""))
        if isinstance(answer, bytes | str):
            return Claim(ClaimState.ALREADY_SENT, owner, Receipt.from_json(answer))
        return Claim(_CLAIM_STATES.get(answer, ClaimState.BUSY), owner)

    async def _claim_batch(self, requests: Sequence[tuple[str, str, str]]) -> list[Any]:
        keys: list[str] = [self._keys.cancelled]
        args: list[Any] = [self._claim_ttl_ms]
        for intent_id, owner, part_of in requests:
            keys += [self._keys.receipt(intent_id), self._keys.claim(intent_id)]
            args += [owner, intent_id, part_of]
        answers: list[Any] = await self._claim_many(keys=keys, args=args)
        return answers

    async def record(self, receipt: Receipt) -> None:
        """Store the receipt. The claim is left to expire: every claim looks at the receipt
        first, so a stale claim never holds anything up, and one command is saved."""
        await self._records.submit(receipt)

    async def _record_batch(self, receipts: Sequence[Receipt]) -> list[None]:
        # One script call, not a pipeline of one SET each: packing every command costs the
        # client more than Redis spends running them.
        counter = self._keys.throughput("sent", minute_of(time.time()))
        await self._record_many(
            keys=[*(self._keys.receipt(receipt.intent_id) for receipt in receipts), counter],
            args=[
                self._receipt_ttl_s,
                COUNTER_TTL_S,
                *(receipt.to_json() for receipt in receipts),
            ],
        )
        return [None] * len(receipts)

    async def release(self, intent_id: str, owner: str) -> None:
        await self._release(keys=[self._keys.claim(intent_id)], args=[owner])


class ReceiptReader:
    """Synchronous reads for the CLI and tests."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def get(self, intent_id: str) -> Receipt | None:
        raw = self._redis.get(self._keys.receipt(intent_id))
        return None if raw is None else Receipt.from_json(raw)
