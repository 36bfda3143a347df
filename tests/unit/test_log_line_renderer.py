"""The one-pass JSON line processor writes what the chain of structlog processors it
replaces writes, and its clock writes what structlog's UTC ISO stamper writes."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.logs import JsonLine, UtcStamp, mask_secrets, redact_url_passwords

STAMP = "2026-12-02T04:31:03.580910Z"


def fixed_stamp() -> str:
    return STAMP


def chained(method: str, event: dict[str, Any]) -> str:
    """The line the former chain of processors rendered, at the same timestamp."""
    rendered: MutableMapping[str, Any] = structlog.processors.add_log_level(None, method, event)
    rendered["timestamp"] = STAMP
    for processor in (mask_secrets, structlog.processors.format_exc_info, redact_url_passwords):
        rendered = processor(None, method, rendered)
    return str(structlog.processors.JSONRenderer(serializer=_dumps)(None, method, rendered))


def _dumps(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def one_pass(method: str, event: dict[str, Any]) -> str:
    return JsonLine(stamp=fixed_stamp)(None, method, event)


def test_a_send_line_is_rendered_as_before() -> None:
    """The worker's line per send: same keys, same order, same values."""
    event = {"intent_id": "order-1234", "message_id": "m-1", "attempt": 1, "event": "delivery.sent"}
    line = one_pass("info", dict(event))
    assert line == chained("info", dict(event))
    assert list(orjson.loads(line)) == [*event, "level", "timestamp"]


def test_secrets_urls_and_nested_values_are_masked_as_before() -> None:
    """Secret keys, URL passwords at any depth, lists, exceptions and odd types."""
    event = {
        "event": "redis.unavailable",
        "client_secret": "s3cret",
        "error": "Error connecting to redis://app:hunter2@cache:6379/0: refused",
        "nested": {"token": "t", "urls": ["rediss://:hunter2@a:6380/1"], "n": 1},
        "exc": ValueError("bad url redis://:hunter2@cache/0"),
        "query": "unix:///run/r.sock?db=0&password=hunter2",
        "items": ("redis://:hunter2@x/0", 2),
        "when": datetime(2026, 1, 2, tzinfo=UTC),
        "none": None,
        "flag": True,
        "ratio": 0.5,
    }
    line = one_pass("warning", dict(event))
    assert "hunter2" not in line
    assert "s3cret" not in line
    assert line == chained("warning", dict(event))


def test_exception_info_is_rendered_and_redacted_as_before() -> None:
    """`exc_info` becomes the traceback text, whose URL passwords are masked too."""
    try:
        raise RuntimeError("could not reach redis://:hunter2@cache/0")
    except RuntimeError as exc:
        error = exc
    line = one_pass("error", {"event": "delivery.crashed", "exc_info": error})
    assert line == chained("error", {"event": "delivery.crashed", "exc_info": error})
    rendered = orjson.loads(line)
    assert "RuntimeError" in rendered["exception"]
    assert "hunter2" not in line


def test_method_names_map_to_levels_as_before() -> None:
    """`warn` is written as warning and `exception` as error."""
    for method in ("debug", "info", "warn", "warning", "error", "exception", "critical"):
        assert one_pass(method, {"event": "x"}) == chained(method, {"event": "x"})


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    event=st.dictionaries(
        st.sampled_from(["event", "intent_id", "token", "url", "detail", "a_password", "n"])
        | st.text(max_size=10),
        _values | st.sampled_from(["redis://u:p@h/0", "x?password=p", "a=b"]),
        max_size=6,
    ),
    method=st.sampled_from(["info", "warning", "error"]),
)
def test_any_event_renders_as_before(event: dict[str, Any], method: str) -> None:
    """Whatever the keys and values, the line is the one the chain rendered."""
    assert one_pass(method, dict(event)) == chained(method, dict(event))


@given(ns=st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_stamp_is_isoformat_in_utc(ns: int) -> None:
    """To the microsecond, as `datetime.isoformat()` writes it (no fraction when it is 0)."""
    stamp = UtcStamp(clock_ns=lambda: ns)
    moment = datetime.fromtimestamp(ns // 1000 // 1_000_000, UTC).replace(
        microsecond=ns // 1000 % 1_000_000
    )
    assert stamp() == moment.isoformat().replace("+00:00", "Z")


def test_stamp_follows_the_clock_across_seconds() -> None:
    """The cached date and time of day change with the second."""
    now = [1_796_185_859_999_999_000]
    stamp = UtcStamp(clock_ns=lambda: now[0])
    assert stamp() == "2026-12-02T04:30:59.999999Z"
    now[0] += 1000
    assert stamp() == "2026-12-02T04:31:00Z"
    now[0] += 86_400 * 10**9 + 5000
    assert stamp() == "2026-12-03T04:31:00.000005Z"
