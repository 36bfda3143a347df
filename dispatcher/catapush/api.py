"""Authenticated JSON calls to the Catapush API (users, token revocation), over aiohttp.

Like the message client, a `401` tells the token source the token was refused, takes a fresh
one (one fetch for the whole fleet) and makes the call once more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from dispatcher.client import (
    SessionFactory,
    bearer_headers,
    default_session,
    exchange,
    rejection_from,
)
from dispatcher.errors import CatapushRejected
from dispatcher.logs import get_logger
from dispatcher.tokens import TokenSource

log = get_logger(__name__)


def path_segment(value: str) -> str:
    """`value` as one URL path segment: identifiers may hold '/', '?', '#' or '%'."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str | None
    headers: Mapping[str, str]
    body: bytes
    # The token the answer was given to: revocation drops exactly that one from the cache.
    token: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None

    def rejection(self) -> CatapushRejected:
        return rejection_from(self.status, self.reason, self.headers, self.body)


class CatapushApi:
    """One per event loop; `aclose()` when done."""

    def __init__(
        self,
        base_url: str,
        *,
        tokens: TokenSource,
        timeout_s: float,
        session_factory: SessionFactory = default_session,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        """Any answer Catapush gives; raises `CatapushUnreachable` when none comes."""
        body = None if json is None else orjson.dumps(json)
        token = await self._tokens.token()
        answer = await self._call(method, path, body, params, token)
        if answer.status == 401 and self._tokens.refreshable:
            log.info("token.rejected", status_code=401)
            await self._tokens.rejected(token)
            answer = await self._call(method, path, body, params, await self._tokens.token())
        return answer

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        params: Mapping[str, str | int] | None,
        token: str,
    ) -> Answer:
        if self._session is None:
            # Made on first use: an aiohttp session belongs to the running event loop.
            self._session = self._session_factory()
        headers = bearer_headers(token)
        if body is not None:
            headers["Content-Type"] = "application/json"
        # `encoded=True`: the path was quoted segment by segment already, and aiohttp must
        # not turn an identifier's `%2F` back into a separator.
        url = self._base_url + "/" + path.lstrip("/")
        answer = await exchange(
            self._session,
            method,
            URL(url, encoded=True),
            data=body,
            params=params,
            headers=headers,
            timeout=self._timeout,
        )
        return Answer(answer.status, answer.reason, answer.headers, answer.body, token)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
