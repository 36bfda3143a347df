"""The OpenAPI 3.1 document, generated from the operation table and the pydantic models.

JSON Schema comes from pydantic (`models_json_schema`); this module only places each schema
in the document: request bodies, query parameters, answers, and the bearer-token scheme.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from dispatcher.http.routes import PUBLIC, Operation

OPENAPI_VERSION: Final = "3.1.0"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
SECURITY_SCHEME: Final = "bearerToken"


def _models(operations: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in operations:
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        for _, body in op.responses.values():
            if isinstance(body, type):
                wanted[(body, "serialization")] = None
    return list(wanted)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def build_document(
    operations: Iterable[Operation], *, title: str, version: str, description: str
) -> dict[str, Any]:
    documented = [op for op in operations if op.documented]
    refs, definitions = models_json_schema(_models(documented), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for op in documented:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description:
            entry["description"] = op.description
        if op.access == PUBLIC:
            entry["security"] = []
        else:
            entry["x-scope"] = op.access
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", **_pattern(op, name)},
            }
            for name in op.path_parameters
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query)
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            schema = refs[(op.body, "validation")]
            entry["requestBody"] = {
                "required": True,
                "content": {media: {"schema": schema} for media in op.body_types},
            }
        entry["responses"] = {
            str(status): _answer(description, body, refs)
            for status, (description, body) in sorted(op.responses.items())
        }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of DISPATCHER_API_TOKENS; the operation's "
                    "`x-scope` names the scope it needs (`token`: any).",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _pattern(op: Operation, name: str) -> dict[str, str]:
    pattern = op.patterns.get(name)
    return {} if pattern is None else {"pattern": pattern}


def _answer(description: str, body: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if isinstance(body, type):
        answer["content"] = {"application/json": {"schema": refs[(body, "serialization")]}}
    elif isinstance(body, str):
        answer["content"] = {body: {"schema": {"type": "string"}}}
    return answer
