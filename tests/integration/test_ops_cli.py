"""The ops commands as a new user meets them: dlq replay and purge, status times."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from dispatcher.producer import Producer
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetterEntry
from tests.integration.helpers import dead_letters, run_cli

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _dead(client: redis.Redis, settings: Settings, *ids: str) -> None:
    store = dead_letters(client, settings)
    for intent_id in ids:
        store.add(
            DeadLetterEntry.create(
                intent_id=intent_id,
                reason="rejected",
                status_code=403,
                title="Forbidden",
                detail="refused",
                attempts=1,
                intent={"id": intent_id, "recipients": ["alice"], "text": "hi"},
            )
        )


def test_replay_with_an_unknown_id_replays_the_known_one_and_says_so(
    redis_client: redis.Redis, settings: Settings, settings_env: dict[str, str]
) -> None:
    _dead(redis_client, settings, "known-0001")

    result = run_cli(settings_env, "dlq", "replay", "known-0001", "missing-0001")

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["replayed known-0001"]
    assert "no dead letter 'missing-0001'" in result.stderr
    assert "replayed 1, 1 failed" in result.stderr
    assert dead_letters(redis_client, settings).get("known-0001") is None
    status = run_cli(settings_env, "status", "known-0001")
    assert "state: queued" in status.stdout


def test_replay_all_without_a_terminal_prints_no_progress_bar(
    redis_client: redis.Redis, settings: Settings, settings_env: dict[str, str]
) -> None:
    _dead(redis_client, settings, "all-00001", "all-00002", "all-00003")

    result = run_cli(settings_env, "dlq", "replay", "--all")

    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"replayed all-0000{n}" for n in (1, 2, 3)]
    assert "\x1b[" not in result.stdout + result.stderr
    assert dead_letters(redis_client, settings).count() == 0


def test_purge_all_without_a_terminal_needs_yes(
    redis_client: redis.Redis, settings: Settings, settings_env: dict[str, str]
) -> None:
    _dead(redis_client, settings, "purge-0001", "purge-0002")

    refused = run_cli(settings_env, "dlq", "purge", "--all", stdin="")

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1
    assert "--yes" in refused.stderr
    assert dead_letters(redis_client, settings).count() == 2

    dry = run_cli(settings_env, "dlq", "purge", "--all", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        "would purge purge-0001 (rejected)",
        "would purge purge-0002 (rejected)",
        "would purge 2",
    ]
    assert dead_letters(redis_client, settings).count() == 2

    done = run_cli(settings_env, "dlq", "purge", "--all", "--yes")
    assert (done.returncode, done.stdout.strip()) == (0, "purged 2")
    assert dead_letters(redis_client, settings).count() == 0


def test_purge_of_ids_purges_the_known_and_reports_the_unknown(
    redis_client: redis.Redis, settings: Settings, settings_env: dict[str, str]
) -> None:
    _dead(redis_client, settings, "ids-00001")

    result = run_cli(settings_env, "dlq", "purge", "ids-00001", "nope-00001")

    assert result.returncode == 1
    assert result.stdout.strip() == "purged 1"
    assert "no dead letter 'nope-00001'" in result.stderr


def test_status_shows_times_in_utc_not_epoch_milliseconds(
    settings: Settings, settings_env: dict[str, str]
) -> None:
    producer = Producer.from_settings(settings)
    before_ms = int(time.time() * 1000)
    producer.requeue(
        {"id": "later-0001", "recipients": ["a"], "text": "x"}, attempt=2, delay_ms=60_000
    )
    producer.close()

    result = run_cli(settings_env, "status", "later-0001")

    assert result.returncode == 0, result.stderr
    eta_line = next(line for line in result.stdout.splitlines() if line.startswith("eta: "))
    shown = eta_line.removeprefix("eta: ")
    assert ISO_UTC.fullmatch(shown), eta_line
    eta = datetime.fromisoformat(shown.replace("Z", "+00:00"))
    assert eta.tzinfo == UTC or eta.utcoffset() is not None
    assert eta.timestamp() * 1000 >= before_ms + 59_000
    assert not re.search(r"\b\d{13}\b", result.stdout)


def test_replay_all_on_a_terminal_shows_a_progress_bar(
    redis_client: redis.Redis, settings: Settings, settings_env: dict[str, str]
) -> None:
    _dead(redis_client, settings, "tty-00001", "tty-00002")

    result, shown = _stderr_on_a_terminal(settings_env, "dlq", "replay", "--all")

    assert result.returncode == 0
    assert sorted(result.stdout.splitlines()) == ["replayed tty-00001", "replayed tty-00002"]
    assert "replay" in shown
    assert "2/2" in shown


def test_enqueue_of_a_file_on_a_terminal_shows_a_progress_bar(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "intents.jsonl"
    source.write_text(
        "".join(f'{{"recipients": ["u{n}"], "text": "hi"}}\n' for n in range(1200)) + "broken\n"
    )

    result, shown = _stderr_on_a_terminal(settings_env, "enqueue", str(source))

    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1200
    assert "1201/1201" in shown
    assert "line 1201: not valid JSON" in shown


def _stderr_on_a_terminal(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Runs the CLI with stderr on a pseudo-terminal, stdout on a pipe."""
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dispatcher", *args],
            env={**os.environ, **env, "COLUMNS": "120"},
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        return result, _drain(leader)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other side is closed: all was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
