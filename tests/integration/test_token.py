"""`dispatcher token status|revoke` against the sandbox and a fleet of worker processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import wait_until
from tests.integration.helpers import all_sent, enqueue_many, run_cli

pytestmark = pytest.mark.integration


def oauth_posts(sandbox: SandboxProcess, since: int = 0) -> list[dict[str, Any]]:
    return [e for e in sandbox.admin.requests(kind="oauth", since=since) if e["method"] == "POST"]


def last_seq(sandbox: SandboxProcess) -> int:
    entries = sandbox.admin.requests()
    return entries[-1]["seq"] if entries else 0


@pytest.mark.timeout(120)
@pytest.mark.fault
def test_after_revoke_three_worker_processes_fetch_exactly_one_new_token(
    settings_env: dict[str, str],
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Callable[..., Any],
    report: Any,
) -> None:
    status = run_cli(settings_env, "token", "status")
    assert status.returncode == 0, status.stderr
    assert "cached: no" in status.stdout

    start_worker(processes=3, threads=4)
    first = enqueue_many(settings, 60, prefix="before")
    wait_until(lambda: all_sent(redis_client, settings, first), timeout=60, what="first batch")
    tokens = [e["token"] for e in oauth_posts(sandbox)]
    assert len(tokens) == 1

    status = run_cli(settings_env, "token", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = orjson.loads(status.stdout)
    assert shown["cached"] is True
    assert shown["age_s"] >= 0
    assert "unknown" in shown["expiry"]
    assert tokens[0] not in status.stdout + status.stderr

    mark = last_seq(sandbox)
    revoked = run_cli(settings_env, "token", "revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert tokens[0] not in revoked.stdout + revoked.stderr
    deletes = [
        e for e in sandbox.admin.requests(kind="oauth", since=mark) if e["method"] == "DELETE"
    ]
    assert [(e["status"], e["revoked"]) for e in deletes] == [(200, 1)]
    assert "cached: no" in run_cli(settings_env, "token", "status").stdout

    mark = last_seq(sandbox)
    second = enqueue_many(settings, 90, prefix="after")
    wait_until(lambda: all_sent(redis_client, settings, second), timeout=60, what="second batch")
    assert len(oauth_posts(sandbox, since=mark)) == 1
    refused = [e for e in sandbox.admin.requests(kind="messages", since=mark) if e["status"] == 401]
    report("sends_refused_with_the_revoked_token", len(refused))


def test_status_of_a_permanent_token_and_an_unknown_account(
    settings_env: dict[str, str], sandbox: SandboxProcess
) -> None:
    env = {**settings_env, "DISPATCHER_CATAPUSH_ACCESS_TOKEN": sandbox.permanent_token}
    status = run_cli(env, "token", "status")
    assert status.returncode == 0, status.stderr
    assert "permanent access token" in status.stdout
    assert sandbox.permanent_token not in status.stdout
    unknown = run_cli(settings_env, "token", "status", "--account", "nope")
    assert unknown.returncode == 2
    assert "no account 'nope'; the accounts are default" in unknown.stderr
