"""Catapush status callbacks: the three wire forms parse alike, and a bad one names its key."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from dispatcher.callbacks import (
    STATUSES,
    CallbackEvent,
    CallbackRefused,
    fields_from_form,
    fields_from_json,
    fields_from_query,
    parse_callback,
)

# The keys and values of the example in the vendor's callback documentation, plus the
# optional references.
CALLBACK: dict[str, str] = {
    "type": "MessageStatus",
    "timestamp": "2024-05-01T10:15:30Z",
    "applicationId": "1234",
    "messageId": "6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
    "recipient": "alice",
    "status": "delivered",
    "messageRef": "order-1234-shipped",
    "recipientRef": "alice-order-1234",
    "fallbackRef": "393331234567",
}

EXPECTED = CallbackEvent(
    status="delivered",
    timestamp="2024-05-01T10:15:30Z",
    application_id="1234",
    message_id="6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
    recipient="alice",
    message_ref="order-1234-shipped",
    recipient_ref="alice-order-1234",
    fallback_ref="393331234567",
)

DOCUMENTED_STATUSES = [
    "enqueued",
    "delivered",
    "read",
    "expired",
    "fallbackOnUndelivered",
    "fallbackOnUnread",
    "fallbackSent",
    "fallbackDelivered",
    "fallbackExpired",
    "fallbackInvalidNumber",
    "fallbackPhoneError",
    "fallbackOperatorError",
    "iOSError",
    "iOSErrorInvalidToken",
    "AndroidError",
    "AndroidErrorInvalidToken",
    "PushSent",
    "IdentifierNotFound",
]


def refusal(fields: dict[str, Any]) -> CallbackRefused:
    with pytest.raises(CallbackRefused) as caught:
        parse_callback(fields)
    return caught.value


def test_a_get_query_string_parses_into_the_event() -> None:
    """A GET callback's query string, secret included, gives the event without the secret."""
    query = urlencode({**CALLBACK, "secret": "s3cret"})
    fields = fields_from_query(query)
    assert "secret" not in fields
    assert parse_callback(fields) == EXPECTED


def test_a_form_encoded_post_parses_into_the_event() -> None:
    """A form-encoded POST body gives the same event as the query string."""
    assert parse_callback(fields_from_form(urlencode(CALLBACK).encode())) == EXPECTED


def test_a_json_post_parses_into_the_event() -> None:
    """A JSON POST body gives the same event, a numeric applicationId taken as text."""
    body = orjson.dumps({**CALLBACK, "applicationId": 1234})
    assert parse_callback(fields_from_json(body)) == EXPECTED


def test_percent_encoded_values_are_decoded_once() -> None:
    """An encoded '&', '=' or non-ASCII character stays inside its value."""
    fields = fields_from_query(urlencode({**CALLBACK, "recipient": "a&b=c è"}))
    assert parse_callback(fields).recipient == "a&b=c è"


@pytest.mark.parametrize("status", DOCUMENTED_STATUSES)
def test_every_documented_status_is_accepted(status: str) -> None:
    """Each of the eighteen statuses in the vendor documentation is a valid callback."""
    assert parse_callback({**CALLBACK, "status": status}).status == status


def test_the_module_knows_exactly_the_documented_statuses() -> None:
    """No status is missing or invented (the metrics expose one series per status)."""
    assert sorted(STATUSES) == sorted(DOCUMENTED_STATUSES)


@pytest.mark.parametrize("status", ["Delivered", "sent", "", "read "])
def test_an_unknown_status_is_refused(status: str) -> None:
    """A status outside the documented list (case matters) is refused, naming `status`."""
    assert refusal({**CALLBACK, "status": status}).key == "status"


@pytest.mark.parametrize(
    "key", ["type", "timestamp", "applicationId", "messageId", "recipient", "status"]
)
def test_a_missing_required_key_is_named(key: str) -> None:
    """Leaving out any mandatory key refuses the callback with that key's name."""
    fields = {name: value for name, value in CALLBACK.items() if name != key}
    refused = refusal(fields)
    assert refused.key == key
    assert str(refused) == f"{key}: is required"


def test_a_missing_key_is_reported_before_a_bad_value() -> None:
    """With a bad status and no recipient, the missing key is what is reported."""
    fields = {name: value for name, value in CALLBACK.items() if name != "recipient"}
    assert refusal({**fields, "status": "bogus"}).key == "recipient"


