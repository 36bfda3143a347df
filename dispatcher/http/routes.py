"""The table of operations: each route's method, path, handler, access and documented shapes.

The application registers its routes from this table, the access check reads it, and the
OpenAPI document is generated from it, so the three cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import web
from pydantic import BaseModel

from dispatcher.http.auth import Scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# `public`: no token (probes, Catapush callbacks, the login form); `token`: any valid token.
Access = Scope | Literal["public", "token"]
PUBLIC: Final = "public"
ANY_TOKEN: Final = "token"

# What a documented answer carries: a model (JSON), a media type with free text, or nothing.
Body = type[BaseModel] | str | None

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    responses: Mapping[int, tuple[str, Body]]
    description: str = ""
    body: type[BaseModel] | None = None
    body_types: tuple[str, ...] = ("application/json",)
    query: type[BaseModel] | None = None
    # Console pages and forms are for browsers, not API clients: left out of the document.
    documented: bool = True
    # Answers a browser page (a sign-in page when the token is missing) rather than JSON.
    html: bool = False
    # Path parameters that the document constrains with a pattern.
    patterns: Mapping[str, str] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[^A-Za-z0-9]+", "_", f"{self.method}_{self.path}").strip("_")
        return words.lower()

    @property
    def path_parameters(self) -> list[str]:
        return _PATH_PARAMETER.findall(self.path)


def register(app: web.Application, operations: list[Operation]) -> dict[tuple[str, str], Access]:
    """Add every operation's route; returns (method, path) -> access for the access check."""
    access: dict[tuple[str, str], Access] = {}
    for op in operations:
        # No automatic HEAD: every route the router holds is one of the table's.
        if op.method == "GET":
            app.router.add_get(op.path, op.handler, allow_head=False)
        else:
            app.router.add_route(op.method, op.path, op.handler)
        access[(op.method, op.path)] = op.access
    return access
