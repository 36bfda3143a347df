"""Intent -> Catapush `POST /messages` body, with a fake in-memory template store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import IntentRefused
from dispatcher.intents import CatapushMessage, Intent
from dispatcher.render import Templates, remaining_expire_time, render

NOW_MS = 1_700_000_000_000
CALLBACK = "https://dispatcher.example.com/callbacks/catapush"


def make_intent(**fields: Any) -> Intent:
    data: dict[str, Any] = {"id": "order-1234", "recipients": ["alice"], "text": "hello"}
    data.update(fields)
    return Intent.model_validate({key: value for key, value in data.items() if value is not None})


def wire(intent: Intent, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"default_mobile_app_id": 77, "now_ms": NOW_MS}
    options.update(kwargs)
    message = render(intent, **options)
    assert isinstance(message, CatapushMessage)
    return message.to_wire()


@dataclass
class Rendered:
    text: str
    notification_text: str | None = None
    android_title: str | None = None
    fallback_text: str | None = None


@dataclass
class FakeTemplates:
    """Greets `name` in the requested locale; records every call."""

    notification_text: str | None = "Order shipped"
    android_title: str | None = None
    fallback_text: str | None = None
    calls: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def render(self, name: str, locale: str | None, data: dict[str, Any]) -> Rendered:
        self.calls.append((name, locale, dict(data)))
        greeting = "Ciao" if locale == "it" else "Hi"
        return Rendered(
            text=f"{greeting} {data.get('name', 'there')}, order {data.get('order', '?')}",
            notification_text=self.notification_text,
            android_title=self.android_title,
            fallback_text=self.fallback_text,
        )


def template_intent(**fields: Any) -> Intent:
    base: dict[str, Any] = {"text": None, "template": "order_shipped", "data": {"order": 7}}
    base.update(fields)
    return make_intent(**base)


def test_fake_templates_satisfy_the_protocol() -> None:
    """The fake used below has the shape render() asks for."""
    store: Templates = FakeTemplates()
    assert store.render("x", None, {}).text == "Hi there, order ?"


# -- inline intents ------------------------------------------------------------------------------


def test_intent_id_becomes_message_ref() -> None:
    """The intent id is sent as messageRef, the idempotency key Catapush echoes back."""
    assert wire(make_intent()) == {
        "mobileAppId": 77,
        "messageRef": "order-1234",
        "text": "hello",
        "recipients": [{"identifier": "alice"}],
    }


def test_intent_mobile_app_id_wins_over_default() -> None:
    """The default mobileAppId is used only when the intent names none."""
    assert wire(make_intent(mobileAppId=5))["mobileAppId"] == 5
    assert wire(make_intent(mobileAppId=5), default_mobile_app_id=None)["mobileAppId"] == 5
    assert wire(make_intent())["mobileAppId"] == 77


def test_intent_mobile_app_id_zero_is_not_replaced_by_default() -> None:
    """An explicit mobileAppId of 0 is the intent's choice, not 'absent'."""
    assert wire(make_intent(mobileAppId=0))["mobileAppId"] == 0


def test_no_mobile_app_id_anywhere_is_refused() -> None:
    """Without an intent mobileAppId or a default, the intent is refused naming mobileAppId."""
    with pytest.raises(IntentRefused) as caught:
        render(make_intent(), default_mobile_app_id=None, now_ms=NOW_MS)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("mobileAppId: ")


def test_recipient_ref_and_mobile_number_mapping() -> None:
    """recipientRef stays on the recipient; mobileNumber moves to override.mobileNumber."""
    intent = make_intent(
        recipients=[
            "alice",
            {"identifier": "bob", "recipientRef": "bob-order-1234"},
            {"identifier": "carol", "mobileNumber": "393331234567"},
            {"identifier": "dave", "recipientRef": "dave.ref", "mobileNumber": "12345678"},
        ]
    )
    assert wire(intent)["recipients"] == [
        {"identifier": "alice"},
        {"identifier": "bob", "recipientRef": "bob-order-1234"},
        {"identifier": "carol", "override": {"mobileNumber": "393331234567"}},
        {
            "identifier": "dave",
            "recipientRef": "dave.ref",
            "override": {"mobileNumber": "12345678"},
        },
    ]


def test_inline_recipient_data_does_not_override_text() -> None:
    """Per-recipient data on an inline intent never produces an override text."""
    intent = make_intent(recipients=[{"identifier": "bob", "data": {"name": "Bob"}}])
    assert wire(intent)["recipients"] == [{"identifier": "bob"}]


def test_notify_callback_only_when_a_url_is_given() -> None:
    """notifyCallback is {url, method: post} when a callback URL is configured, absent otherwise."""
    assert "notifyCallback" not in wire(make_intent())
    assert wire(make_intent(), notify_callback_url=CALLBACK)["notifyCallback"] == {
        "url": CALLBACK,
        "method": "post",
    }


