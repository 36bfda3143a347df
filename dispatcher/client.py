"""Catapush over HTTP: `POST /messages`, answers translated into the dispatcher's errors.

One `CatapushClient` per worker process, used by every coroutine of that process's event
loop, so no connection is ever shared between threads (a sync `httpx.Client` shared by
threads lost messages under load, httpcore issue 1110). CPU is what bounds a worker, so a
message without an attachment, the worker's every send, goes out over `Http11Pool`: a few
keep-alive HTTP/1.1 connections that write one request and read one answer at a time. On
the sandbox it takes half the worker's CPU per notification that aiohttp's client did
(aiohttp itself cost 0.14 ms a request where httpx over the same transport cost 0.45 ms).
A message with an attachment (multipart) still goes through aiohttp, as do the other API
calls (`catapush.api`). The session factory and the token source are injected, so tests can
swap them.

On `401` the token source is told the token was refused, a fresh one is taken (one fetch
for the whole fleet, see `tokens`), and the send is made once more.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from dispatcher import __version__
from dispatcher.errors import CatapushRejected, CatapushTimeout, CatapushUnreachable
from dispatcher.intents import Attachment, CatapushMessage
from dispatcher.logs import get_logger
from dispatcher.tokens import TokenSource

USER_AGENT = f"catapush-dispatcher/{__version__}"
DEFAULT_MAX_CONNECTIONS = 256
# An idle connection older than this is closed rather than reused: a server or a load
# balancer may have dropped it meanwhile, and a send on a dropped connection fails (aiohttp
# keeps connections alive for the same 15 s).
KEEPALIVE_S = 15.0
# Limits on an answer, whose body is a short JSON object when it comes from Catapush.
MAX_ANSWER_HEAD_BYTES = 64 * 1024
MAX_ANSWER_BODY_BYTES = 4 * 1024 * 1024

log = get_logger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True, slots=True)
class Accepted:
    """Catapush accepted the message (`201`)."""

    message_id: str
    created_at: str | None


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


def rejection_from(
    status_code: int, reason: str | None, headers: Mapping[str, str], body: bytes
) -> CatapushRejected:
    """The error for a non-201 answer, tolerating bodies that are not Catapush's JSON."""
    title = reason or "Error"
    detail = ""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        detail = body.decode("utf-8", errors="replace")[:500]
    else:
        if isinstance(parsed, dict):
            title = str(parsed.get("title") or title)
            detail = str(parsed.get("detail") or parsed.get("error") or "")
    return CatapushRejected(
        status_code,
        title,
        detail,
        retry_after_s=parse_retry_after(headers.get("Retry-After")),
    )


def accepted_from(body: bytes) -> Accepted:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    return Accepted(
        message_id=str(parsed.get("messageId") or ""), created_at=parsed.get("createdAt")
    )


def default_session(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        trust_env=False,
    )


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str | None
    headers: Mapping[str, str]
    body: bytes


def bearer_headers(token: str) -> dict[str, str]:
    """The headers of every authenticated call to Catapush."""
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    data: Any,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
    params: Mapping[str, str | int] | None = None,
) -> _Answer:
    """One request and its whole answer; no answer at all becomes `CatapushTimeout` or
    `CatapushUnreachable`, the one translation of aiohttp's errors for every Catapush call."""
    try:
        async with session.request(
            method, url, data=data, params=params, headers=headers, timeout=timeout
        ) as response:
            return _Answer(
                response.status, response.reason, response.headers, await response.read()
            )
    except TimeoutError as exc:
        raise CatapushTimeout(f"no answer from Catapush in time: {exc!r}") from exc
    except aiohttp.ClientError as exc:
        raise CatapushUnreachable(f"could not reach Catapush: {exc!r}") from exc


class _Malformed(Exception):
    """An answer that is not HTTP/1.1, or breaks a limit."""


