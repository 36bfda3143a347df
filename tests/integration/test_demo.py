"""`dispatcher demo` end to end: its own Redis, sandbox and worker."""

from __future__ import annotations

import subprocess
import sys


def test_demo_of_300_intents_reaches_every_outcome_and_says_its_rate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "demo", "--count", "300"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("rate limit 200/s (the demo's own")
    assert "... and 279 more: 279 sent, 0 dead letter(s), 0 without an outcome" in result.stdout
    assert lines[-1].startswith("Every accepted intent reached an outcome in ")
    assert "\x1b[" not in result.stdout
