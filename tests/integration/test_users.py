"""`dispatcher users` against the sandbox: the Users API, and importing many users under the
shared rate limit, resumably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import MOBILE_APP_ID, wait_until
from tests.integration.helpers import run_cli

pytestmark = pytest.mark.integration


def max_per_second(timestamps: list[float]) -> int:
    """The most requests in any sliding window of one second."""
    ordered = sorted(timestamps)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def creates(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    return [e for e in sandbox.admin.requests(kind="users") if e["method"] == "POST"]


def write_csv(path: Path, identifiers: list[str], bad: dict[int, str] | None = None) -> Path:
    lines = ["identifier,password"]
    for n, identifier in enumerate(identifiers):
        lines.append((bad or {}).get(n, f"{identifier},pw-{n}"))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_create_get_passwd_list_and_delete(
    settings_env: dict[str, str], sandbox: SandboxProcess
) -> None:
    """A generated password is printed once; an identifier with '/' and '%' survives the URL;
    a listing streams every page; a missing user is exit 1."""
    odd = "a/b%c?d"
    created = run_cli(settings_env, "users", "create", odd)
    assert created.returncode == 0, created.stderr
    password = created.stdout.split("password: ")[1].strip()
    assert len(password) == 20
    again = run_cli(settings_env, "users", "create", odd)
    assert again.returncode == 1
    assert "exists already" in again.stderr

    got = run_cli(settings_env, "users", "get", odd, "--json")
    assert got.returncode == 0, got.stderr
    assert '"identifier":"a/b%c?d"' in got.stdout

    changed = run_cli(settings_env, "users", "passwd", odd, "--password-stdin", stdin="new_Pw-1\n")
    assert changed.returncode == 0, changed.stderr
    assert "new_Pw-1" not in changed.stdout + changed.stderr

    sandbox.admin.seed_users(MOBILE_APP_ID, [f"seed{n:03d}" for n in range(249)])
    listed = run_cli(settings_env, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 250
    pages = [e for e in sandbox.admin.requests(kind="users") if e["method"] == "GET"]
    assert len(pages) == 1 + 3  # the get, then pages of 100, 100, 50

    assert run_cli(settings_env, "users", "delete", odd).returncode == 0
    missing = run_cli(settings_env, "users", "get", odd)
    assert missing.returncode == 1
    bad = run_cli(settings_env, "users", "create", "has space")
    assert bad.returncode == 2
    assert "identifier: does not match" in bad.stderr


@pytest.mark.timeout(120)
@pytest.mark.fault
def test_import_ten_thousand_with_existing_and_invalid_rows(
    settings_env: dict[str, str], sandbox: SandboxProcess, tmp_path: Path, report: Any
) -> None:
    """10,000 rows, 50 of them users already and 3 invalid: 9,947 created, 50 skipped, the 3
    reported by row and field, exit 1, and the API never sees more than the rate limit."""
    rate, burst = 2500, 100
    env = {**settings_env, "DISPATCHER_RATE_LIMIT": str(rate), "DISPATCHER_RATE_BURST": str(burst)}
    identifiers = [f"customer-{n:05d}" for n in range(10_000)]
    sandbox.admin.seed_users(MOBILE_APP_ID, identifiers[100:150])
    bad = {10: "has space,pw-10", 20: "customer-00020,x", 30: ",pw-30"}
    path = write_csv(tmp_path / "users.csv", identifiers, bad)

    started = time.monotonic()
    result = run_cli(env, "users", "import", str(path), "--concurrency", "64")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "created 9947, skipped 50 (existed), failed 3" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("row ")]
    assert [line.split(":")[0:2] for line in errors] == [
        ["row 12", " identifier"],
        ["row 22", " password"],
        ["row 32", " identifier"],
    ]
    assert "pw-" not in result.stderr
    assert "'x'" not in result.stderr
    assert sandbox.admin.stats()["users"][str(MOBILE_APP_ID)] == 9_997
    posts = creates(sandbox)
    assert len(posts) == 9_997
    peak = max_per_second([entry["ts"] for entry in posts])
    assert peak <= rate + burst
    report("import_s", elapsed)
    report("rows_per_s", 10_000 / elapsed)
    report("peak_creates_in_any_second", peak)


def test_an_existing_user_answered_with_400_is_skipped_too(
    settings_env: dict[str, str], sandbox: SandboxProcess, tmp_path: Path
) -> None:
    sandbox.admin.set_users_exists_status(400)
    identifiers = [f"u{n}" for n in range(20)]
    sandbox.admin.seed_users(MOBILE_APP_ID, identifiers[:5])
    path = tmp_path / "users.jsonl"
    path.write_text("".join(f'{{"identifier": "{i}"}}\n' for i in identifiers))
    out = tmp_path / "passwords.csv"
    result = run_cli(
        settings_env, "users", "import", str(path), "--passwords-out", str(out), "--json"
    )
    assert result.returncode == 0, result.stderr
    assert '"created":15,"skipped":5,"failed":0,"generated_passwords":15' in result.stdout
    assert len(out.read_text().splitlines()) == 15
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def _interrupted_then_resumed(
    settings_env: dict[str, str], sandbox: SandboxProcess, tmp_path: Path, signum: int
) -> None:
    total = 2_000
    env = {**settings_env, "DISPATCHER_RATE_LIMIT": "500", "DISPATCHER_RATE_BURST": "20"}
    path = write_csv(tmp_path / "users.csv", [f"resume-{n:05d}" for n in range(total)])
    first = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "users", "import", str(path)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: sandbox.admin.stats()["users"].get(str(MOBILE_APP_ID), 0) >= total // 2,
            timeout=60,
            what="half the users created",
        )
        first.send_signal(signum)
        _, stderr = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
    if signum != signal.SIGKILL:
        assert first.returncode == 130, stderr
        assert "run the same command again" in stderr
    assert sandbox.admin.stats()["users"][str(MOBILE_APP_ID)] < total

    second = run_cli(env, "users", "import", str(path))
    assert second.returncode == 0, second.stderr
    assert sandbox.admin.stats()["users"][str(MOBILE_APP_ID)] == total
    created = Counter(e["identifier"] for e in creates(sandbox) if e["status"] == 201)
    assert len(created) == total
    assert max(created.values()) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.fault
def test_an_interrupted_import_run_again_creates_nothing_twice(
    settings_env: dict[str, str], sandbox: SandboxProcess, tmp_path: Path, signum: int
) -> None:
    _interrupted_then_resumed(settings_env, sandbox, tmp_path, signum)


@pytest.mark.fault
@pytest.mark.timeout(120)
def test_a_killed_import_run_again_creates_nothing_twice(
    settings_env: dict[str, str], sandbox: SandboxProcess, tmp_path: Path
) -> None:
    _interrupted_then_resumed(settings_env, sandbox, tmp_path, signal.SIGKILL)


def test_the_same_import_from_python(
    settings: Settings, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    import dispatcher

    path = write_csv(tmp_path / "users.csv", ["p1", "p2", "p3"], {1: "p 2,pw-1"})
    sandbox.admin.seed_users(MOBILE_APP_ID, ["p3"])
    result = dispatcher.import_users(path, settings=settings)
    assert (result.created, result.skipped) == (1, 1)
    assert [(e.row, e.field) for e in result.failed] == [(3, "identifier")]
