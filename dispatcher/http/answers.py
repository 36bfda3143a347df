"""Reading requests and writing answers: JSON bodies, size caps, content types, errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

JSON_TYPE = "application/json"


def json_answer(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_unset=True)
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON_TYPE, headers=headers
    )


class Refused(Exception):
    """A request answered with an error status and `{"errors": [...]}`."""

    def __init__(
        self,
        status: int,
        errors: list[str],
        *,
        intents: int = 1,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = errors
        self.intents = intents  # how many intents the refusal stands for, for the metrics
        self.key = key  # the request key at fault, when there is one, for the logs
        self.headers = headers

    def response(self) -> web.Response:
        return json_answer({"errors": self.errors}, self.status, self.headers)


def is_json_type(content_type: str) -> bool:
    """`application/json` or a `+json` type (`application/merge-patch+json`, ...)."""
    return content_type == JSON_TYPE or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    too_large = Refused(413, [f"body: larger than {limit} bytes"])
    # A declared length over the limit is refused before a byte of it is read.
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body past the application's limit
        raise too_large from None
    if len(body) > limit:  # a chunked body past this route's (lower) limit
        raise too_large
    return body


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(
            400,
            [
                f"body: not valid JSON at line {exc.lineno} column {exc.colno} "
                f"(byte {exc.pos}): {exc.msg}"
            ],
        ) from None


async def read_json(request: web.Request, limit: int) -> Any:
    """The JSON body of a JSON route: 415 for another content type, 413 over `limit`, 400
    naming the position of a syntax error."""
    if not is_json_type(request.content_type):
        raise Refused(415, [f"content-type: must be {JSON_TYPE}, not {request.content_type}"])
    return parse_json(await read_body(request, limit))
