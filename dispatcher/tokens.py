"""One Catapush access token for every worker process and thread, cached in Redis.

Catapush returns no `expires_in`, so a token is used until Catapush answers `401`. Then the
token that failed is dropped only if it is still the cached one (compare and delete: a
slower worker must not drop the fresh token another worker just fetched), one caller fetches
a new token (single flight, under a lock that expires so a crashed holder cannot block the
fleet), and the request is retried once.

The token is cached under a fingerprint of the API URL and credentials it came from, so a
worker started with rotated credentials (or pointed at another API) fetches its own token at
once instead of sending with the one the old credentials obtained.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatcher.errors import TokenUnavailable
from dispatcher.logs import get_logger
from dispatcher.store.keys import Keys
from dispatcher.worker.observer import NO_OBSERVER, WorkerObserver

DEFAULT_LOCK_TTL_MS = 15_000
DEFAULT_WAIT_DEADLINE_S = 20.0
DEFAULT_POLL_INTERVAL_S = 0.02
# 64 bits: collisions between the few credentials one namespace ever sees are out of reach.
FINGERPRINT_HEX_CHARS = 16
# NUL cannot occur in an environment variable, so no two (url, id, secret) join the same way.
_FINGERPRINT_SEPARATOR = "\0"

log = get_logger(__name__)

# Deletes KEYS[1] only if it still holds ARGV[1].
_COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

TokenFetcher = Callable[[], Awaitable[str]]


def credentials_fingerprint(base_url: str, client_id: str, client_secret: str) -> str:
    """Names the credentials in Redis keys and logs; the secret cannot be read back from it."""
    joined = _FINGERPRINT_SEPARATOR.join((base_url.rstrip("/"), client_id, client_secret))
    # os.environ turns bytes that are not UTF-8 into lone surrogates; they still name a secret.
    data = joined.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_HEX_CHARS]


def token_digest(token: str) -> str:
    """Tells tokens apart in Redis without storing a second copy of the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:FINGERPRINT_HEX_CHARS]


class OAuthTokenSource:
    """Fetches a temporary token with the client-credentials grant."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "catapush-dispatcher",
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self.fingerprint = credentials_fingerprint(base_url, client_id, client_secret)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            trust_env=False,
        )

    async def __call__(self) -> str:
        try:
            response = await self._http.post(
                "auth/oauth",
                params={
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "grant_type": "client_credentials",
                },
            )
        except httpx.HTTPError as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        try:
            body: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        if response.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
            return str(body["access_token"])
        error = body.get("error") if isinstance(body, dict) else None
        # 400 means the credentials or the request are wrong: retrying cannot help.
        permanent = response.status_code == 400
        raise TokenUnavailable(
            f"token endpoint answered {response.status_code} {error or response.reason_phrase}",
            permanent=permanent,
        )

    async def aclose(self) -> None:
        await self._http.aclose()


class TokenSource(Protocol):
    """Where the client takes its bearer token from, and reports a refused one to."""

    @property
    def refreshable(self) -> bool: ...

    async def token(self) -> str: ...

    async def rejected(self, token: str) -> None: ...


class SharedTokenCache:
    """The token in Redis, memoised in this process until a `401` proves it stale."""

    refreshable = True

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        fetch: TokenFetcher,
        *,
        fingerprint: str,
        lock_ttl_ms: int = DEFAULT_LOCK_TTL_MS,
        wait_deadline_s: float = DEFAULT_WAIT_DEADLINE_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        observer: WorkerObserver = NO_OBSERVER,
    ) -> None:
        self._redis = redis
        self._observer = observer
        self._token_key = keys.token(fingerprint)
        self._lock_key = keys.token_lock(fingerprint)
        self._meta_key = keys.token_meta(fingerprint)
        self._fingerprint = fingerprint
        self._fetch = fetch
        self._lock_ttl_ms = lock_ttl_ms
        self._wait_deadline_s = wait_deadline_s
        self._poll_interval_s = poll_interval_s
        self._memo: str | None = None
        self._local = asyncio.Lock()
        self._compare_and_delete = redis.register_script(_COMPARE_AND_DELETE)

    async def token(self) -> str:
        memo = self._memo
        if memo is not None:
            return memo
        # One coroutine per process goes to Redis; the others wait for its answer.
        async with self._local:
            if self._memo is None:
                self._memo = await self._shared_token()
            return self._memo

    async def rejected(self, token: str) -> None:
        """Forget `token` here and in Redis, unless Redis already holds a newer one."""
        if self._memo == token:
            self._memo = None
        try:
            dropped = await self._compare_and_delete(keys=[self._token_key], args=[token])
        except RedisError as exc:
            raise TokenUnavailable(f"token cache unreachable: {exc!r}") from exc
        if dropped:
            log.info("token.invalidated")

    async def _shared_token(self) -> str:
        deadline = time.monotonic() + self._wait_deadline_s
        try:
            while True:
                cached = await self._redis.get(self._token_key)
                if cached is not None:
                    return _text(cached)
                owner = secrets.token_hex(8)
                if await self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms):
                    try:
                        # Another worker may have stored a token and released the lock
                        # between our read and our lock: look once more before fetching.
                        cached = await self._redis.get(self._token_key)
                        if cached is not None:
                            return _text(cached)
                        return await self._refresh()
                    finally:
                        await self._compare_and_delete(keys=[self._lock_key], args=[owner])
                if time.monotonic() >= deadline:
                    raise TokenUnavailable(
                        f"no token appeared within {self._wait_deadline_s:.0f} s while another "
                        "worker was fetching one"
                    )
                await asyncio.sleep(self._poll_interval_s)
        except RedisError as exc:
            raise TokenUnavailable(f"token cache unreachable: {exc!r}") from exc

    async def _refresh(self) -> str:
        started = time.monotonic()
        try:
            token = await self._fetch()
        except TokenUnavailable:
            self._observer.token_refreshed(ok=False)
            raise
        self._observer.token_refreshed(ok=True)
        # The meta names its token by a digest, so a reader can tell whether it still fits.
        meta = orjson.dumps({"fetched_at": time.time(), "token_sha256": token_digest(token)})
        await self._redis.mset({self._token_key: token, self._meta_key: meta})
        log.info(
            "token.refreshed",
            credentials=self._fingerprint,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return token


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PermanentToken:
    """A permanent token from the Catapush panel: no OAuth, nothing to refresh."""

    refreshable = False

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def rejected(self, token: str) -> None:
        return None