def test_inline_optional_fields_are_copied() -> None:
    """notificationText, devicesData, fallback and isMarketing travel unchanged."""
    devices = {
        "ios": {"sound": False, "badge": 2, "customData": {"k": "v"}},
        "android": {"title": "T"},
    }
    fallback = {"timeout": 30, "text": "Shipped", "senderString": "Shop"}
    body = wire(
        make_intent(
            notificationText="Shipped!", devicesData=devices, fallback=fallback, isMarketing=True
        )
    )
    assert body["notificationText"] == "Shipped!"
    assert body["devicesData"] == devices
    assert body["fallback"] == fallback
    assert body["isMarketing"] is True


def test_is_marketing_false_is_kept() -> None:
    """An explicit isMarketing false is sent, not dropped as falsy."""
    assert wire(make_intent(isMarketing=False))["isMarketing"] is False


def test_empty_devices_data_and_fallback_are_left_out() -> None:
    """Empty devicesData/fallback objects are not sent."""
    body = wire(make_intent(devicesData={}, fallback={}))
    assert "devicesData" not in body
    assert "fallback" not in body


# -- expireTime ----------------------------------------------------------------------------------


def test_expire_time_counts_down_from_created_at() -> None:
    """expireTime is what is left of the intent's life, in whole elapsed seconds."""
    intent = make_intent(expireTime=3600, createdAt=NOW_MS - 10_500)
    assert wire(intent)["expireTime"] == 3590


def test_expire_time_is_full_without_created_at() -> None:
    """Without createdAt the intent is treated as created now."""
    assert wire(make_intent(expireTime=3600))["expireTime"] == 3600


def test_expire_time_never_below_one_second() -> None:
    """An intent past its life still renders with the minimum expireTime of 1."""
    intent = make_intent(expireTime=60, createdAt=NOW_MS - 3_600_000)
    assert remaining_expire_time(intent, now_ms=NOW_MS) == 60 - 3600
    assert wire(intent)["expireTime"] == 1


def test_expire_time_ignores_a_creation_time_in_the_future() -> None:
    """Clock skew (createdAt after now) does not lengthen the intent's life."""
    intent = make_intent(expireTime=60, createdAt=NOW_MS + 5_000)
    assert wire(intent)["expireTime"] == 60


def test_no_expire_time_when_intent_sets_none() -> None:
    """Catapush's own default applies when the intent has no expireTime."""
    intent = make_intent(createdAt=NOW_MS - 10_000)
    assert remaining_expire_time(intent, now_ms=NOW_MS) is None
    assert "expireTime" not in wire(intent)


