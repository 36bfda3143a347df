"""The Catapush client and the shared token cache, against the sandbox and a real Redis."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis

from dispatcher.client import CatapushClient
from dispatcher.errors import (
    CatapushRejected,
    CatapushTimeout,
    CatapushUnreachable,
    TokenUnavailable,
)
from dispatcher.intents import CatapushMessage
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PERMANENT_TOKEN
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.tokens import (
    OAuthTokenSource,
    PermanentToken,
    SharedTokenCache,
)


def message(ref: str, identifier: str = "alice") -> CatapushMessage:
    return CatapushMessage.model_validate(
        {
            "mobileAppId": 1,
            "text": "hi",
            "messageRef": ref,
            "recipients": [{"identifier": identifier}],
        }
    )


def test_one_client_under_heavy_concurrency_delivers_every_message_once(
    sandbox: SandboxProcess,
) -> None:
    """500 concurrent sends on one client reach the API once each, none lost or doubled."""
    sandbox.admin.set_latency(20)

    async def scenario() -> list[str]:
        client = CatapushClient(
            sandbox.base_url, tokens=PermanentToken(DEFAULT_PERMANENT_TOKEN), timeout_s=10
        )
        try:
            accepted = await asyncio.gather(
                *(client.send(message(f"concurrent-{n:04d}")) for n in range(500))
            )
        finally:
            await client.aclose()
        return [answer.message_id for answer in accepted]

    message_ids = asyncio.run(scenario())
    assert len(set(message_ids)) == 500
    refs = Counter(entry["messageRef"] for entry in sandbox.admin.requests(kind="messages"))
    assert len(refs) == 500
    assert set(refs.values()) == {1}


def test_error_answers_become_typed_errors(sandbox: SandboxProcess) -> None:
    """A Catapush error body becomes CatapushRejected with status, title, detail and Retry-After."""
    sandbox.admin.add_fault(
        status=403, count=1, title="Forbidden - Wrong authentication", detail="nope"
    )
    sandbox.admin.add_fault(status=429, count=1, retry_after=2)

    async def scenario() -> tuple[CatapushRejected, CatapushRejected]:
        client = CatapushClient(
            sandbox.base_url, tokens=PermanentToken(DEFAULT_PERMANENT_TOKEN), timeout_s=10
        )
        try:
            with pytest.raises(CatapushRejected) as forbidden:
                await client.send(message("typed-error-1"))
            with pytest.raises(CatapushRejected) as limited:
                await client.send(message("typed-error-2"))
        finally:
            await client.aclose()
        return forbidden.value, limited.value

    forbidden, limited = asyncio.run(scenario())
    assert (forbidden.status_code, forbidden.title, forbidden.detail) == (
        403,
        "Forbidden - Wrong authentication",
        "nope",
    )
    assert limited.status_code == 429
    assert limited.retry_after_s == 2


def test_timeouts_and_dropped_connections_are_translated(sandbox: SandboxProcess) -> None:
    """A slow answer raises CatapushTimeout and a dropped connection CatapushUnreachable."""
    sandbox.admin.add_fault(latency_ms=2_000, count=1)
    sandbox.admin.add_fault(drop=True, count=1)

    async def scenario() -> None:
        client = CatapushClient(
            sandbox.base_url, tokens=PermanentToken(DEFAULT_PERMANENT_TOKEN), timeout_s=0.5
        )
        try:
            with pytest.raises(CatapushTimeout):
                await client.send(message("slow-answer"))
            with pytest.raises(CatapushUnreachable):
                await client.send(message("dropped-answer"))
        finally:
            await client.aclose()

    asyncio.run(scenario())


def _cache(
    redis_url: str, keys: Keys, sandbox: SandboxProcess
) -> tuple[SharedTokenCache, OAuthTokenSource, aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    source = OAuthTokenSource(
        sandbox.base_url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, timeout_s=5
    )
    return SharedTokenCache(client, keys, source, fingerprint=source.fingerprint), source, client


def test_many_callers_in_many_processes_fetch_one_token(
    redis_server: LocalRedis, sandbox: SandboxProcess, namespace: str
) -> None:
    """Four caches (as four processes) with 50 callers each, all cold, make one OAuth request."""
    keys = Keys(namespace)

    async def scenario() -> set[str]:
        parts = [_cache(redis_server.url, keys, sandbox) for _ in range(4)]
        try:
            tokens = await asyncio.gather(
                *(cache.token() for cache, _, _ in parts for _ in range(50))
            )
        finally:
            for _, source, client in parts:
                await source.aclose()
                await client.aclose()
        return set(tokens)

    assert len(asyncio.run(scenario())) == 1
    assert sandbox.admin.stats()["oauth_requests"] == 1


def test_a_stale_token_never_drops_the_fresh_one(
    redis_server: LocalRedis, sandbox: SandboxProcess, namespace: str
) -> None:
    """Invalidating an old token after another worker refreshed leaves the new token cached."""
    keys = Keys(namespace)

    async def scenario() -> tuple[str, str, str]:
        (first, source_a, client_a), (second, source_b, client_b) = (
            _cache(redis_server.url, keys, sandbox),
            _cache(redis_server.url, keys, sandbox),
        )
        try:
            old = await first.token()
            assert await second.token() == old
            await first.rejected(old)
            fresh = await first.token()
            await second.rejected(old)  # the slower worker learns late that `old` expired
            return old, fresh, await second.token()
        finally:
            for closer in (source_a.aclose, source_b.aclose, client_a.aclose, client_b.aclose):
                await closer()

    old, fresh, seen_by_second = asyncio.run(scenario())
    assert fresh != old
    assert seen_by_second == fresh
    assert sandbox.admin.stats()["oauth_requests"] == 2


def test_a_401_refreshes_the_token_and_resends_once(
    redis_server: LocalRedis, sandbox: SandboxProcess, namespace: str
) -> None:
    """After every token expires, one send gets a 401, a new token, and succeeds on the resend."""
    keys = Keys(namespace)

    async def scenario() -> None:
        cache, source, redis_client = _cache(redis_server.url, keys, sandbox)
        client = CatapushClient(sandbox.base_url, tokens=cache, timeout_s=5)
        try:
            await client.send(message("before-expiry"))
            sandbox.admin.expire_tokens()
            await client.send(message("after-expiry"))
        finally:
            await client.aclose()
            await source.aclose()
            await redis_client.aclose()

    asyncio.run(scenario())
    statuses = [
        (entry["messageRef"], entry["status"]) for entry in sandbox.admin.requests(kind="messages")
    ]
    assert statuses == [("before-expiry", 201), ("after-expiry", 401), ("after-expiry", 201)]
    assert sandbox.admin.stats()["oauth_requests"] == 2


def test_refused_credentials_are_a_permanent_token_error(sandbox: SandboxProcess) -> None:
    """Wrong client credentials raise TokenUnavailable marked permanent."""

    async def scenario() -> TokenUnavailable:
        source = OAuthTokenSource(sandbox.base_url, "who", "wrong", timeout_s=5)
        try:
            with pytest.raises(TokenUnavailable) as refused:
                await source()
        finally:
            await source.aclose()
        return refused.value

    error = asyncio.run(scenario())
    assert error.permanent
    assert "invalid_client" in str(error)
