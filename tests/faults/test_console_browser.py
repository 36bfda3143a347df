"""The ops console in a real headless browser (Debian's chromium, driven by Playwright):
after a small run it shows the queue's depth and the dead letters, and a dead letter
replayed from the page is sent exactly once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from tests.conftest import wait_until
from tests.integration.helpers import accepted_refs, all_sent
from tests.integration.test_server import SECRET, ServerProcess

pytestmark = pytest.mark.fault

TOKEN = "console-token-0000000001"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Set to a path to save a screenshot of the console (the README's picture comes from here).
SCREENSHOT_ENV = "DISPATCHER_CONSOLE_SCREENSHOT"


@pytest.fixture
def server(settings_env: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(
        {**settings_env, "DISPATCHER_API_TOKENS": TOKEN, "DISPATCHER_CALLBACK_SECRET": SECRET}
    )
    process.wait_listening()
    yield process
    process.close()


@pytest.fixture
def page(server: ServerProcess) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def enqueue(settings: Settings, intents: list[dict[str, Any]]) -> None:
    producer = Producer.from_settings(settings)
    try:
        producer.enqueue_many([producer.check(_parse(i)) for i in intents], checked=True)
    finally:
        producer.close()


def _parse(data: dict[str, Any]) -> Any:
    from dispatcher.intents import parse_intent

    return parse_intent(data)


def test_the_console_shows_the_run_and_replays_a_dead_letter_once(
    server: ServerProcess,
    page: Any,
    settings: Settings,
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Callable[..., Any],
) -> None:
    sandbox.admin.add_fault(status=403, identifier="bob")
    sent_ids = [f"web-ok-{n:04d}" for n in range(4)]
    dead_ids = ["web-bob-0001", "web-bob-0002"]
    enqueue(settings, [{"id": i, "recipients": ["alice"], "text": "hi"} for i in sent_ids])
    enqueue(settings, [{"id": i, "recipients": ["bob"], "text": "hi"} for i in dead_ids])
    worker = start_worker()
    store = DeadLetters(redis_client, Keys(settings.namespace))
    wait_until(lambda: all_sent(redis_client, settings, sent_ids), timeout=30, what="4 sent")
    wait_until(lambda: store.count() == 2, timeout=30, what="2 dead letters")
    assert worker.stop() == 0
    waiting = [f"web-later-{n:03d}" for n in range(3)]
    enqueue(settings, [{"id": i, "recipients": ["carol"], "text": "hi"} for i in waiting])

    # Signed out: the sign-in form, then the overview.
    page.goto(f"{server.url}/")
    assert page.title().startswith("Sign in")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#queues")
    assert page.text_content("tr[data-queue=notifications] .depth").strip() == "3"
    assert page.text_content("tr[data-reason=rejected] .count").strip() == "2"
    assert page.text_content("#dead-letters-total").strip() == "2"
    assert page.text_content("#sent-last-hour").strip() == "4"
    assert page.locator("#throughput rect").count() >= 1
    screenshot = os.environ.get(SCREENSHOT_ENV)
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)

    # Dead letters by reason, one inspected, replayed after a confirmation.
    page.click("tr[data-reason=rejected] a")
    assert page.locator("#dead-letters tbody tr").count() == 2
    page.click(f"tr[data-id={dead_ids[0]}] a")
    assert '"identifier": "bob"' in page.text_content("pre")
    sandbox.admin.clear_faults()
    page.click("#replay")
    assert page.text_content("h1").startswith("Replay")
    assert store.count() == 2  # nothing happens before the confirmation
    page.click("#confirm")
    page.wait_for_selector("[role=status]")
    assert f"Replayed {dead_ids[0]}" in page.text_content("[role=status]")
    assert [
        row.get_attribute("data-id") for row in page.locator("#dead-letters tbody tr").all()
    ] == [dead_ids[1]]
    start_worker()
    wait_until(
        lambda: all_sent(redis_client, settings, [dead_ids[0], *waiting]),
        timeout=30,
        what="the replayed intent and the waiting ones",
    )
    assert accepted_refs(sandbox)[dead_ids[0]] == 1
    assert accepted_refs(sandbox)[dead_ids[1]] == 0

    # The intent's status page shows it sent, with the callbacks Catapush sent.
    server.http.post(
        f"/v1/callbacks/catapush/{SECRET}",
        json={
            "type": "MessageStatus",
            "timestamp": "2024-05-01T10:15:30Z",
            "applicationId": "1",
            "messageId": "m-1",
            "recipient": "bob",
            "status": "delivered",
            "messageRef": dead_ids[0],
        },
    )
    page.goto(f"{server.url}/console/notifications?id={dead_ids[0]}")
    assert page.text_content("#state").strip() == "sent"
    assert "delivered" in page.text_content("#callbacks")

    # A forged form (no CSRF value) is refused, even with the cookie.
    forged = page.request.post(f"{server.url}/console/dead-letters/{dead_ids[1]}/purge", form={})
    assert forged.status == 403
    assert store.count() == 1