@settings(max_examples=100, deadline=None, database=None)
@given(
    expire=st.integers(min_value=1, max_value=2_592_000),
    elapsed_ms=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_expire_time_countdown_property(expire: int, elapsed_ms: int) -> None:
    """expireTime is max(1, expire - floor(elapsed_s)) and never exceeds the intent's value."""
    intent = make_intent(expireTime=expire, createdAt=NOW_MS - elapsed_ms)
    sent = wire(intent)["expireTime"]
    assert sent == max(1, expire - elapsed_ms // 1000)
    assert 1 <= sent <= expire


# -- templates -----------------------------------------------------------------------------------


def test_template_renders_text_and_notification_text() -> None:
    """The top-level text and notificationText come from the template over the intent's data."""
    store = FakeTemplates()
    body = wire(template_intent(locale="it"), templates=store)
    assert body["text"] == "Ciao there, order 7"
    assert body["notificationText"] == "Order shipped"
    assert store.calls == [("order_shipped", "it", {"order": 7})]


def test_template_without_notification_text_leaves_it_out() -> None:
    """A template with no notificationText sends none (Catapush then uses text)."""
    body = wire(template_intent(), templates=FakeTemplates(notification_text=None))
    assert "notificationText" not in body


def test_per_recipient_data_overrides_text_only_when_it_differs() -> None:
    """A recipient's own data yields override.text when, and only when, its text differs."""
    store = FakeTemplates()
    intent = template_intent(
        data={"order": 7, "name": "friend"},
        recipients=[
            "alice",
            {"identifier": "bob", "data": {"name": "Bob"}},
            {"identifier": "carol", "data": {"name": "friend"}},
            {"identifier": "dave", "data": {"name": "Dave"}, "mobileNumber": "12345678"},
        ],
    )
    body = wire(intent, templates=store)
    assert body["text"] == "Hi friend, order 7"
    assert body["recipients"] == [
        {"identifier": "alice"},
        {"identifier": "bob", "override": {"text": "Hi Bob, order 7"}},
        {"identifier": "carol"},
        {
            "identifier": "dave",
            "override": {"text": "Hi Dave, order 7", "mobileNumber": "12345678"},
        },
    ]
    # One render for the intent, then one per recipient with data; alice has none.
    assert [call[2] for call in store.calls] == [
        {"order": 7, "name": "friend"},
        {"order": 7, "name": "Bob"},
        {"order": 7, "name": "friend"},
        {"order": 7, "name": "Dave"},
    ]


def test_recipient_locale_personalises_text() -> None:
    """A recipient's own locale renders its text in that locale; others keep the intent's."""
    store = FakeTemplates()
    intent = template_intent(recipients=["alice", {"identifier": "bruno", "locale": "it"}])
    body = wire(intent, templates=store)
    assert body["text"] == "Hi there, order 7"
    assert body["recipients"][1] == {
        "identifier": "bruno",
        "override": {"text": "Ciao there, order 7"},
    }
    assert store.calls[1] == ("order_shipped", "it", {"order": 7})


def test_recipient_without_locale_uses_intent_locale() -> None:
    """Recipient data is rendered in the intent's locale when the recipient names none."""
    store = FakeTemplates()
    intent = template_intent(locale="it", recipients=[{"identifier": "bob", "data": {"name": "B"}}])
    body = wire(intent, templates=store)
    assert store.calls[1][1] == "it"
    assert body["recipients"][0]["override"] == {"text": "Ciao B, order 7"}


def test_android_title_goes_to_devices_data_and_keeps_ios_options() -> None:
    """A template's androidTitle is placed at devicesData.android.title beside the intent's ios."""
    store = FakeTemplates(android_title="Shop")
    intent = template_intent(devicesData={"ios": {"badge": 1}})
    body = wire(intent, templates=store)
    assert body["devicesData"] == {"ios": {"badge": 1}, "android": {"title": "Shop"}}
    assert wire(template_intent(), templates=store)["devicesData"] == {"android": {"title": "Shop"}}


def test_template_android_title_replaces_intent_title() -> None:
    """With a template, its androidTitle takes precedence over the intent's own."""
    store = FakeTemplates(android_title="From template")
    intent = template_intent(devicesData={"android": {"title": "From intent"}})
    assert wire(intent, templates=store)["devicesData"] == {"android": {"title": "From template"}}


def test_fallback_text_goes_to_fallback_and_keeps_other_options() -> None:
    """A template's fallbackText is placed at fallback.text beside the intent's fallback options."""
    store = FakeTemplates(fallback_text="Order 7 shipped")
    body = wire(template_intent(fallback={"timeout": 120}), templates=store)
    assert body["fallback"] == {"timeout": 120, "text": "Order 7 shipped"}
    assert wire(template_intent(), templates=store)["fallback"] == {"text": "Order 7 shipped"}


def test_template_without_android_title_or_fallback_adds_nothing() -> None:
    """No androidTitle or fallbackText in the template means no devicesData or fallback."""
    body = wire(template_intent(), templates=FakeTemplates())
    assert "devicesData" not in body
    assert "fallback" not in body


def test_template_named_without_templates_is_refused() -> None:
    """A template intent rendered with no template store is refused naming template."""
    with pytest.raises(IntentRefused) as caught:
        render(template_intent(), default_mobile_app_id=1, now_ms=NOW_MS, templates=None)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("template: 'order_shipped'")


@pytest.mark.parametrize(
    ("store", "field"),
    [
        (FakeTemplates(fallback_text="Spedito ✓"), "fallback.text"),
        (FakeTemplates(android_title="x" * 401), "devicesData.android.title"),
        (FakeTemplates(notification_text="bell\x07"), "notificationText"),
    ],
)
def test_rendered_text_breaking_a_limit_is_refused(store: FakeTemplates, field: str) -> None:
    """A template output that breaks a Catapush constraint is refused naming the field."""
    with pytest.raises(IntentRefused) as caught:
        render(template_intent(), default_mobile_app_id=1, now_ms=NOW_MS, templates=store)
    assert any(problem.startswith(f"{field}: ") for problem in caught.value.problems)


def test_rendered_empty_text_is_refused() -> None:
    """A template rendering an empty text is refused naming text."""

    class Empty:
        def render(self, name: str, locale: str | None, data: dict[str, Any]) -> Rendered:
            return Rendered(text="")

    with pytest.raises(IntentRefused) as caught:
        render(template_intent(), default_mobile_app_id=1, now_ms=NOW_MS, templates=Empty())
    assert caught.value.problems == ["text: String should have at least 1 character"]


def test_per_recipient_override_text_is_checked() -> None:
    """An unsafe per-recipient override text is refused at its recipient's path."""
    intent = template_intent(recipients=["alice", {"identifier": "bob", "data": {"name": "\x00"}}])
    with pytest.raises(IntentRefused) as caught:
        render(intent, default_mobile_app_id=1, now_ms=NOW_MS, templates=FakeTemplates())
    assert caught.value.problems == [
        "recipients.1.override.text: contains a non-printable character U+0000 at position 3"
    ]
