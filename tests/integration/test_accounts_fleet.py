"""Two Catapush accounts in one fleet: each app's intents go out with its own account's
token, and each account's rate limit holds, counted at the sandbox."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import wait_until
from tests.integration.helpers import all_sent, dead_letters, run_cli
from tests.integration.test_users import max_per_second

pytestmark = pytest.mark.integration

ACCOUNTS = {
    # name: (client id, secret, app, rate, burst, intents)
    "shop": ("shop-id", "shop-Secret-1", 101, 20, 2, 80),
    "courier": ("courier-id", "courier-Secret-2", 202, 30, 3, 120),
}


def accounts_file(path: Path) -> Path:
    text = ""
    for name, (client_id, secret, app, rate, burst, _) in ACCOUNTS.items():
        text += (
            f'[{name}]\nclient_id = "{client_id}"\nclient_secret = "{secret}"\n'
            f"mobile_app_ids = [{app}]\nrate_limit = {rate}\nrate_burst = {burst}\n\n"
        )
    path.write_text(text)
    return path


@pytest.mark.timeout(120)
@pytest.mark.fault
def test_each_app_sends_with_its_accounts_token_within_its_rate_limit(
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Callable[..., Any],
    tmp_path: Path,
    report: Any,
) -> None:
    for client_id, secret, app, *_ in ACCOUNTS.values():
        # The sandbox refuses (403) a token of one account sending for another's app.
        sandbox.admin.add_client(client_id, secret, [app])
    path = accounts_file(tmp_path / "accounts.toml")
    ids: list[str] = []
    producer = Producer.from_settings(settings)
    try:
        for name, (_, _, app, _, _, count) in ACCOUNTS.items():
            for n in range(count):
                ids.append(
                    producer.enqueue(
                        {
                            "id": f"{name}-{n:04d}",
                            "mobileAppId": app,
                            "recipients": [f"{name}{n}"],
                            "text": "hi",
                        }
                    )
                )
    finally:
        producer.close()

    start_worker(
        processes=2,
        threads=16,
        DISPATCHER_ACCOUNTS_FILE=str(path),
        DISPATCHER_CATAPUSH_MOBILE_APP_ID="202",
    )
    wait_until(lambda: all_sent(redis_client, settings, ids), timeout=90, what="every intent sent")
    assert dead_letters(redis_client, settings).list() == []

    posts = [e for e in sandbox.admin.requests(kind="oauth") if e["method"] == "POST"]
    owner = {e["token"]: e["client_id"] for e in posts if e["status"] == 200}
    assert sorted(owner.values()) == ["courier-id", "shop-id"]
    sends: dict[str, list[float]] = defaultdict(list)
    for entry in sandbox.admin.requests(kind="messages"):
        ref = entry["messageRef"]
        name = ref.split("-")[0]
        client_id, _, app, *_ = ACCOUNTS[name]
        assert owner[entry["token"]] == client_id, entry
        assert entry["body"]["mobileAppId"] == app
        sends[name].append(entry["ts"])
    for name, (_, _, _, rate, burst, count) in ACCOUNTS.items():
        assert len(sends[name]) >= count
        peak = max_per_second(sends[name])
        report(f"{name}_peak_sends_in_any_second", peak)
        assert peak <= rate + burst


def test_a_bad_accounts_file_stops_the_worker_with_one_line(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[shop]\nclient_id = "x"\nclient_secret = "Never-Shown-9"\n')
    env = {**settings_env, "DISPATCHER_ACCOUNTS_FILE": str(path)}
    result = run_cli(env, "worker", "--threads", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: DISPATCHER_ACCOUNTS_FILE: {path}: [shop] mobile_app_ids: Field required"
    ]
    assert "Never-Shown-9" not in result.stdout + result.stderr