def _parse_head(head: bytes) -> tuple[bytes, int, str | None, CIMultiDict[str]]:
    """Version, status, reason and headers of an answer's head (without its blank line)."""
    status_line, *lines = head.split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _Malformed(f"not an HTTP/1.x status line: {status_line[:100]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise _Malformed(f"not a header line: {line[:100]!r}")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    return version, int(code), reason.decode("latin-1") or None, headers


def _dechunk(data: bytearray) -> tuple[bytes, int] | None:
    """A chunked body and the bytes it took, or None while it is incomplete."""
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(data[position:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _Malformed(f"not a chunk size: {size_text[:20]!r}") from None
        if size < 0 or len(body) + size > MAX_ANSWER_BODY_BYTES:
            raise _Malformed("answer body over the limit")
        position = line_end + 2
        if size == 0:
            # Trailers, if any, end with a blank line like the head does.
            if data.startswith(b"\r\n", position):
                return bytes(body), position + 2
            trailers_end = data.find(b"\r\n\r\n", position)
            return None if trailers_end < 0 else (bytes(body), trailers_end + 4)
        if len(data) < position + size + 2:
            return None
        if data[position + size : position + size + 2] != b"\r\n":
            raise _Malformed("chunk not followed by CRLF")
        body += data[position : position + size]
        position += size + 2


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request, then its whole answer."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None
        # Of the answer being read: (status, reason, headers, framing, keep-alive).
        self._head: tuple[int, str | None, CIMultiDict[str], str, bool] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def exchange(self, request: bytes) -> asyncio.Future[_Answer]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head = None
        self.reusable = False
        if self.closed:
            self._waiter.set_exception(CatapushUnreachable("connection closed before the send"))
        else:
            self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for: the connection can no longer be trusted.
            self.close()
            return
        self._buffer += data
        self._advance(eof=False)

    def eof_received(self) -> bool | None:
        self._advance(eof=True)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._advance(eof=True)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                CatapushUnreachable(f"connection closed before a whole answer came: {exc!r}")
            )

    def _advance(self, *, eof: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._parse(eof=eof)
        except _Malformed as exc:
            waiter.set_exception(CatapushUnreachable(f"could not read Catapush's answer: {exc}"))
            self.close()
            return
        if answer is not None:
            waiter.set_result(answer)

    def _parse(self, *, eof: bool) -> _Answer | None:
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_ANSWER_HEAD_BYTES:
                    raise _Malformed("answer head over the limit")
                return None
            version, status, reason, headers = _parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows
            connection = headers.get("Connection", "").lower()
            keep_alive = version == b"HTTP/1.1" and "close" not in connection
            framing = "until-close"
            if status in (204, 304):
                framing = "empty"
            elif "chunked" in headers.get("Transfer-Encoding", "").lower():
                framing = "chunked"
            elif "Content-Length" in headers:
                lengths = set(headers.getall("Content-Length"))
                length = lengths.pop().strip() if len(lengths) == 1 else ""
                if not length.isdigit() or int(length) > MAX_ANSWER_BODY_BYTES:
                    raise _Malformed(f"unusable Content-Length: {sorted(lengths)!r}")
                framing = length
            self._head = (status, reason, headers, framing, keep_alive)
        status, reason, headers, framing, keep_alive = self._head
        if framing == "empty":
            body, taken = b"", 0
        elif framing == "chunked":
            dechunked = _dechunk(buffer)
            if dechunked is None:
                return None
            body, taken = dechunked
        elif framing == "until-close":
            if len(buffer) > MAX_ANSWER_BODY_BYTES:
                raise _Malformed("answer body over the limit")
            if not eof:
                return None
            body, taken, keep_alive = bytes(buffer), len(buffer), False
        else:
            taken = int(framing)
            if len(buffer) < taken:
                return None
            body = bytes(buffer[:taken])
        del buffer[:taken]
        # Anything after the answer was not asked for: do not reuse the connection.
        self.reusable = keep_alive and not buffer and not eof
        return _Answer(status, reason, headers, body)


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to one origin, for requests with a short body; at
    most `max_connections` of them at once. Answers as `exchange` gives them, and fails as
    it does: `CatapushTimeout` when no whole answer came within `timeout_s` (connecting and
    waiting for a free connection included), `CatapushUnreachable` when none can come."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError(f"not an http or https URL: {url!r}")
        self._host = parsed.raw_host
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        # The request line and the Host header, as aiohttp writes them, made once.
        self._request_line = (
            f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
        ).encode()
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._clock = clock
        self._closed = False

    async def post(self, headers: bytes, body: bytes, *, timeout_s: float) -> _Answer:
        """POST `body` with `headers` (ready-made lines, each ending in CRLF)."""
        request = b"".join(
            (
                self._request_line,
                headers,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(timeout_s), self._slots:
                connection = self._take_idle()
                if connection is None:
                    connection = await self._connect()
                answer = await connection.exchange(request)
        except TimeoutError as exc:
            if connection is not None:
                connection.close()
            raise CatapushTimeout(f"no answer from Catapush in time: {exc!r}") from exc
        except OSError as exc:
            if connection is not None:
                connection.close()
            raise CatapushUnreachable(f"could not reach Catapush: {exc!r}") from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        if connection.reusable and not self._closed:
            connection.idle_since = self._clock()
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _take_idle(self) -> _Connection | None:
        # The most recently used first: the others may age out unused.
        oldest_usable = self._clock() - KEEPALIVE_S
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.idle_since >= oldest_usable:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
        )
        return connection

    def close(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class CatapushClient:
    """Sends messages to Catapush; raises `CatapushRejected` or `CatapushUnreachable`."""

    def __init__(
        self,
        base_url: str,
        *,
        tokens: TokenSource,
        timeout_s: float,
        session_factory: SessionFactory = default_session,
    ) -> None:
        self._messages_url = base_url.rstrip("/") + "/messages"
        self._tokens = tokens
        self._timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._pool: Http11Pool | None = None
        # The headers of a JSON send, as bytes, for the token they were made for.
        self._json_headers: tuple[str, bytes] = ("", b"")

    async def send(
        self,
        message: CatapushMessage | Mapping[str, Any],
        attachment: Attachment | None = None,
    ) -> Accepted:
        """Send a message: a checked model, or the JSON object of one (the worker's path)."""
        wire = message.to_wire() if isinstance(message, CatapushMessage) else message
        body = orjson.dumps(wire)
        token = await self._tokens.token()
        answer = await self._post(body, attachment, token)
        if answer.status == 401 and self._tokens.refreshable:
            log.info("token.rejected", status_code=401)
            await self._tokens.rejected(token)
            answer = await self._post(body, attachment, await self._tokens.token())
        if answer.status != 201:
            raise rejection_from(answer.status, answer.reason, answer.headers, answer.body)
        return accepted_from(answer.body)

    async def _post(self, body: bytes, attachment: Attachment | None, token: str) -> _Answer:
        if attachment is None:
            if self._pool is None:
                # Made on first use: its connections belong to the running event loop.
                self._pool = Http11Pool(self._messages_url)
            return await self._pool.post(self._headers_for(token), body, timeout_s=self._timeout_s)
        if self._session is None:
            # Made on first use: an aiohttp session belongs to the running event loop.
            self._session = self._session_factory()
        data = aiohttp.FormData()
        data.add_field("metadata", body, content_type="application/json")
        data.add_field(
            "file",
            attachment.content(),
            filename=attachment.filename,
            content_type=attachment.content_type,
        )
        return await exchange(
            self._session,
            "POST",
            self._messages_url,
            data=data,
            headers=bearer_headers(token),
            timeout=self._timeout,
        )

    def _headers_for(self, token: str) -> bytes:
        cached_for, lines = self._json_headers
        if cached_for != token:
            headers = {**bearer_headers(token), "Content-Type": "application/json"}
            if any(char in value for value in headers.values() for char in "\r\n\0"):
                # Refused as aiohttp refuses it: a line break would end the header early.
                raise ValueError("a header value holds a line break or a NUL")
            text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            lines = text.encode()
            self._json_headers = (token, lines)
        return lines

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None
