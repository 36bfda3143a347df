"""The message client's own HTTP/1.1: what it writes, every way an answer may be framed,
connections kept alive or not, and each failure as the error the worker expects."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.client import (
    KEEPALIVE_S,
    USER_AGENT,
    CatapushClient,
    Http11Pool,
    _parse_head,
)
from dispatcher.errors import CatapushRejected, CatapushTimeout, CatapushUnreachable
from tests.redisfleet import make_certificates

pytestmark = pytest.mark.timeout(20)

CREATED = b'{"messageId":"m-1","createdAt":"2026-01-01T00:00:00Z"}'


def answer(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{header}\r\n" for header in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class Server:
    """Answers each request read from a connection with the next of `answers`: bytes to
    write, or a callable given the writer (to stall, to close, to dribble)."""

    answers: list[bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    hold: asyncio.Event | None = None
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://127.0.0.1:{port}/1/messages"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while self.answers:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                if self.hold is not None:
                    await self.hold.wait()
                reply = self.answers.pop(0)
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                else:
                    await reply(writer)
                    if writer.is_closing():
                        return
        finally:
            self.open_now -= 1
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)


class Token:
    refreshable = False

    def __init__(self, value: str = "tok") -> None:
        self.value = value

    async def token(self) -> str:
        return self.value

    async def rejected(self, token: str) -> None:
        return None


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def send_all(
    server: Server, count: int, *, timeout_s: float = 5.0, token: str = "tok"
) -> list[Any]:
    url = await server.start()
    client = CatapushClient(url.removesuffix("/messages"), tokens=Token(token), timeout_s=timeout_s)
    try:
        results: list[Any] = []
        for n in range(count):
            try:
                results.append(await client.send({"n": n}))
            except Exception as exc:
                results.append(exc)
        return results
    finally:
        await client.aclose()
        await server.stop()


def test_the_request_is_one_json_post_with_the_bearer_token() -> None:
    """Method, target, Host, the bearer headers and the JSON body, as aiohttp sent them."""
    server = Server([answer("201 Created", CREATED)])
    [accepted] = run(lambda: send_all(server, 1))
    assert accepted.message_id == "m-1"
    assert accepted.created_at == "2026-01-01T00:00:00Z"
    head, body = server.requests[0].split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /1/messages HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Host"].startswith("127.0.0.1:")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))
    assert orjson.loads(body) == {"n": 0}


def test_a_connection_is_kept_alive_for_the_next_send() -> None:
    """Three sends one after the other go over one connection."""
    server = Server([answer("201 Created", CREATED)] * 3)
    results = run(lambda: send_all(server, 3))
    assert [result.message_id for result in results] == ["m-1"] * 3
    assert server.connections == 1


def test_connection_close_is_honoured() -> None:
    """An answer saying `Connection: close` ends the connection; the next send opens one."""

    async def close_after(writer: asyncio.StreamWriter) -> None:
        writer.write(answer("201 Created", CREATED, "Connection: close"))
        await writer.drain()
        writer.close()

    server = Server([close_after, answer("201 Created", CREATED)])
    results = run(lambda: send_all(server, 2))
    assert [result.message_id for result in results] == ["m-1", "m-1"]
    assert server.connections == 2


def test_a_chunked_refusal_keeps_its_details_and_retry_after() -> None:
    """A chunked body (with an extension and a trailer) and a Retry-After in any case."""
    body = b'{"title":"Too Many Requests","detail":"slow down"}'
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nretry-after: 7\r\n\r\n"
        + b"%x;ext=1\r\n" % 10
        + body[:10]
        + b"\r\n"
        + b"%x\r\n" % (len(body) - 10)
        + body[10:]
        + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server = Server([chunked, answer("201 Created", CREATED)])
    refused, accepted = run(lambda: send_all(server, 2))
    assert isinstance(refused, CatapushRejected)
    assert refused.status_code == 429
    assert refused.title == "Too Many Requests"
    assert refused.detail == "slow down"
    assert refused.retry_after_s == 7
    assert accepted.message_id == "m-1"
    assert server.connections == 1


def test_an_answer_without_a_length_is_read_until_the_connection_closes() -> None:
    """HTTP/1.0 style: no Content-Length, the body ends with the connection."""

    async def until_close(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"try later")
        await writer.drain()
        writer.close()

    server = Server([until_close, answer("201 Created", CREATED)])
    refused, accepted = run(lambda: send_all(server, 2))
    assert isinstance(refused, CatapushRejected)
    assert refused.status_code == 503
    assert refused.detail == "busy, try later"
    assert accepted.message_id == "m-1"
    assert server.connections == 2


def test_an_answer_in_pieces_and_an_interim_answer_are_read_whole() -> None:
    """A 100 Continue first, then the head and body split across many writes."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        whole = b"HTTP/1.1 100 Continue\r\n\r\n" + answer("201 Created", CREATED)
        for start in range(0, len(whole), 7):
            writer.write(whole[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0)

    server = Server([dribble, answer("201 Created", CREATED)])
    first, second = run(lambda: send_all(server, 2))
    assert first.message_id == "m-1"
    assert second.message_id == "m-1"
    assert server.connections == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2x1 Created\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_malformed_answer_is_unreachable_and_the_connection_dropped(reply: bytes) -> None:
    """Nothing that cannot be read as HTTP/1.1 passes for an answer."""
    server = Server([reply, answer("201 Created", CREATED)])
    failed, accepted = run(lambda: send_all(server, 2))
    assert isinstance(failed, CatapushUnreachable)
    assert not isinstance(failed, CatapushTimeout)
    assert accepted.message_id == "m-1"
    assert server.connections == 2


def test_a_connection_closed_without_an_answer_is_unreachable() -> None:
    """The server hangs up after reading the request: no answer, not a timeout."""

    async def hang_up(writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = Server([hang_up, answer("201 Created", CREATED)])
    failed, accepted = run(lambda: send_all(server, 2))
    assert isinstance(failed, CatapushUnreachable)
    assert not isinstance(failed, CatapushTimeout)
    assert accepted.message_id == "m-1"


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_not_reused() -> None:
    """A stalled answer: `CatapushTimeout`, and the next send takes a fresh connection."""

    async def stall(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)

    server = Server([stall, answer("201 Created", CREATED)])
    failed, accepted = run(lambda: send_all(server, 2, timeout_s=0.2))
    assert isinstance(failed, CatapushTimeout)
    assert accepted.message_id == "m-1"
    assert server.connections == 2


def test_nobody_listening_is_unreachable() -> None:
    """Connection refused: `CatapushUnreachable`."""

    async def scenario() -> Exception:
        server = Server([])
        url = await server.start()
        await server.stop()
        client = CatapushClient(url.removesuffix("/messages"), tokens=Token(), timeout_s=2)
        try:
            await client.send({"n": 1})
        except CatapushUnreachable as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("sent to nobody")

    assert not isinstance(run(scenario), CatapushTimeout)


def test_a_token_with_a_line_break_is_refused_before_anything_is_written() -> None:
    """A header value cannot end the header early."""
    server = Server([answer("201 Created", CREATED)])
    with pytest.raises(ValueError, match="line break"):
        run(lambda: send_all_raising(server, "tok\r\nX-Injected: 1"))
    assert server.requests == []


async def send_all_raising(server: Server, token: str) -> None:
    url = await server.start()
    client = CatapushClient(url.removesuffix("/messages"), tokens=Token(token), timeout_s=2)
    try:
        await client.send({"n": 1})
    finally:
        await client.aclose()
        await server.stop()


def test_at_most_max_connections_are_open_at_once() -> None:
    """Sends beyond the limit wait for a connection to come back."""

    async def scenario() -> tuple[list[int], Server]:
        server = Server([answer("201 Created", CREATED)] * 6, hold=asyncio.Event())
        url = await server.start()
        pool = Http11Pool(url, max_connections=2)
        sends = [asyncio.ensure_future(pool.post(b"", b"{}", timeout_s=5)) for _ in range(6)]
        await asyncio.sleep(0.05)
        assert server.hold is not None
        server.hold.set()
        statuses = [answer_.status for answer_ in await asyncio.gather(*sends)]
        pool.close()
        await server.stop()
        return statuses, server

    statuses, server = run(scenario)
    assert statuses == [201] * 6
    assert server.most_open == 2


def test_an_idle_connection_past_the_keepalive_is_not_reused() -> None:
    """A connection idle longer than `KEEPALIVE_S` may have been dropped: a new one is made."""

    async def scenario() -> Server:
        now = [100.0]
        server = Server([answer("201 Created", CREATED)] * 3)
        url = await server.start()
        pool = Http11Pool(url, clock=lambda: now[0])
        await pool.post(b"", b"{}", timeout_s=5)
        now[0] += KEEPALIVE_S - 1
        await pool.post(b"", b"{}", timeout_s=5)
        now[0] += KEEPALIVE_S + 1
        await pool.post(b"", b"{}", timeout_s=5)
        pool.close()
        await server.stop()
        return server

    assert run(scenario).connections == 2


def test_an_empty_status_answer_needs_no_body() -> None:
    """204 has no body, whatever its headers; the connection stays usable."""
    server = Server([b"HTTP/1.1 204 No Content\r\n\r\n", answer("201 Created", CREATED)])
    refused, accepted = run(lambda: send_all(server, 2))
    assert isinstance(refused, CatapushRejected)
    assert refused.status_code == 204
    assert accepted.message_id == "m-1"
    assert server.connections == 1


def test_the_head_parser_keeps_repeated_headers_and_any_case() -> None:
    version, status, reason, headers = _parse_head(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2"
    )
    assert (version, status, reason) == (b"HTTP/1.1", 429, "Too Many Requests")
    assert headers.get("retry-after") == "3"
    assert headers.getall("X-A") == ["1", "2"]


def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="http"):
        Http11Pool("ftp://example.com/1/messages")


def test_the_request_line_and_host_are_written_as_aiohttp_writes_them() -> None:
    """The default port is left out of Host, and an IPv6 address is bracketed."""
    assert Http11Pool("https://api.catapush.com/1/messages")._request_line == (
        b"POST /1/messages HTTP/1.1\r\nHost: api.catapush.com\r\n"
    )
    assert Http11Pool("http://[::1]:8710/1/messages")._request_line == (
        b"POST /1/messages HTTP/1.1\r\nHost: [::1]:8710\r\n"
    )


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


def tls_scenario(tmp_path: Path, trusted: str) -> Any:
    certificates = make_certificates(tmp_path / "certs")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(certificates.server_cert, certificates.server_key)
    client_side = ssl.create_default_context(
        cafile=certificates.ca if trusted == "ca" else certificates.other_ca
    )

    async def scenario() -> Any:
        server = Server([answer("201 Created", CREATED)] * 2, tls=server_side)
        url = await server.start()
        pool = Http11Pool(url, ssl_context=client_side)
        try:
            return [await pool.post(b"", b"{}", timeout_s=5) for _ in range(2)], server
        except CatapushUnreachable as exc:
            return exc, server
        finally:
            pool.close()
            await server.stop()

    return run(scenario)


@needs_openssl
def test_https_verifies_the_server_and_keeps_the_connection(tmp_path: Path) -> None:
    """Over TLS, with the server's certificate checked against the trusted CA."""
    answers, server = tls_scenario(tmp_path, trusted="ca")
    assert [answer_.status for answer_ in answers] == [201, 201]
    assert server.connections == 1


@needs_openssl
def test_https_to_a_server_no_trusted_ca_signed_is_unreachable(tmp_path: Path) -> None:
    """A certificate the client does not trust fails the send, as with aiohttp."""
    failed, _ = tls_scenario(tmp_path, trusted="other")
    assert isinstance(failed, CatapushUnreachable)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed)
