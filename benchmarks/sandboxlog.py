"""Reading back what the sandbox accepted: its counters, and its request log by `seq`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import BenchmarkError
from dispatcher.sandbox.admin import SandboxAdmin

POLL_S = 0.05
# No new 201 for this long means the system under test is stuck, not slow: even the
# slowest configuration accepts several notifications a second.
STALL_S = 30.0


class RequestLog:
    """Walks the sandbox's `POST /messages` log forward; each call returns only new entries."""

    def __init__(self, admin: SandboxAdmin) -> None:
        self._admin = admin
        self._cursor = 0

    def advance(self) -> list[dict[str, Any]]:
        entries = self._admin.requests(kind="messages", since=self._cursor)
        if entries:
            # Sequence numbers are shared with the OAuth log; skipping those is harmless.
            self._cursor = max(int(entry["seq"]) for entry in entries)
        return entries


def accepted_count(admin: SandboxAdmin) -> int:
    return int(admin.stats()["accepted"])


def wait_accepted(
    admin: SandboxAdmin,
    target: int,
    *,
    deadline_s: float,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Poll until the sandbox has answered 201 `target` times in all.

    Fails when `deadline_s` passes, when no 201 came for `STALL_S`, or when `check` raises
    (a worker that died will not finish the job).
    """
    start = time.monotonic()
    last_progress = start
    seen = -1
    while True:
        accepted = accepted_count(admin)
        if accepted >= target:
            return
        now = time.monotonic()
        if accepted != seen:
            seen, last_progress = accepted, now
        missing = f"{target - accepted} of the intents were not accepted"
        if now - last_progress > STALL_S:
            raise BenchmarkError(f"{missing}, and none for {STALL_S:.0f} s")
        if now - start > deadline_s:
            raise BenchmarkError(f"{missing} within {deadline_s:.0f} s")
        check()
        time.sleep(POLL_S)


def first_accepts(entries: list[dict[str, Any]], refs: set[str]) -> dict[str, float]:
    """messageRef → `ts` of its first 201, for the refs asked about."""
    accepted: dict[str, float] = {}
    for entry in entries:
        ref = entry.get("messageRef")
        if entry.get("status") == 201 and ref in refs and ref not in accepted:
            accepted[ref] = float(entry["ts"])
    return accepted
