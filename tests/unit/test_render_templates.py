"""`dispatcher.render.render` with a real `TemplateStore` loaded from TOML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatcher.errors import IntentRefused
from dispatcher.intents import MAX_TEXT_LENGTH, Intent
from dispatcher.render import render
from dispatcher.templates import TemplateStore

NOW_MS = 1_700_000_000_000

ORDER_SHIPPED = """\
default_locale = "en"
[en]
text = "Hi {{ name }}, order {{ order }} has shipped"
notificationText = "Order shipped"
androidTitle = "Shop"
fallbackText = "Order {{ order }} shipped"
[it]
text = "Ciao {{ name }}, l'ordine {{ order }} è stato spedito"
"""

# Only `text`: the fields Catapush would not get unless a template gives them.
PLAIN = 'default_locale = "en"\n[en]\ntext = "{{ body }}"\n'


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    (tmp_path / "order_shipped.toml").write_text(ORDER_SHIPPED, encoding="utf-8")
    (tmp_path / "plain.toml").write_text(PLAIN, encoding="utf-8")
    return TemplateStore.load(tmp_path)


def intent(**fields: Any) -> Intent:
    data: dict[str, Any] = {
        "id": "order-1234",
        "recipients": ["alice"],
        "template": "order_shipped",
        "data": {"name": "Ada", "order": 7},
    }
    data.update(fields)
    return Intent.model_validate(data)


def wire(store: TemplateStore, the_intent: Intent) -> dict[str, Any]:
    message = render(the_intent, default_mobile_app_id=77, now_ms=NOW_MS, templates=store)
    return message.to_wire()


def refused(store: TemplateStore, the_intent: Intent) -> list[str]:
    with pytest.raises(IntentRefused) as caught:
        render(the_intent, default_mobile_app_id=77, now_ms=NOW_MS, templates=store)
    return caught.value.problems


def test_template_fills_every_catapush_field(store: TemplateStore) -> None:
    """text, notificationText, androidTitle and fallbackText land in their wire fields."""
    assert wire(store, intent()) == {
        "mobileAppId": 77,
        "messageRef": "order-1234",
        "text": "Hi Ada, order 7 has shipped",
        "notificationText": "Order shipped",
        "recipients": [{"identifier": "alice"}],
        "devicesData": {"android": {"title": "Shop"}},
        "fallback": {"text": "Order 7 shipped"},
    }


def test_intent_locale_selects_the_table(store: TemplateStore) -> None:
    """The intent's `locale` picks the table; missing keys still come from the default."""
    body = wire(store, intent(locale="it_IT"))
    assert body["text"] == "Ciao Ada, l'ordine 7 è stato spedito"
    assert body["notificationText"] == "Order shipped"


def test_recipient_data_overrides_text_only_when_it_differs(store: TemplateStore) -> None:
    """A recipient's own data yields `override.text`, unless it renders the shared text."""
    recipients = [
        "alice",
        {"identifier": "bob", "data": {"name": "Bob"}},
        {"identifier": "carol", "data": {"name": "Ada"}},
    ]
    body = wire(store, intent(recipients=recipients))
    assert body["text"] == "Hi Ada, order 7 has shipped"
    assert body["recipients"] == [
        {"identifier": "alice"},
        {"identifier": "bob", "override": {"text": "Hi Bob, order 7 has shipped"}},
        {"identifier": "carol"},
    ]


def test_recipient_locale_overrides_text_only_when_it_differs(store: TemplateStore) -> None:
    """A recipient's `locale` yields `override.text`; one that falls back to the same table not."""
    recipients = [
        {"identifier": "bob", "locale": "it", "mobileNumber": "393331234567"},
        {"identifier": "carol", "locale": "en-GB"},
    ]
    body = wire(store, intent(recipients=recipients))
    assert body["recipients"] == [
        {
            "identifier": "bob",
            "override": {
                "text": "Ciao Ada, l'ordine 7 è stato spedito",
                "mobileNumber": "393331234567",
            },
        },
        {"identifier": "carol"},
    ]


def test_android_title_merges_with_the_intents_devices_data(store: TemplateStore) -> None:
    """`androidTitle` becomes `devicesData.android.title` beside the intent's own options."""
    body = wire(store, intent(devicesData={"ios": {"badge": 2}}))
    assert body["devicesData"] == {"ios": {"badge": 2}, "android": {"title": "Shop"}}


def test_fallback_text_merges_with_the_intents_fallback(store: TemplateStore) -> None:
    """`fallbackText` becomes `fallback.text` beside the intent's own fallback settings."""
    body = wire(store, intent(fallback={"timeout": 120, "condition": "unread"}))
    assert body["fallback"] == {"timeout": 120, "condition": "unread", "text": "Order 7 shipped"}


def test_template_without_optional_keys_adds_no_optional_fields(store: TemplateStore) -> None:
    """A template with only `text` sends no notificationText, devicesData or fallback."""
    body = wire(store, intent(template="plain", data={"body": "Hello"}))
    assert body == {
        "mobileAppId": 77,
        "messageRef": "order-1234",
        "text": "Hello",
        "recipients": [{"identifier": "alice"}],
    }


def test_non_gsm_fallback_text_is_refused(store: TemplateStore) -> None:
    """A rendered fallback text outside GSM 03.38 refuses the intent on `fallback.text`."""
    problems = refused(store, intent(data={"name": "Ada", "order": "№7"}))
    assert len(problems) == 1
    assert problems[0].startswith("fallback.text: character '№' at position 6")


def test_rendered_text_over_the_limit_is_refused(store: TemplateStore) -> None:
    """A rendered text longer than 32768 characters refuses the intent on `text`."""
    problems = refused(store, intent(template="plain", data={"body": "x" * (MAX_TEXT_LENGTH + 1)}))
    assert problems == ["text: String should have at most 32768 characters"]


def test_recipient_text_over_the_limit_is_refused(store: TemplateStore) -> None:
    """An over-long per-recipient text is refused on that recipient's `override.text`."""
    recipients = ["alice", {"identifier": "bob", "data": {"body": "x" * (MAX_TEXT_LENGTH + 1)}}]
    problems = refused(store, intent(template="plain", data={"body": "Hi"}, recipients=recipients))
    assert problems == ["recipients.1.override.text: String should have at most 32768 characters"]


def test_unknown_template_is_refused(store: TemplateStore) -> None:
    """An intent naming a template the folder lacks is refused on `template`."""
    assert refused(store, intent(template="nope")) == [
        "template: 'nope' is not defined in DISPATCHER_TEMPLATES_DIR"
    ]


def test_variable_missing_from_recipient_data_is_refused(store: TemplateStore) -> None:
    """Shared and recipient data together must give every variable the template uses."""
    recipients = [{"identifier": "bob", "data": {"name": "Bob"}}]
    problems = refused(store, intent(data={"name": "Ada"}, recipients=recipients))
    assert problems[0] == (
        "data: order_shipped.text needs 'order', which the intent's data does not give"
    )
