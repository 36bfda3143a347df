"""Structured logging: JSON lines by default, a readable console format for humans.

Events are dotted past-tense names (`delivery.sent`, `token.refreshed`) with key-value
context. Values under keys that name a secret are masked before rendering, and so is the
password of any URL written inside a value, so a token, a client secret or the Redis password
cannot reach the logs even by mistake.

Each line goes to stderr in one `write` on its file descriptor, so the processes of
`dispatcher worker --processes N`, which share one stderr, never split or merge lines.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson
import structlog

SECRET_KEY_PARTS = ("secret", "token", "password", "authorization")
MASK = "***"

# `scheme://user:password@`: the password runs to the last `@` of the URL, so one that holds
# an unencoded `@` is still masked whole; masking a little more than the password is the
# safe way to be wrong. `?password=` is how redis-py also takes one.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"<>]*):[^\s'\"<>]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#\s'\"<>]*", re.IGNORECASE)


def redact_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`; the user is kept."""
    if "://" not in text and "password=" not in text.lower():
        return text  # the common case, without running the patterns
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    return _QUERY_PASSWORD.sub(rf"\g<head>{MASK}", text)


# Values of these types hold no nested keys and no URL: most of a log line's values.
_SCALARS = frozenset({int, float, bool, type(None)})


def _masked(value: Any) -> Any:
    # `type() in` first: the Mapping check is an ABC check, and this runs per value per line.
    if type(value) in _SCALARS or type(value) is str:
        return value
    if isinstance(value, Mapping):
        return {key: MASK if _names_secret(key) else _masked(inner) for key, inner in value.items()}
    return value


@functools.lru_cache(maxsize=4096)
def _key_names_secret(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def _names_secret(key: Any) -> bool:
    # Every log line asks this of every key; the keys are few, so the answers are kept.
    return isinstance(key, str) and _key_names_secret(key)


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values under secret-sounding keys, at any depth of nested mappings."""
    for key, value in event_dict.items():
        event_dict[key] = MASK if _names_secret(key) else _masked(value)
    return event_dict


def _redacted(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        # Most values hold no URL and no password parameter: skip the lowering and patterns.
        if "://" not in value and "=" not in value:
            return value
        return redact_passwords(value)
    if isinstance(value, Mapping):
        return {key: _redacted(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(inner) for inner in value]
    if isinstance(value, BaseException):
        # Rendered with str() later; redis errors can quote the URL they were given.
        return redact_passwords(str(value))
    return value


def redact_url_passwords(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask the password of any URL inside any string value, at any depth."""
    for key, value in event_dict.items():
        event_dict[key] = _redacted(value)
    return event_dict


def write_line(fd: int, line: str) -> None:
    """Write `line` and its newline with one `os.write`, looping only on a partial write.

    One write per line is what keeps lines whole when several processes share the
    descriptor: the kernel never interleaves one write with another on a file opened for
    appending, nor on a pipe up to PIPE_BUF bytes (4 KiB on Linux).
    """
    data = (line + "\n").encode("utf-8", "backslashreplace")
    while data:
        written = os.write(fd, data)
        data = data[written:]


class LineLogger:
    """A structlog logger that writes each rendered event as one line with `write_line`.

    Falls back to the stream's own `write` when it has no file descriptor (a test runner's
    captured stderr, say).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def msg(self, message: str) -> None:
        if self._fd is None:
            self._stream.write(message + "\n")
            self._stream.flush()
            return
        # Text already buffered in the stream (an echo on stderr) goes out first.
        self._stream.flush()
        write_line(self._fd, message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class LineLoggerFactory:
    """Hands every structlog logger the one `LineLogger` on `stream`."""

    def __init__(self, stream: TextIO) -> None:
        self._logger = LineLogger(stream)

    def __call__(self, *_args: Any) -> LineLogger:
        return self._logger


class LineHandler(logging.Handler):
    """The standard library's records (dramatiq, aiohttp), written like structlog's."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._logger = LineLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._logger.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _orjson_dumps(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class UtcStamp:
    """Now as ISO 8601 in UTC, as structlog's `TimeStamper(fmt="iso", utc=True)` writes it.

    The date and time of day are formatted once per second, not once per line: a worker
    writes a line per send, and formatting a datetime cost more than rendering the line.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, micro = divmod(self._clock_ns() // 1000, 1_000_000)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._prefix = moment.isoformat(timespec="seconds").removesuffix("+00:00")
            self._second = second
        # `isoformat()` leaves the fraction out when it is zero.
        return f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"


_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


class JsonLine:
    """One processor for a structlog event's JSON line: what `add_log_level`, the UTC
    `TimeStamper`, `mask_secrets`, `format_exc_info`, `redact_url_passwords` and the JSON
    renderer do one after the other, in one pass over the event's values (a line per send
    made the chain of seven processors a noticeable part of a worker's CPU)."""

    def __init__(self, stamp: Callable[[], str] | None = None) -> None:
        self._stamp = stamp or UtcStamp()

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        event_dict["level"] = _LEVEL_OF_METHOD.get(method_name, method_name)
        event_dict["timestamp"] = self._stamp()
        if "exc_info" in event_dict:
            event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
        for key, value in event_dict.items():
            if _names_secret(key):
                event_dict[key] = MASK
            elif type(value) is str:
                if "://" in value or "=" in value:
                    event_dict[key] = redact_passwords(value)
            elif type(value) not in _SCALARS:
                event_dict[key] = _redacted(_masked(value))
        return orjson.dumps(event_dict, default=str).decode()


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
    # After the traceback is rendered to text: it may quote a URL too.
    last: list[Any] = [structlog.processors.format_exc_info, redact_url_passwords, renderer]
    # The worker's own lines take the one-pass processor; the standard library's records
    # (few) keep the chain, which `ProcessorFormatter` needs.
    native: list[Any] = (
        [*shared, *last]
        if log_format == "console"
        else [structlog.contextvars.merge_contextvars, JsonLine()]
    )

    structlog.configure(
        processors=native,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=LineLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )

    handler = LineHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
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
            processors=[
                structlog.processors.add_log_level,
                mask_secrets,
                structlog.processors.format_exc_info,
                redact_url_passwords,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=LineLoggerFactory(sys.stderr),
        )
    return structlog.get_logger(name)
