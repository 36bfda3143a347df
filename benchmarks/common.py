"""Constants, payloads and small helpers shared by the benchmark driver and its children."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.sandbox.admin import SandboxAdmin

REPO_ROOT = Path(__file__).resolve().parents[1]

# The baseline's dramatiq queue and actor; `benchmarks.baseline` declares them and the
# driver enqueues raw messages for them without importing that module (it reads its
# settings from the environment at import, as a dramatiq CLI module must).
BASELINE_QUEUE = "default"
BASELINE_ACTOR = "post"

# The mobile app id every message is sent for; the sandbox accepts any positive one.
MOBILE_APP_ID = 1


class BenchmarkError(RuntimeError):
    """A run could not be completed, so one of its figures could not be measured."""


def intent(ref: str, n: int) -> dict[str, Any]:
    """A notification intent as a producer hands it to the dispatcher."""
    return {"id": ref, "recipients": [f"user{n}"], "text": f"benchmark {n}"}


def catapush_message(ref: str, n: int) -> dict[str, Any]:
    """The `POST /messages` body the dispatcher renders from `intent(ref, n)`."""
    return {
        "mobileAppId": MOBILE_APP_ID,
        "text": f"benchmark {n}",
        "recipients": [{"identifier": f"user{n}"}],
        "messageRef": ref,
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was really observed, never an interpolation."""
    if not values:
        raise BenchmarkError("no samples to take a percentile of")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def accepted_entries(admin: SandboxAdmin) -> list[dict[str, Any]]:
    """Every message the sandbox accepted (201), read from its request log page by page."""
    entries: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = admin.requests(kind="messages", since=cursor)
        if not page:
            return [entry for entry in entries if entry.get("status") == 201]
        entries += page
        cursor = max(int(entry["seq"]) for entry in page)
