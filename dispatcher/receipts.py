"""Exactly-once sending: a receipt per intent id, and a claim while one worker sends it.

A receipt (Catapush `messageId`, time) is written when Catapush accepts an intent; any later
copy of that intent (a redelivery, a retry, a replay) finds it and is not sent again. The
claim, held only while sending, keeps two workers from sending the same intent at once; it
expires so that a worker killed mid-send cannot block the intent for ever.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import orjson
import redis.asyncio as aioredis

from dispatcher.keys import Keys
from dispatcher.throughput import stage_count

DEFAULT_RECEIPT_TTL_S = 30 * 24 * 3600

# KEYS: receipt, claim. ARGV: owner, claim ttl ms.
# Returns the receipt if there is one, else 1 if the claim was taken (or is the owner's
# already), else 0 (busy).
_CLAIM = """
local receipt = redis.call('get', KEYS[1])
if receipt then return receipt end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('get', KEYS[2]) == ARGV[1] then
    redis.call('pexpire', KEYS[2], ARGV[2])
    return 1
end
return 0
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
        return orjson.dumps(asdict(self))

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
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, intent_id: str, owner: str | None = None) -> Claim:
        """One round trip: the receipt if the intent went out already, else try to claim it.

        An `owner` that stays the same when an attempt runs again (after Redis failed under
        it) finds its own claim held, not busy: the claim may have been taken by a call whose
        answer was lost, and waiting for it to expire would hold the intent for nothing.
        """
        owner = owner or secrets.token_hex(8)
        answer = await self._claim(
            keys=[self._keys.receipt(intent_id), self._keys.claim(intent_id)],
            args=[owner, self._claim_ttl_ms],
        )
        if isinstance(answer, bytes | str):
            return Claim(ClaimState.ALREADY_SENT, owner, Receipt.from_json(answer))
        return Claim(ClaimState.CLAIMED if answer == 1 else ClaimState.BUSY, owner)

    async def record(self, receipt: Receipt) -> None:
        """Store the receipt. The claim is left to expire: every claim looks at the receipt
        first, so a stale claim never holds anything up, and one command is saved."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                self._keys.receipt(receipt.intent_id), receipt.to_json(), ex=self._receipt_ttl_s
            )
            # The minute's send counter, for the console's throughput plot.
            stage_count(pipe, self._keys, "sent")
            await pipe.execute()

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