def test_an_empty_required_value_is_refused() -> None:
    """`messageId=` (blank in a form) is not a message id."""
    refused = refusal(fields_from_form(urlencode({**CALLBACK, "messageId": ""}).encode()))
    assert str(refused) == "messageId: must not be empty"


def test_a_wrong_type_is_refused() -> None:
    """Only `MessageStatus` callbacks are documented; another type is refused."""
    refused = refusal({**CALLBACK, "type": "InboundMessage"})
    assert refused.key == "type"
    assert "MessageStatus" in refused.reason


def test_the_optional_references_may_be_absent_or_blank() -> None:
    """Without messageRef, recipientRef and fallbackRef (or with them blank) the event has None."""
    bare = {key: CALLBACK[key] for key in ("type", "timestamp", "applicationId")}
    bare |= {"messageId": CALLBACK["messageId"], "recipient": "bob", "status": "read"}
    for fields in (bare, {**bare, "messageRef": "", "recipientRef": "", "fallbackRef": ""}):
        event = parse_callback(fields)
        assert (event.message_ref, event.recipient_ref, event.fallback_ref) == (None, None, None)


def test_the_stored_event_is_compact() -> None:
    """The stored form keeps status, recipient, time, messageId and the set references only."""
    assert EXPECTED.stored() == {
        "status": "delivered",
        "recipient": "alice",
        "timestamp": "2024-05-01T10:15:30Z",
        "messageId": "6f1b9a2e-4c1d-4d2e-9a6b-0c1d2e3f4a5b",
        "recipientRef": "alice-order-1234",
        "fallbackRef": "393331234567",
    }
    without = parse_callback({**CALLBACK, "recipientRef": "", "fallbackRef": ""})
    assert set(without.stored()) == {"status", "recipient", "timestamp", "messageId"}


@pytest.mark.parametrize("ref", ["bad ref", "abc", "a:b:c:d:e", "x" * 51])
def test_a_message_ref_outside_the_intent_id_pattern_is_refused(ref: str) -> None:
    """messageRef becomes part of a Redis key, so it must look like an intent id."""
    assert refusal({**CALLBACK, "messageRef": ref}).key == "messageRef"


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", "1714558530"])
def test_a_timestamp_that_is_not_iso_8601_is_refused(value: str) -> None:
    """The documented timestamp is ISO-8601; anything else is refused naming `timestamp`."""
    assert refusal({**CALLBACK, "timestamp": value}).key == "timestamp"


@pytest.mark.parametrize("value", [["delivered"], {"a": 1}, True, 1.5])
def test_a_json_value_that_is_not_text_is_refused(value: Any) -> None:
    """In the JSON form a key holding a list, object, boolean or float is refused by name."""
    assert refusal({**CALLBACK, "status": value}).key == "status"


def test_a_message_id_with_spaces_is_refused() -> None:
    """The messageId may become a Redis key; spaces and control characters are refused."""
    assert refusal({**CALLBACK, "messageId": "has a space"}).key == "messageId"


def test_unknown_keys_are_ignored() -> None:
    """A key Catapush may add one day does not make a valid callback fail."""
    assert parse_callback({**CALLBACK, "channel": "push"}) == EXPECTED


def test_a_key_repeated_with_different_values_is_refused() -> None:
    """`status=read&status=delivered` is ambiguous; the repeated key is named."""
    query = urlencode({**CALLBACK}) + "&status=read"
    with pytest.raises(CallbackRefused) as caught:
        fields_from_query(query)
    assert caught.value.key == "status"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "is not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"text"', "must be a JSON object, not str"),
    ],
)
def test_a_json_body_that_is_not_an_object_is_refused(body: bytes, reason: str) -> None:
    """A JSON callback body must be one object; otherwise `body` is named."""
    with pytest.raises(CallbackRefused) as caught:
        fields_from_json(body)
    assert caught.value.key == "body"
    assert reason in caught.value.reason


def test_a_form_body_that_is_not_utf8_is_refused() -> None:
    """Bytes that are not UTF-8, raw or percent-encoded, are refused naming where they were."""
    with pytest.raises(CallbackRefused) as raw:
        fields_from_form(b"recipient=\xff")
    assert raw.value.key == "body"
    with pytest.raises(CallbackRefused) as encoded:
        fields_from_query("recipient=%ff")
    assert encoded.value.key == "query"


def test_too_many_fields_are_refused() -> None:
    """A query string with hundreds of fields is refused before being looked at."""
    with pytest.raises(CallbackRefused) as caught:
        fields_from_query("&".join(f"k{n}=v" for n in range(500)))
    assert caught.value.key == "query"
