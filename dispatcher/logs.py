"""Structured logging: JSON lines by default, a readable console format for humans.

Events are dotted past-tense names (`delivery.sent`, `token.refreshed`) with key-value
context. Values under keys that name a secret are masked before rendering, so a token or a
client secret cannot reach the logs even by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog

SECRET_KEY_PARTS = ("secret", "token", "password", "authorization")
MASK = "***"


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: MASK if _names_secret(key) else _masked(inner) for key, inner in value.items()}
    return value


def _names_secret(key: Any) -> bool:
    return isinstance(key, str) and any(part in key.lower() for part in SECRET_KEY_PARTS)


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values under secret-sounding keys, at any depth of nested mappings."""
    for key, value in event_dict.items():
        event_dict[key] = MASK if _names_secret(key) else _masked(value)
    return event_dict


def _orjson_dumps(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(log_format: Literal["json", "console"], level: int = logging.INFO) -> None:
    """Route structlog and the standard library (dramatiq logs there) to stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # dramatiq narrates every message at INFO; its warnings and errors are what ops need.
    logging.getLogger("dramatiq").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    # Used as a library (producers calling `dispatcher.enqueue`), nobody may have configured
    # structlog, whose default prints every level to stdout; keep to warnings on stderr then.
    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )
    return structlog.get_logger(name)
