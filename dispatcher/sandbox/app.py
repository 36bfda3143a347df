"""The sandbox Catapush API as an aiohttp application: `/1/...` like Catapush, `/_sandbox/...`
to steer it.

Fault rules act on authenticated `POST /1/messages` only, before the body is validated (a
failing service does not look at what it was sent); the first rule that matches a send applies.
Each send is logged with its answer as soon as that answer is decided, before any injected
delay: like a real server, the sandbox has acted on a send whose answer the client never sees
(timed out or dropped), and tests of exactly-once delivery need to see that.

The `/1/messages` handler is the hot path of every benchmark: it does no logging to stdout,
builds no objects it does not answer with, and waits with `asyncio.sleep` so that injected
latency never limits concurrency.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from http import HTTPStatus
from typing import Annotated, Any, Literal, TypeVar

import orjson
from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dispatcher.intents import CatapushMessage, field_errors
from dispatcher.sandbox.state import FaultRule, SandboxState
from dispatcher.sandbox.users import (
    DEFAULT_PAGE_SIZE,
    EXISTS_TITLES,
    MAX_PAGE_SIZE,
    user_problems,
)

STATE_KEY = web.AppKey("sandbox_state", SandboxState)

API_PREFIX = "/1"
ADMIN_PREFIX = "/_sandbox"

# Attachments travel in the request body; Catapush does not document a limit, the dispatcher
# allows 10 MiB of file, and multipart plus metadata add a little.
MAX_BODY_BYTES = 16 * 1024 * 1024

TITLES = {
    400: "Bad Request - Missing Required Parameters",
    401: "Unauthorised - Bad or expired token (re-authenticate)",
    403: "Forbidden - Wrong authentication / Bad OAuth request (re-authenticating won't help)",
}

_JSON = "application/json"


def title_for(status: int) -> str:
    known = TITLES.get(status)
    if known is not None:
        return known
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON, headers=headers)


def error_response(
    status: int, detail: str, title: str | None = None, retry_after: float | None = None
) -> web.Response:
    title = title or title_for(status)
    headers: dict[str, str] = {}
    # Catapush repeats the title as a header; a custom title may not be a valid header value.
    if title.isascii() and title.isprintable():
        headers["title"] = title
    if retry_after is not None:
        headers["Retry-After"] = format_seconds(retry_after)
    return _json({"detail": detail, "status": status, "title": title}, status, headers)


def format_seconds(seconds: float) -> str:
    """`2` rather than `2.0`, but `0.25` stays a decimal for fast tests."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0")


