"""Catapush over HTTP: `POST /messages`, answers translated into the dispatcher's errors.

One `CatapushClient` per worker process, used by every coroutine of that process's event
loop. Concurrency is deliberate: a single asyncio loop owns the client, so no HTTP connection
is ever shared between threads (a sync `httpx.Client` shared by threads lost messages under
load, httpcore issue 1110). The transport and the auth are injected so tests can swap them.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from dispatcher import __version__
from dispatcher.errors import CatapushRejected, CatapushTimeout, CatapushUnreachable
from dispatcher.intents import Attachment, CatapushMessage

USER_AGENT = f"catapush-dispatcher/{__version__}"
DEFAULT_MAX_CONNECTIONS = 256


@dataclass(frozen=True, slots=True)
class Accepted:
    """Catapush accepted the message (`201`)."""

    message_id: str
    created_at: str | None


def default_transport(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> httpx.AsyncBaseTransport:
    """aiohttp under httpx: its pool stays fast with many concurrent requests."""
    from httpx_aiohttp import AiohttpTransport

    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        trust_env=False,
    )
    return transport


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def rejection_from(response: httpx.Response) -> CatapushRejected:
    """Build the error for a non-2xx answer, tolerating bodies that are not Catapush's JSON."""
    title = response.reason_phrase or "Error"
    detail = ""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        detail = response.text[:500]
    else:
        if isinstance(body, dict):
            title = str(body.get("title") or title)
            detail = str(body.get("detail") or body.get("error") or "")
    return CatapushRejected(
        response.status_code,
        title,
        detail,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
    )


class CatapushClient:
    """Sends messages to Catapush; raises `CatapushRejected` or `CatapushUnreachable`."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            auth=auth,
            timeout=timeout_s,
            transport=transport if transport is not None else default_transport(),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            trust_env=False,
        )

    async def send(
        self, message: CatapushMessage, attachment: Attachment | None = None
    ) -> Accepted:
        body = orjson.dumps(message.to_wire())
        try:
            if attachment is None:
                response = await self._http.post(
                    "messages", content=body, headers={"Content-Type": "application/json"}
                )
            else:
                response = await self._http.post(
                    "messages",
                    data={"metadata": body.decode()},
                    files={
                        "file": (
                            attachment.filename,
                            attachment.content(),
                            attachment.content_type,
                        )
                    },
                )
        except httpx.TimeoutException as exc:
            raise CatapushTimeout(f"no answer from Catapush in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise CatapushUnreachable(f"could not reach Catapush: {exc!r}") from exc
        if response.status_code != 201:
            raise rejection_from(response)
        return _accepted(response)

    async def aclose(self) -> None:
        await self._http.aclose()


def _accepted(response: httpx.Response) -> Accepted:
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return Accepted(
        message_id=str(body.get("messageId") or ""),
        created_at=body.get("createdAt"),
    )
