"""`/openapi.json` and `/docs`: the document, and a page describing it that needs nothing
from outside the server (no script, no CDN)."""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from dispatcher.http.console import render

DOCUMENT: Final = web.AppKey("openapi", dict)


def _schema_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else "string"


def operations_view(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's operations as the page lists them."""
    shown = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            shown.append(
                {
                    "method": method,
                    "path": path,
                    "summary": op["summary"],
                    "description": op.get("description", ""),
                    "scope": None if op.get("security") == [] else op.get("x-scope"),
                    "parameters": op.get("parameters", []),
                    "body": [(media, _schema_name(c["schema"])) for media, c in body.items()],
                    "responses": [
                        (
                            status,
                            {
                                "description": answer["description"],
                                "body": ", ".join(
                                    f"{media} {_schema_name(c['schema'])}"
                                    for media, c in answer.get("content", {}).items()
                                ),
                            },
                        )
                        for status, answer in op["responses"].items()
                    ],
                }
            )
    return shown


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[DOCUMENT]), content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    document = request.app[DOCUMENT]
    return render(request, "docs.html", document=document, operations=operations_view(document))