def _created_at(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


# -- authentication ----------------------------------------------------------------------------


def _authenticate(
    request: web.Request, state: SandboxState
) -> tuple[str | None, web.Response | None]:
    """The token a request carries, and the error answer when it may not proceed."""
    header = request.headers.get("Authorization")
    # Parsing the query string costs a little, and most clients send no query at all.
    query_token = request.query.get("access_token") if request.query_string else None
    if header is not None and query_token is not None:
        return query_token, error_response(
            400, "Send the token either in the Authorization header or as access_token, not both"
        )
    token = query_token
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, error_response(401, "The Authorization header must be 'Bearer TOKEN'")
        token = value.strip()
    if token is None:
        return None, error_response(401, "No access token")
    check = state.check_token(token)
    if check == "ok":
        return token, None
    detail = "The access token has expired" if check == "expired" else "Unknown access token"
    return token, error_response(401, detail)


# -- OAuth -------------------------------------------------------------------------------------

_OAUTH_PARAMETERS = ("client_id", "client_secret", "grant_type")


async def oauth_token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.count_oauth()
    params: dict[str, str] = dict(request.query)
    # RFC 6749 puts the parameters in a form body; Catapush documents the query string.
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        for name in _OAUTH_PARAMETERS:
            value = form.get(name)
            if isinstance(value, str):
                params.setdefault(name, value)
    client_id = params.get("client_id")
    token: str | None = None
    if (
        any(not params.get(name) for name in _OAUTH_PARAMETERS)
        or params["grant_type"] != "client_credentials"
    ):
        status, body = 400, {"error": "invalid_request"}
    elif not state.credentials_valid(params["client_id"], params["client_secret"]):
        status, body = 400, {"error": "invalid_client"}
    else:
        token = state.issue_token(client_id)
        status, body = 200, {"grant_type": "client_credentials", "access_token": token}
    state.log(
        "oauth",
        {
            "method": "POST",
            "status": status,
            "client_id": client_id,
            "error": body.get("error"),
            "token": token,
        },
    )
    return _json(body, status)


async def oauth_revoke(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.count_oauth()
    token, error = _authenticate(request, state)
    revoked = 0
    if error is None:
        # Every token of the caller's account, the one it called with included.
        assert token is not None
        revoked = state.revoke_tokens(state.client_of(token))
    state.log(
        "oauth",
        {
            "method": "DELETE",
            "status": 200 if error is None else error.status,
            "token": token,
            "revoked": revoked,
        },
    )
    return error if error is not None else _json({})


# -- messages ----------------------------------------------------------------------------------


async def _read_message(
    request: web.Request,
) -> tuple[Any, dict[str, Any] | None, str | None]:
    """The decoded JSON message, the attachment's description, and why it cannot be read."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    raw = await request.read()
    try:
        return orjson.loads(raw), None, None
    except orjson.JSONDecodeError as exc:
        return None, None, f"body: not valid JSON ({exc})"


async def _read_multipart(
    request: web.Request,
) -> tuple[Any, dict[str, Any] | None, str | None]:
    metadata: Any = None
    has_metadata = False
    files: list[dict[str, Any]] = []
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                return None, None, "body: nested multipart is not supported"
            if part.name == "metadata":
                metadata = orjson.loads(await part.read())
                has_metadata = True
            elif part.name == "file":
                # Only the size is kept, so the file is counted, never held in memory.
                size = 0
                while chunk := await part.read_chunk():
                    size += len(chunk)
                files.append(
                    {
                        "filename": part.filename,
                        "size": size,
                        "contentType": part.headers.get("Content-Type"),
                    }
                )
            else:
                await part.release()
    except orjson.JSONDecodeError as exc:
        return None, None, f"metadata: not valid JSON ({exc})"
    except (ValueError, AssertionError) as exc:
        return None, None, f"body: malformed multipart ({exc})"
    attachment = files[0] if files else None
    if not has_metadata:
        return None, attachment, "metadata: Field required"
    if len(files) != 1:
        problem = "file: Field required" if not files else "file: only one file is allowed"
        return metadata, attachment, problem
    return metadata, attachment, None


def _recipients_of(message: Any) -> tuple[list[str], str | None]:
    """Identifiers and messageRef, read leniently so that even a refused body is logged."""
    if not isinstance(message, dict):
        return [], None
    ref = message.get("messageRef")
    identifiers: list[str] = []
    recipients = message.get("recipients")
    if isinstance(recipients, list):
        for recipient in recipients:
            if isinstance(recipient, dict):
                identifier = recipient.get("identifier")
                if isinstance(identifier, str):
                    identifiers.append(identifier)
    return identifiers, ref if isinstance(ref, str) else None


def _validate(message: Any) -> str | None:
    if not isinstance(message, dict):
        return f"body: must be a JSON object, not {type(message).__name__}"
    try:
        CatapushMessage.model_validate(message)
    except ValidationError as exc:
        return "; ".join(field_errors(exc))
    return None


async def send_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    # The body is read before authenticating so that a refused send is still logged with
    # its messageRef, which is what tests correlate retries by.
    message, attachment, unreadable = await _read_message(request)
    identifiers, message_ref = _recipients_of(message)
    token, response = _authenticate(request, state)
    rule = state.take_fault(identifiers) if response is None else None
    drop = False
    message_id: str | None = None
    if rule is not None and rule.drop:
        drop = True
    elif rule is not None and rule.status is not None:
        detail = rule.detail or f"Sandbox fault: {rule.status} {title_for(rule.status)}"
        response = error_response(rule.status, detail, rule.title, rule.retry_after)
    elif response is None:
        problem = unreadable or _validate(message)
        if problem is not None:
            response = error_response(400, problem)
        elif token is not None and not state.may_send_for(token, message.get("mobileAppId")):
            response = error_response(
                403,
                "mobileAppId: the app belongs to another account than this token's",
                "Forbidden - Wrong authentication",
            )
        else:
            now = time.time()
            message_id = str(uuid.uuid4())
            echo = {**message, "messageId": message_id, "createdAt": _created_at(now)}
            response = _json(echo, 201)

    status = None if drop or response is None else response.status
    state.count_message(status, message_ref)
    entry: dict[str, Any] = {
        "status": status,
        "messageRef": message_ref,
        "identifiers": identifiers,
        "token": token,
        "messageId": message_id,
        "fault": rule is not None,
    }
    if state.log_bodies:
        entry["body"] = message
    if attachment is not None:
        entry["attachment"] = attachment
    state.log("messages", entry)

    delay_ms = state.latency_ms
    if rule is not None and rule.latency_ms:
        delay_ms += rule.latency_ms
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    if drop or response is None:
        transport = request.transport
        if transport is not None:
            transport.close()
        # Writing to the closed transport fails with ConnectionError, which aiohttp treats as
        # a client that went away: no response, nothing logged.
        return web.Response(status=499)
    return response


# -- users -------------------------------------------------------------------------------------


def _app_id(request: web.Request) -> int | None:
    raw = request.match_info["app_id"]
    return int(raw) if raw.isdigit() else None


def _log_users(
    state: SandboxState, request: web.Request, status: int, identifier: str | None
) -> None:
    state.log(
        "users",
        {
            "method": request.method,
            "status": status,
            "app_id": request.match_info["app_id"],
            "identifier": identifier,
        },
    )


def _not_found(what: str) -> web.Response:
    return error_response(404, f"{what} not found", "Not Found")


def _positive_query(request: web.Request, name: str, default: int) -> int | str:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return f"{name}: must be an integer, not {raw!r}"


async def list_users(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _, response = _authenticate(request, state)
    app_id = _app_id(request)
    if response is None and app_id is None:
        response = _not_found("App")
    if response is None:
        assert app_id is not None
        page = _positive_query(request, "page", 1)
        size = _positive_query(request, "size", DEFAULT_PAGE_SIZE)
        if isinstance(page, str) or isinstance(size, str):
            response = error_response(400, str(page if isinstance(page, str) else size))
        elif not 1 <= size <= MAX_PAGE_SIZE:
            response = error_response(400, f"size: must be between 1 and {MAX_PAGE_SIZE}")
        else:
            total, users = state.users.page(app_id, page, size)
            response = _json(
                {"total_count": total, "_embedded": {"AppUser": [u.public() for u in users]}}
            )
    _log_users(state, request, response.status, None)
    return response


async def create_user(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _, response = _authenticate(request, state)
    app_id = _app_id(request)
    identifier: str | None = None
    if response is None and app_id is None:
        response = _not_found("App")
    if response is None:
        assert app_id is not None
        try:
            body: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            body, response = None, error_response(400, f"body: not valid JSON ({exc})")
        if isinstance(body, dict) and isinstance(body.get("identifier"), str):
            identifier = body["identifier"]
        problems = user_problems(body) if response is None else []
        if problems:
            response = error_response(400, "; ".join(problems))
        elif response is None:
            user = state.users.create(app_id, body["identifier"], body["password"])
            if user is None:
                status = state.users.exists_status
                response = error_response(
                    status, f"identifier: {body['identifier']!r} exists", EXISTS_TITLES[status]
                )
            else:
                response = _json(user.public(), 201)
    _log_users(state, request, response.status, identifier)
    return response


async def get_user(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _, response = _authenticate(request, state)
    app_id = _app_id(request)
    identifier = request.match_info["identifier"]
    if response is None:
        user = None if app_id is None else state.users.get(app_id, identifier)
        response = _not_found("User") if user is None else _json(user.public())
    _log_users(state, request, response.status, identifier)
    return response


async def update_user(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _, response = _authenticate(request, state)
    app_id = _app_id(request)
    identifier = request.match_info["identifier"]
    if response is None:
        user = None if app_id is None else state.users.get(app_id, identifier)
        if user is None:
            response = _not_found("User")
        else:
            try:
                body: Any = orjson.loads(await request.read())
            except orjson.JSONDecodeError as exc:
                body, response = None, error_response(400, f"body: not valid JSON ({exc})")
            problems = user_problems(body, partial=True) if response is None else []
            if problems:
                response = error_response(400, "; ".join(problems))
            elif response is None:
                user.password = body["password"]
                response = _json(user.public())
    _log_users(state, request, response.status, identifier)
    return response


async def delete_user(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    _, response = _authenticate(request, state)
    app_id = _app_id(request)
    identifier = request.match_info["identifier"]
    if response is None:
        deleted = app_id is not None and state.users.delete(app_id, identifier)
        response = web.Response(status=204) if deleted else _not_found("User")
    _log_users(state, request, response.status, identifier)
    return response


# -- admin -------------------------------------------------------------------------------------


class _AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultSpec(_AdminModel):
    status: Annotated[int, Field(ge=400, le=599)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    retry_after: Annotated[float, Field(ge=0)] | None = None
    identifier: str | None = None
    latency_ms: Annotated[int, Field(ge=0)] | None = None
    drop: bool = False
    title: str | None = None
    detail: str | None = None

    @model_validator(mode="after")
    def _does_something(self) -> FaultSpec:
        if self.status is None and not self.drop and self.latency_ms is None:
            raise ValueError("a fault needs status, drop or latency_ms")
        return self


class LatencySpec(_AdminModel):
    ms: Annotated[int, Field(ge=0)]


class TokenTtlSpec(_AdminModel):
    seconds: Annotated[float, Field(ge=0)] | None


def _admin_error(detail: str, status: int = 400) -> web.Response:
    return _json({"detail": detail, "status": status, "title": title_for(status)}, status)


_Spec = TypeVar("_Spec", bound=_AdminModel)


async def _admin_body(request: web.Request, model: type[_Spec]) -> _Spec | web.Response:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        return _admin_error("; ".join(field_errors(exc)))


async def add_fault(request: web.Request) -> web.Response:
    spec = await _admin_body(request, FaultSpec)
    if isinstance(spec, web.Response):
        return spec
    state = request.app[STATE_KEY]
    rule = FaultRule(**spec.model_dump())
    state.add_fault(rule)
    return _json({"rule": rule.as_dict(), "faults": [r.as_dict() for r in state.faults]})


async def list_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return _json({"faults": [rule.as_dict() for rule in state.faults]})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_faults()
    return _json({"faults": []})


async def set_latency(request: web.Request) -> web.Response:
    spec = await _admin_body(request, LatencySpec)
    if isinstance(spec, web.Response):
        return spec
    request.app[STATE_KEY].latency_ms = spec.ms
    return _json({"ms": spec.ms})


async def expire_tokens(request: web.Request) -> web.Response:
    return _json({"expired": request.app[STATE_KEY].expire_tokens()})


async def set_token_ttl(request: web.Request) -> web.Response:
    spec = await _admin_body(request, TokenTtlSpec)
    if isinstance(spec, web.Response):
        return spec
    request.app[STATE_KEY].set_token_ttl(spec.seconds)
    return _json({"seconds": spec.seconds})


class CredentialsSpec(_AdminModel):
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Annotated[str, Field(min_length=1)]


async def set_credentials(request: web.Request) -> web.Response:
    spec = await _admin_body(request, CredentialsSpec)
    if isinstance(spec, web.Response):
        return spec
    request.app[STATE_KEY].set_credentials(spec.client_id, spec.client_secret)
    return _json({"client_id": spec.client_id})


class ClientSpec(_AdminModel):
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: Annotated[str, Field(min_length=1)]
    mobile_app_ids: list[int] = []


async def add_client(request: web.Request) -> web.Response:
    spec = await _admin_body(request, ClientSpec)
    if isinstance(spec, web.Response):
        return spec
    request.app[STATE_KEY].add_client(spec.client_id, spec.client_secret, spec.mobile_app_ids)
    return _json({"client_id": spec.client_id, "mobile_app_ids": spec.mobile_app_ids})


class SeedUsersSpec(_AdminModel):
    identifiers: list[str]


async def seed_users(request: web.Request) -> web.Response:
    spec = await _admin_body(request, SeedUsersSpec)
    if isinstance(spec, web.Response):
        return spec
    app_id = _app_id(request)
    if app_id is None:
        return _admin_error("app id: must be an integer")
    created = request.app[STATE_KEY].users.seed(app_id, spec.identifiers)
    return _json({"created": created})


class ExistsStatusSpec(_AdminModel):
    status: Literal[400, 409]


async def set_exists_status(request: web.Request) -> web.Response:
    spec = await _admin_body(request, ExistsStatusSpec)
    if isinstance(spec, web.Response):
        return spec
    request.app[STATE_KEY].users.exists_status = spec.status
    return _json({"status": spec.status})


async def list_requests(request: web.Request) -> web.Response:
    kind = request.query.get("kind") or None
    try:
        since = int(request.query.get("since") or 0)
    except ValueError:
        return _admin_error("since: must be an integer")
    entries = request.app[STATE_KEY].requests(kind, since)
    return _json({"requests": entries})


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_requests()
    return _json({"ok": True})


async def stats(request: web.Request) -> web.Response:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = request.app[STATE_KEY].stats()
    counters["cpu_s"] = usage.ru_utime + usage.ru_stime
    return _json(counters)


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return _json({"ok": True})


async def health(request: web.Request) -> web.Response:
    return _json({"ok": True})


def build_app(state: SandboxState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    app.router.add_post(f"{API_PREFIX}/auth/oauth", oauth_token)
    app.router.add_delete(f"{API_PREFIX}/auth/oauth", oauth_revoke)
    app.router.add_post(f"{API_PREFIX}/messages", send_message)
    users = f"{API_PREFIX}/apps/{{app_id}}/users"
    # Catapush's own examples write the collection with and without a trailing slash.
    app.router.add_get(users, list_users)
    app.router.add_get(users + "/", list_users)
    app.router.add_post(users, create_user)
    app.router.add_get(users + "/{identifier:.+}", get_user)
    app.router.add_patch(users + "/{identifier:.+}", update_user)
    app.router.add_delete(users + "/{identifier:.+}", delete_user)
    app.router.add_post(f"{ADMIN_PREFIX}/faults", add_fault)
    app.router.add_get(f"{ADMIN_PREFIX}/faults", list_faults)
    app.router.add_delete(f"{ADMIN_PREFIX}/faults", clear_faults)
    app.router.add_put(f"{ADMIN_PREFIX}/latency", set_latency)
    app.router.add_post(f"{ADMIN_PREFIX}/tokens/expire", expire_tokens)
    app.router.add_put(f"{ADMIN_PREFIX}/token-ttl", set_token_ttl)
    app.router.add_put(f"{ADMIN_PREFIX}/credentials", set_credentials)
    app.router.add_post(f"{ADMIN_PREFIX}/clients", add_client)
    app.router.add_post(f"{ADMIN_PREFIX}/apps/{{app_id}}/users", seed_users)
    app.router.add_put(f"{ADMIN_PREFIX}/users-exists-status", set_exists_status)
    app.router.add_get(f"{ADMIN_PREFIX}/requests", list_requests)
    app.router.add_delete(f"{ADMIN_PREFIX}/requests", clear_requests)
    app.router.add_get(f"{ADMIN_PREFIX}/stats", stats)
    app.router.add_post(f"{ADMIN_PREFIX}/reset", reset)
    app.router.add_get(f"{ADMIN_PREFIX}/health", health)
    return app
