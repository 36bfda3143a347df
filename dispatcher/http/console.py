"""The ops console: server-rendered pages over the same data as the API, no JavaScript.

Signing in keeps the API token in an HttpOnly, SameSite=Strict cookie. Every form that
changes something is a POST carrying a token derived from the caller's API token, so
another site cannot make a signed-in browser replay or purge anything.
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import quote

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from dispatcher.http.answers import Refused
from dispatcher.http.auth import csrf_token, find_token, same_csrf
from dispatcher.http.models import DeadLetterQuery
from dispatcher.http.ops import (
    dead_letter,
    dead_letter_page,
    notification_report,
    overview,
    page_query,
    purge_dead_letter,
    replay_dead_letter,
)
from dispatcher.http.plot import bar_plot
from dispatcher.http.state import STATE, ServerState
from dispatcher.logs import get_logger
from dispatcher.store.throughput import window

TOKEN_COOKIE: Final = "dispatcher_token"
# A signed-in browser stays signed in for a working day.
COOKIE_MAX_AGE_S: Final = 12 * 3600
# Where the access check keeps the caller's token for the forms (None: no tokens set).
CALLER: Final = "dispatcher.caller_key"
MAX_FORM_BYTES: Final = 16 * 1024

log = get_logger(__name__)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("dispatcher.http", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["age"] = _age
    return env


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


JINJA: Final = web.AppKey("jinja", Environment)


def render(
    request: web.Request, template: str, *, status: int = 200, nav: bool = True, **context: Any
) -> web.Response:
    env = request.app[JINJA]
    context.setdefault("notice", request.rel_url.query.get("notice"))
    context.setdefault("error", None)
    context.setdefault("section", None)
    html = env.get_template(template).render(nav=nav, **context)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        },
    )


def login_page(request: web.Request, status: int, error: str | None = None) -> web.Response:
    return render(request, "login.html", status=status, nav=False, error=error)


def _csrf_key(request: web.Request, state: ServerState) -> bytes:
    key: bytes | None = request.get(CALLER)
    return key if key is not None else state.process_key


def _redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


# -- Pages -------------------------------------------------------------------------------------


async def overview_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = await overview(state)
    page = await dead_letter_page(state, DeadLetterQuery(limit=1))
    first_minute = window(time.time())[0]
    return render(
        request,
        "overview.html",
        section="overview",
        overview=data,
        counts=page.counts,
        plot=bar_plot(data.sent_per_minute, first_minute),
    )


async def dead_letters_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # The form's "all" choice sends an empty reason.
    if request.rel_url.query.get("reason") == "":
        query = DeadLetterQuery()
    else:
        query = page_query(request, strict=False)
    page = await dead_letter_page(state, query)
    return render(
        request, "dead_letters.html", section="dead_letters", page=page, reason=query.reason
    )


async def dead_letter_page_one(request: web.Request) -> web.Response:
    entry = await dead_letter(request.app[STATE], request.match_info["id"])
    shown = (
        entry.intent
        if isinstance(entry.intent, str)
        else orjson.dumps(entry.intent, option=orjson.OPT_INDENT_2).decode()
    )
    return render(
        request, "dead_letter.html", section="dead_letters", entry=entry, intent_json=shown
    )


def _confirm_page(action: str) -> Any:
    async def confirm(request: web.Request) -> web.Response:
        state = request.app[STATE]
        entry = await dead_letter(state, request.match_info["id"])
        return render(
            request,
            "confirm.html",
            section="dead_letters",
            entry=entry,
            action=action,
            csrf=csrf_token(_csrf_key(request, state)),
        )

    return confirm


async def _checked_form(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise Refused(413, [f"body: larger than {MAX_FORM_BYTES} bytes"])
    form = await request.post()
    state = request.app[STATE]
    csrf = form.get("csrf")
    if not same_csrf(_csrf_key(request, state), csrf if isinstance(csrf, str) else None):
        log.warning("console.csrf_refused", path=request.path)
        raise Refused(403, ["csrf: missing or wrong; open the page again and confirm"])
    return form


async def replay_action(request: web.Request) -> web.Response:
    await _checked_form(request)
    entry_id = request.match_info["id"]
    await replay_dead_letter(request.app[STATE], entry_id)
    raise _redirect(f"/console/dead-letters?notice={quote(f'Replayed {entry_id}')}")


async def purge_action(request: web.Request) -> web.Response:
    await _checked_form(request)
    entry_id = request.match_info["id"]
    await purge_dead_letter(request.app[STATE], entry_id)
    raise _redirect(f"/console/dead-letters?notice={quote(f'Purged {entry_id}')}")


async def notification_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    intent_id = request.rel_url.query.get("id", "").strip() or None
    report = None if intent_id is None else await notification_report(state, intent_id)
    return render(
        request, "notification.html", section="notification", intent_id=intent_id, report=report
    )


# -- Signing in and out ------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    return login_page(request, 200)


async def login(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise Refused(413, [f"body: larger than {MAX_FORM_BYTES} bytes"])
    state = request.app[STATE]
    form = await request.post()
    given = form.get("token")
    token = find_token(state.tokens, given.strip() if isinstance(given, str) else None)
    if state.tokens and token is None:
        log.warning("console.login_refused")
        return login_page(request, 401, "That token is not one of DISPATCHER_API_TOKENS.")
    answer = web.HTTPSeeOther("/")
    if token is not None:
        answer.set_cookie(
            TOKEN_COOKIE,
            token.secret.decode(),
            max_age=COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
    log.info("console.signed_in")
    raise answer


async def logout(request: web.Request) -> web.Response:
    answer = web.HTTPSeeOther("/login")
    answer.del_cookie(TOKEN_COOKIE, path="/")
    raise answer
