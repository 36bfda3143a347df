"""`dispatcher token status|revoke`: what the fleet's shared token is, and ending it.

Catapush returns no lifetime with a token, so its expiry is unknown to anyone but Catapush:
the fleet uses a token until Catapush refuses it (`401`), then fetches one new token for
every worker. Revoking (`DELETE /auth/oauth`) ends every token of the account at Catapush;
the cached token is then dropped (compare and delete: a token another worker fetched after
the revocation stays), so the next sends fetch exactly one new token for the fleet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from dispatcher.catapush.accounts import Account
from dispatcher.catapush.api import CatapushApi
from dispatcher.catapush.connect import fingerprint_of, open_account_tokens
from dispatcher.logs import get_logger
from dispatcher.settings import Settings
from dispatcher.store.keys import Keys
from dispatcher.tokens import token_digest

log = get_logger(__name__)

EXPIRY_UNKNOWN = (
    "unknown: Catapush gives no lifetime; the token is used until Catapush refuses it (401), "
    "then one new token is fetched for the fleet"
)


@dataclass(frozen=True, slots=True)
class TokenStatus:
    account: str
    kind: str  # "permanent" or "oauth"
    cached: bool
    fingerprint: str | None = None
    fetched_at: float | None = None
    age_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "kind": self.kind,
            "cached": self.cached,
            "credentials": self.fingerprint,
            "fetched_at": self.fetched_at,
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "expiry": "never (permanent token)" if self.kind == "permanent" else EXPIRY_UNKNOWN,
        }

    def lines(self) -> list[str]:
        if self.kind == "permanent":
            return [
                f"account {self.account}: permanent access token from the settings",
                "cached: no (nothing to fetch)",
                "expiry: never; it changes only when regenerated in the Catapush panel",
            ]
        lines = [f"account {self.account}: OAuth client credentials {self.fingerprint}"]
        if not self.cached:
            lines.append("cached: no (the next send fetches one token for the fleet)")
        elif self.fetched_at is None:
            lines.append("cached: yes (fetched before its age was recorded)")
        else:
            fetched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.fetched_at))
            lines.append(f"cached: yes, fetched {fetched} ({_duration(self.age_s or 0)} ago)")
        lines.append(f"expiry: {EXPIRY_UNKNOWN}")
        return lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def token_status(redis: Any, settings: Settings, account: Account) -> TokenStatus:
    """Read with a synchronous Redis client; never reads the token out."""
    fingerprint = fingerprint_of(settings, account)
    if fingerprint is None:
        return TokenStatus(account.name, "permanent", cached=False)
    keys = Keys(settings.namespace)
    token, meta = redis.mget([keys.token(fingerprint), keys.token_meta(fingerprint)])
    if token is None:
        return TokenStatus(account.name, "oauth", cached=False, fingerprint=fingerprint)
    fetched_at: float | None = None
    try:
        parsed = orjson.loads(meta) if meta is not None else None
    except orjson.JSONDecodeError:
        parsed = None
    text = token.decode() if isinstance(token, bytes) else str(token)
    # Meta written for an older token says nothing about this one.
    if isinstance(parsed, dict) and parsed.get("token_sha256") == token_digest(text):
        value = parsed.get("fetched_at")
        fetched_at = float(value) if isinstance(value, int | float) else None
    age = None if fetched_at is None else max(0.0, time.time() - fetched_at)
    return TokenStatus(account.name, "oauth", True, fingerprint, fetched_at, age)


@dataclass(frozen=True, slots=True)
class Revoked:
    account: str
    dropped_from_cache: bool


async def revoke(settings: Settings, account: Account, redis: aioredis.Redis) -> None:
    """`DELETE /auth/oauth` with the account's token, then drop that token from the cache.
    Raises `CatapushRejected` (Catapush refused) or `CatapushUnreachable`."""
    tokens, close_tokens = open_account_tokens(settings, account, redis)
    api = CatapushApi(settings.catapush_url, tokens=tokens, timeout_s=settings.http_timeout_s)
    try:
        answer = await api.call("DELETE", "auth/oauth")
        if answer.status not in (200, 204):
            raise answer.rejection()
        # Exactly the token that was revoked (compare and delete): one a worker fetched after
        # the revocation stays. A permanent token has no cache to drop.
        await tokens.rejected(answer.token)
    finally:
        await api.aclose()
        await close_tokens()
    log.info("token.revoked", account=account.name)
