"""Templates end to end: checked at intake, rendered by the worker, refused when broken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from tests.conftest import wait_until
from tests.integration.helpers import all_sent, run_cli

ORDER_SHIPPED = """
default_locale = "en"
[en]
text = "Hi {{ name }}, order {{ order }} has shipped"
notificationText = "Order shipped"
androidTitle = "Shop"
fallbackText = "Order {{ order }} shipped"
[it]
text = "Ciao {{ name }}, l'ordine {{ order }} è stato spedito"
"""


@pytest.fixture
def templates_env(settings_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "order_shipped.toml").write_text(ORDER_SHIPPED, encoding="utf-8")
    return {**settings_env, "DISPATCHER_TEMPLATES_DIR": str(folder)}


def test_a_template_intent_is_rendered_per_recipient_and_delivered(
    settings: Settings,
    templates_env: dict[str, str],
    sandbox: SandboxProcess,
    redis_client: redis.Redis,
    start_worker: Any,
) -> None:
    """The worker renders the template with the intent's and each recipient's data and locale."""
    intent = {
        "id": "shipped-1234",
        "template": "order_shipped",
        "data": {"order": "1234", "name": "there"},
        "recipients": [
            {"identifier": "bob", "data": {"name": "Bob"}},
            {"identifier": "chiara", "locale": "it-IT", "data": {"name": "Chiara"}},
        ],
    }
    result = run_cli(templates_env, "enqueue", "-", stdin=json.dumps(intent) + "\n")
    assert result.returncode == 0, result.stderr
    start_worker(**{"DISPATCHER_TEMPLATES_DIR": templates_env["DISPATCHER_TEMPLATES_DIR"]})
    wait_until(
        lambda: all_sent(redis_client, settings, ["shipped-1234"]), timeout=30, what="receipt"
    )

    [request] = sandbox.admin.requests(kind="messages")
    body = request["body"]
    assert body["text"] == "Hi there, order 1234 has shipped"
    assert body["notificationText"] == "Order shipped"
    assert body["devicesData"] == {"android": {"title": "Shop"}}
    assert body["fallback"] == {"text": "Order 1234 shipped"}
    assert body["recipients"] == [
        {"identifier": "bob", "override": {"text": "Hi Bob, order 1234 has shipped"}},
        {
            "identifier": "chiara",
            "override": {"text": "Ciao Chiara, l'ordine 1234 è stato spedito"},
        },
    ]


def test_template_faults_are_refused_at_intake_line_by_line(templates_env: dict[str, str]) -> None:
    """An unknown template or a missing variable is refused with its line; good lines go in."""
    lines = [
        {"id": "tmpl-good-1", "template": "order_shipped", "data": {"order": "1", "name": "A"},
         "recipients": ["a"]},
        {"id": "tmpl-unknown", "template": "nope", "recipients": ["a"]},
        {"id": "tmpl-missing", "template": "order_shipped", "data": {"name": "A"},
         "recipients": ["a"]},
    ]  # fmt: skip
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    result = run_cli(templates_env, "enqueue", "-", stdin=stdin)

    assert result.returncode == 1
    assert result.stdout.split() == ["tmpl-good-1"]
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: template: 'nope' is not defined")
    assert errors[1].startswith("line 3: data: order_shipped.text needs 'order'")


def test_a_broken_template_folder_stops_the_worker_with_one_line(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    """A template that does not compile is a configuration error: exit 2, file and key named."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "welcome.toml").write_text('default_locale = "en"\n[en]\ntext = "Hi {{ name"\n')
    result = run_cli({**settings_env, "DISPATCHER_TEMPLATES_DIR": str(folder)}, "worker")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: DISPATCHER_TEMPLATES_DIR: welcome.toml: [en].text:")
