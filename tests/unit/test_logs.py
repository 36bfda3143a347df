"""Log events: secrets and URL passwords masked, and lines kept whole across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.logs import (
    MASK,
    mask_secrets,
    redact_passwords,
    redact_url_passwords,
    write_line,
)


def mask(event: dict[str, Any]) -> dict[str, Any]:
    result = mask_secrets(None, "info", event)
    assert result is event
    return dict(result)


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "client_secret",
        "CALLBACK_SECRET",
        "token",
        "access_token",
        "refreshToken",
        "password",
        "redis_password",
        "authorization",
        "Authorization",
        "proxy-authorization",
    ],
)
def test_keys_naming_a_secret_are_masked(key: str) -> None:
    """A value under a key containing secret/token/password/authorization becomes ***."""
    assert mask({"event": "token.refreshed", key: "Bearer abc"})[key] == MASK


def test_other_keys_are_kept() -> None:
    """Ordinary keys and the event name are left untouched."""
    event = {"event": "delivery.sent", "intent_id": "order-1234", "status_code": 201, "attempt": 2}
    assert mask(dict(event)) == event


def test_mask_replaces_any_value_type() -> None:
    """Masking applies whatever the value is: None, numbers, structures."""
    masked = mask({"token": None, "password": 1234, "secret": {"nested": "x"}, "n": 1})
    assert masked == {"token": MASK, "password": MASK, "secret": MASK, "n": 1}


@settings(max_examples=100, deadline=None, database=None)
@given(
    prefix=st.text(alphabet="abcdefxyz_-", max_size=8),
    part=st.sampled_from(["secret", "token", "password", "authorization"]),
    suffix=st.text(alphabet="abcdefxyz_-", max_size=8),
    upper=st.booleans(),
    value=st.text(max_size=20),
)
def test_secret_key_property(prefix: str, part: str, suffix: str, upper: bool, value: str) -> None:
    """Any key containing one of the secret words, in any case, is masked."""
    key = prefix + (part.upper() if upper else part) + suffix
    assert mask({key: value, "event": "x"}) == {key: MASK, "event": "x"}


# -- URL passwords -----------------------------------------------------------------------------


def redact(event: dict[str, Any]) -> dict[str, Any]:
    return dict(redact_url_passwords(None, "info", event))


def test_url_password_is_redacted_anywhere_in_the_event() -> None:
    """A password inside a URL is masked in any string value, at any depth, in lists and
    in exceptions; the user, host and the rest of the text stay."""
    event = {
        "event": "redis.unavailable",
        "error": "Error connecting to redis://app:hunter2@cache:6379/0: refused",
        "nested": {"urls": ["rediss://:hunter2@a:6380/1", ("unix://:hunter2@/run/r.sock",)]},
        "exc": ValueError("bad url redis://:hunter2@cache/0"),
        "query": "unix:///run/r.sock?db=0&password=hunter2",
        "count": 3,
    }
    redacted = redact(event)
    assert "hunter2" not in repr(redacted)
    assert redacted["error"] == "Error connecting to redis://app:***@cache:6379/0: refused"
    assert redacted["nested"] == {"urls": ["rediss://:***@a:6380/1", ["unix://:***@/run/r.sock"]]}
    assert redacted["exc"] == "bad url redis://:***@cache/0"
    assert redacted["query"] == "unix:///run/r.sock?db=0&password=***"
    assert redacted["count"] == 3


def test_text_without_a_url_password_is_left_alone() -> None:
    """URLs without a password, and ordinary text with colons and @, are not changed."""
    event = {
        "event": "server.started",
        "url": "https://api.catapush.com/1/messages",
        "redis": "redis://app@cache:6379/0",
        "note": "ratio 1:2 @ noon, mail bob@example.com",
    }
    assert redact(dict(event)) == event


@settings(max_examples=100, deadline=None, database=None)
@given(
    scheme=st.sampled_from(["redis", "rediss", "unix", "http", "amqp"]),
    user=st.text(alphabet="abcxyz_-.", max_size=6),
    password=st.text(alphabet="ABCXYZ0189!$%&*+=@:/", min_size=6, max_size=20),
    host=st.sampled_from(["cache:6379/0", "10.0.0.1", "/run/redis.sock"]),
)
def test_url_password_property(scheme: str, user: str, password: str, host: str) -> None:
    """Whatever the password holds (even @ or :), it does not survive, and the user does."""
    redacted = redact_passwords(f"failed: {scheme}://{user}:{password}@{host} (x)")
    assert redacted == f"failed: {scheme}://{user}:***@{host} (x)"


# -- Whole lines -------------------------------------------------------------------------------

_WRITER = """
import logging, sys
from dispatcher.logs import configure_logging, get_logger
configure_logging("json")
log = get_logger("writer")
stdlib = logging.getLogger("dramatiq.writer")
name, count = sys.argv[1], int(sys.argv[2])
for n in range(count):
    if n % 10 == 0:
        stdlib.warning("stdlib line %s %s %s", name, n, "y" * (n % 1500))
    else:
        log.info("writer.wrote", writer=name, n=n, padding="x" * (n % 2500))
"""

LINES_PER_WRITER = 3000


def start_writers(stderr: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, name, str(LINES_PER_WRITER)],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
        for name in ("a", "b")
    ]


def wait_for(writers: list[subprocess.Popen[bytes]]) -> None:
    for writer in writers:
        assert writer.wait(timeout=60) == 0


def check_lines(data: bytes) -> None:
    lines = data.split(b"\n")
    assert lines[-1] == b""
    events = [orjson.loads(line) for line in lines[:-1]]  # every line is one whole object
    assert len(events) == 2 * LINES_PER_WRITER
    for name in ("a", "b"):
        mine = [e for e in events if e.get("writer") == name or f" {name} " in e["event"]]
        assert len(mine) == LINES_PER_WRITER


def test_processes_sharing_a_pipe_never_split_or_merge_lines() -> None:
    """Two processes logging thousands of lines to one pipe: each line parses as JSON."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader:
        writers = start_writers(write_end)
        os.close(write_end)  # the writers hold their own copies: EOF once both exit
        data = reader.read()
        wait_for(writers)
    check_lines(data)


def test_processes_sharing_a_file_never_split_or_merge_lines(tmp_path: Path) -> None:
    """The same through one open file, as with `dispatcher worker 2>log`."""
    path = tmp_path / "shared.log"
    with path.open("wb") as shared:
        wait_for(start_writers(shared.fileno()))
    check_lines(path.read_bytes())


def test_line_logger_writes_each_line_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """One os.write per line, the newline included; a partial write is resumed."""
    calls: list[bytes] = []

    def partial_write(fd: int, data: bytes) -> int:
        calls.append(bytes(data))
        return min(len(data), 5)

    monkeypatch.setattr(os, "write", partial_write)
    write_line(2, "hello world")
    assert calls[0] == b"hello world\n"
    assert b"".join(call[:5] for call in calls) == b"hello world\n"
