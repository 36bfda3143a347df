"""The intent and Catapush message models: every documented constraint, checked without I/O."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatcher.errors import IntentRefused
from dispatcher.intents import (
    MAX_ATTACHMENT_BYTES,
    CatapushMessage,
    Intent,
    IntentRecipient,
    field_errors,
    gsm_units,
    parse_intent,
)
from dispatcher.render import render_wire

FAST = settings(max_examples=60, deadline=None, database=None)
ID_RE = re.compile(r"^[A-Za-z0-9_-]{5,50}$")
PRINTABLE_NO_SPACE = "".join(chr(c) for c in range(0x21, 0x7F))


# -- helpers -------------------------------------------------------------------------------------


def message(**fields: Any) -> dict[str, Any]:
    """A minimal valid `POST /messages` body with `fields` merged over it."""
    body: dict[str, Any] = {"mobileAppId": 1, "text": "hello", "recipients": [{"identifier": "a"}]}
    body.update(fields)
    return body


def message_problems(body: dict[str, Any]) -> list[str]:
    """The `field_errors` lines for a message body, or [] when it is valid."""
    try:
        CatapushMessage.model_validate(body)
    except ValidationError as exc:
        return field_errors(exc)
    return []


def intent(**fields: Any) -> dict[str, Any]:
    """A minimal valid intent with `fields` merged over it (a value of None removes a key)."""
    data: dict[str, Any] = {"recipients": ["alice"], "text": "hello"}
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def intent_problems(data: dict[str, Any]) -> list[str]:
    """The `field_errors` lines for an intent, or [] when it is valid."""
    try:
        Intent.model_validate(data)
    except ValidationError as exc:
        return field_errors(exc)
    return []


def refused_on(problems: list[str], field: str) -> bool:
    return any(problem.startswith(f"{field}: ") for problem in problems)


# -- CatapushMessage: required fields and types --------------------------------------------------


def test_minimal_message_is_valid_and_wire_leaves_unset_fields_out() -> None:
    """A body with only mobileAppId, text and recipients is valid and serialises to just those."""
    body = message()
    assert CatapushMessage.model_validate(body).to_wire() == body


@pytest.mark.parametrize("missing", ["mobileAppId", "text", "recipients"])
def test_message_required_fields(missing: str) -> None:
    """Each of Catapush's required fields is refused when absent, naming the field."""
    body = message()
    del body[missing]
    assert refused_on(message_problems(body), missing)


def test_recipient_identifier_is_required() -> None:
    """A recipient object without an identifier is refused at recipients.N.identifier."""
    problems = message_problems(message(recipients=[{"recipientRef": "abcde"}]))
    assert refused_on(problems, "recipients.0.identifier")


def test_message_refuses_empty_recipients() -> None:
    """recipients has minItems 1."""
    assert refused_on(message_problems(message(recipients=[])), "recipients")


@pytest.mark.parametrize(
    "recipients",
    [
        [{"identifier": "a"}, {"identifier": "a"}],
        [
            {"identifier": "a", "recipientRef": "ref-11"},
            {"identifier": "a", "recipientRef": "ref-2"},
        ],
    ],
)
def test_message_recipient_identifiers_are_unique(recipients: list[dict[str, Any]]) -> None:
    """Two recipients with the same identifier are refused, even when their other fields differ."""
    problems = message_problems(message(recipients=recipients))
    assert problems == ["recipients: identifier 'a' appears more than once"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mobileAppId", "1"),
        ("mobileAppId", 1.0),
        ("mobileAppId", True),
        ("expireTime", "60"),
        ("expireTime", 60.0),
        ("expireTime", True),
        ("isMarketing", 1),
        ("isMarketing", "true"),
    ],
)
def test_message_integers_and_booleans_are_strict(field: str, value: Any) -> None:
    """Integers and booleans are strict: no strings, floats or bool/int coercion."""
    assert refused_on(message_problems(message(**{field: value})), field)


@pytest.mark.parametrize(
    ("ios", "field"),
    [
        ({"sound": 1}, "sound"),
        ({"sound": "yes"}, "sound"),
        ({"badge": "3"}, "badge"),
        ({"badge": True}, "badge"),
    ],
)
def test_ios_options_are_strict(ios: dict[str, Any], field: str) -> None:
    """devicesData.ios sound and badge refuse coerced values."""
    problems = message_problems(message(devicesData={"ios": ios}))
    assert refused_on(problems, f"devicesData.ios.{field}")


@pytest.mark.parametrize(
    "where",
    [
        {"extra": 1},
        {"recipients": [{"identifier": "a", "extra": 1}]},
        {"recipients": [{"identifier": "a", "override": {"extra": 1}}]},
        {"devicesData": {"extra": 1}},
        {"devicesData": {"ios": {"extra": 1}}},
        {"devicesData": {"android": {"extra": 1}}},
        {"fallback": {"extra": 1}},
        {"notifyCallback": {"url": "https://example.com/cb", "method": "post", "extra": 1}},
    ],
)
def test_message_refuses_extra_fields(where: dict[str, Any]) -> None:
    """An unknown key at any level is refused, so typos are not silently dropped."""
    problems = message_problems(message(**where))
    assert problems
    assert all("Extra inputs are not permitted" in problem for problem in problems)
    assert all(problem.split(": ")[0].endswith("extra") for problem in problems)


def test_message_accepts_snake_case_names_too() -> None:
    """Python callers may populate by field name; the wire form is still camelCase."""
    built = CatapushMessage.model_validate(
        {"mobile_app_id": 1, "text": "t", "recipients": [{"identifier": "a"}], "expire_time": 5}
    )
    assert built.to_wire() == {
        "mobileAppId": 1,
        "text": "t",
        "recipients": [{"identifier": "a"}],
        "expireTime": 5,
    }


def test_full_message_round_trips_through_wire() -> None:
    """A body using every documented field validates and serialises back unchanged."""
    body = message(
        recipients=[
            {
                "identifier": "alice",
                "recipientRef": "alice.ref-1",
                "override": {"text": "hi Alice", "mobileNumber": "393331234567"},
            },
            {"identifier": "393331234568"},
        ],
        notificationText="new message",
        messageRef="order-1234",
        expireTime=3600,
        isMarketing=False,
        devicesData={
            "ios": {
                "sound": True,
                "badge": 3,
                "soundPath": "ping.caf",
                "category": "orders",
                "customData": {"k": [1, "v"]},
            },
            "android": {"title": "Shop"},
        },
        notifyCallback={"url": "https://example.com/cb", "method": "get"},
        fallback={
            "timeout": 60,
            "validityPeriod": 172800,
            "condition": "unread",
            "text": "Order shipped",
            "senderNumber": "12345",
            "senderString": "Shop 1.0",
        },
    )
    assert CatapushMessage.model_validate(body).to_wire() == body


# -- CatapushMessage: lengths and ranges ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "build", "limit"),
    [
        ("text", lambda v: message(text=v), 32768),
        ("notificationText", lambda v: message(notificationText=v), 400),
        (
            "recipients.0.override.text",
            lambda v: message(recipients=[{"identifier": "a", "override": {"text": v}}]),
            32768,
        ),
        (
            "devicesData.android.title",
            lambda v: message(devicesData={"android": {"title": v}}),
            400,
        ),
        (
            "devicesData.ios.soundPath",
            lambda v: message(devicesData={"ios": {"soundPath": v}}),
            32768,
        ),
        (
            "devicesData.ios.category",
            lambda v: message(devicesData={"ios": {"category": v}}),
            100,
        ),
    ],
)
def test_maximum_lengths_are_inclusive(path: str, build: Any, limit: int) -> None:
    """Each string limit accepts exactly `limit` characters and refuses `limit + 1`."""
    assert message_problems(build("x" * limit)) == []
    problems = message_problems(build("x" * (limit + 1)))
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ")
    assert str(limit) in problems[0]


@pytest.mark.parametrize("field", ["text", "notificationText"])
def test_message_texts_are_not_empty(field: str) -> None:
    """text and notificationText need at least one character."""
    assert refused_on(message_problems(message(**{field: ""})), field)


@pytest.mark.parametrize(
    ("path", "build", "low", "high"),
    [
        ("expireTime", lambda v: message(expireTime=v), 1, 2_592_000),
        ("fallback.timeout", lambda v: message(fallback={"timeout": v}), 10, 864_000),
        (
            "fallback.validityPeriod",
            lambda v: message(fallback={"validityPeriod": v}),
            300,
            864_000,
        ),
        (
            "devicesData.ios.badge",
            lambda v: message(devicesData={"ios": {"badge": v}}),
            0,
            2_147_483_647,
        ),
    ],
)
def test_integer_ranges_are_inclusive(path: str, build: Any, low: int, high: int) -> None:
    """Each integer range accepts both bounds and refuses one step outside either bound."""
    assert message_problems(build(low)) == []
    assert message_problems(build(high)) == []
    assert refused_on(message_problems(build(low - 1)), path)
    assert refused_on(message_problems(build(high + 1)), path)


@pytest.mark.parametrize(
    ("path", "build", "good", "bad"),
    [
        (
            "messageRef",
            lambda v: message(messageRef=v),
            ["abcde", "A" * 50, "a_b-C9"],
            ["abcd", "A" * 51, "has space", "dot.ted", "ünï", ""],
        ),
        (
            "recipients.0.recipientRef",
            lambda v: message(recipients=[{"identifier": "a", "recipientRef": v}]),
            ["abcde", "a" * 100, "a.b_c-D9"],
            ["abcd", "a" * 101, "with space", "slash/ed", ""],
        ),
        (
            "recipients.0.override.mobileNumber",
            lambda v: message(recipients=[{"identifier": "a", "override": {"mobileNumber": v}}]),
            ["12345678", "393331234567"],
            ["1234567", "+393331234567", "0039 333", "39333123456a", ""],
        ),
        (
            "fallback.senderNumber",
            lambda v: message(fallback={"senderNumber": v}),
            ["", "0", "393331234567"],
            ["+39", "12 34", "abc"],
        ),
        (
            "fallback.senderString",
            lambda v: message(fallback={"senderString": v}),
            ["", "Shop", "A" * 11, "My Shop 1.0"],
            ["A" * 12, "Shop-1", "Shop_1", "Shöp", "Shop!"],
        ),
        (
            "fallback.condition",
            lambda v: message(fallback={"condition": v}),
            ["undelivered", "unread"],
            ["read", "Undelivered", ""],
        ),
        (
            "notifyCallback.method",
            lambda v: message(notifyCallback={"url": "https://example.com/cb", "method": v}),
            ["get", "post"],
            ["put", "GET", "POST", ""],
        ),
        (
            "notifyCallback.url",
            lambda v: message(notifyCallback={"url": v, "method": "post"}),
            ["https://example.com/cb", "http://10.0.0.1:8080/x?y=1"],
            ["not a url", "/relative/path", ""],
        ),
    ],
)
def test_string_patterns(path: str, build: Any, good: list[str], bad: list[str]) -> None:
    """Each pattern-constrained field accepts its documented form and refuses near misses."""
    for value in good:
        assert message_problems(build(value)) == [], value
    for value in bad:
        assert refused_on(message_problems(build(value)), path), value


@pytest.mark.parametrize("missing", ["url", "method"])
def test_notify_callback_needs_url_and_method(missing: str) -> None:
    """notifyCallback requires both url and method."""
    callback = {"url": "https://example.com/cb", "method": "post"}
    del callback[missing]
    assert refused_on(
        message_problems(message(notifyCallback=callback)), f"notifyCallback.{missing}"
    )


def test_ios_custom_data_must_be_an_object() -> None:
    """devicesData.ios.customData is an object (or null), not a list or a string."""
    assert message_problems(message(devicesData={"ios": {"customData": {"a": 1}}})) == []
    assert refused_on(
        message_problems(message(devicesData={"ios": {"customData": [1]}})),
        "devicesData.ios.customData",
    )


# -- identifiers (property) ----------------------------------------------------------------------


@FAST
@given(st.text(alphabet=PRINTABLE_NO_SPACE, min_size=1, max_size=100))
def test_any_printable_ascii_identifier_is_accepted(identifier: str) -> None:
    """Any 1..100 printable-ASCII identifier without a space is accepted by message and intent."""
    assert message_problems(message(recipients=[{"identifier": identifier}])) == []
    assert Intent.model_validate(intent(recipients=[identifier])).recipients[0].identifier == (
        identifier
    )


@FAST
@given(
    st.one_of(
        st.tuples(
            st.text(alphabet=PRINTABLE_NO_SPACE, max_size=60),
            st.text(alphabet=PRINTABLE_NO_SPACE + " ", max_size=60),
        ).map(lambda parts: f"{parts[0]} {parts[1]}"),
        st.text(alphabet=PRINTABLE_NO_SPACE, min_size=101, max_size=300),
    )
)
def test_identifier_with_space_or_too_long_is_refused(identifier: str) -> None:
    """An identifier that contains a space or is longer than 100 characters is refused."""
    problems = message_problems(message(recipients=[{"identifier": identifier}]))
    assert refused_on(problems, "recipients.0.identifier")
    assert refused_on(intent_problems(intent(recipients=[identifier])), "recipients.0.identifier")


@pytest.mark.parametrize("identifier", ["", "alice\n", "\talice", "àlice", "a\x7f"])
def test_identifier_refuses_empty_non_ascii_and_control(identifier: str) -> None:
    """Empty identifiers, trailing newlines, non-ASCII and DEL are outside ^[!-~]{1,100}$."""
    assert refused_on(
        message_problems(message(recipients=[{"identifier": identifier}])),
        "recipients.0.identifier",
    )


# -- "safe" charset ------------------------------------------------------------------------------

SAFE_FIELDS = [
    ("text", lambda v: message(text=v)),
    ("notificationText", lambda v: message(notificationText=v)),
    (
        "recipients.0.override.text",
        lambda v: message(recipients=[{"identifier": "a", "override": {"text": v}}]),
    ),
    ("devicesData.android.title", lambda v: message(devicesData={"android": {"title": v}})),
]


@pytest.mark.parametrize(("path", "build"), SAFE_FIELDS)
@pytest.mark.parametrize(
    "character",
    ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f", "\ufffe", "\uffff"],
)
def test_safe_text_refuses_control_characters_naming_the_code_point(
    path: str, build: Any, character: str
) -> None:
    """A non-printable character in a safe-charset field is refused with U+XXXX and its position."""
    problems = message_problems(build(f"ab{character}c"))
    assert problems == [
        f"{path}: contains a non-printable character U+{ord(character):04X} at position 2"
    ]


@pytest.mark.parametrize(("path", "build"), SAFE_FIELDS)
def test_safe_text_refuses_lone_surrogates(path: str, build: Any) -> None:
    """A lone surrogate (not valid UTF-8) is refused at the field's path."""
    assert refused_on(message_problems(build("ab\ud800c")), path)


@pytest.mark.parametrize(("path", "build"), SAFE_FIELDS)
def test_safe_text_accepts_newline_tab_and_unicode(path: str, build: Any) -> None:
    """Newlines, tabs, CRLF and printable non-ASCII text (accents, emoji, CJK) are safe."""
    assert message_problems(build("line one\nline two\tcol\r\nè € 🎉 漢字")) == [], path


@FAST
@given(
    st.characters(codec=None, categories=["Cc"]).filter(lambda c: c not in "\n\t\r"),
    st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs", "Cn"]), max_size=20),
)
def test_any_control_character_is_refused(character: str, prefix: str) -> None:
    """Every C0/C1 control character other than newline, tab and CR is refused by name."""
    problems = message_problems(message(text=prefix + character))
    assert problems == [
        f"text: contains a non-printable character U+{ord(character):04X} at position {len(prefix)}"
    ]


def test_length_is_reported_before_charset() -> None:
    """An oversized text that is also unsafe is reported as too long."""
    problems = message_problems(message(text="\x00" * 32769))
    assert problems == ["text: String should have at most 32768 characters"]


# -- GSM 03.38 fallback text ---------------------------------------------------------------------


def fallback_problems(text: str) -> list[str]:
    return message_problems(message(fallback={"text": text}))


def test_gsm_extension_characters_count_two_units() -> None:
    """765 euro signs are 1530 units and accepted; 766 are 1532 units and refused."""
    assert fallback_problems("€" * 765) == []
    assert fallback_problems("€" * 766) == [
        "fallback.text: is 1532 GSM units long, at most 1530 are allowed "
        "(^ { } \\ [ ] ~ | € count as two)"
    ]


def test_gsm_basic_characters_count_one_unit() -> None:
    """1530 basic-set characters are accepted, 1531 refused."""
    assert fallback_problems("a" * 1530) == []
    assert refused_on(fallback_problems("a" * 1531), "fallback.text")


def test_gsm_mixed_text_at_the_boundary() -> None:
    """1528 basic characters plus one extension character is exactly 1530 units."""
    assert fallback_problems("a" * 1528 + "[") == []
    assert refused_on(fallback_problems("a" * 1529 + "["), "fallback.text")


@pytest.mark.parametrize("character", list("^{}\\[~]|€"))
def test_gsm_units_of_each_documented_extension_character(character: str) -> None:
    """Each of ^ { } \\ [ ] ~ | € counts as two GSM units."""
    assert gsm_units(character) == 2


def test_gsm_units_of_basic_set_with_accents_and_greek() -> None:
    """Accented letters and Greek capitals of the basic set count one unit each."""
    text = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà\n\r"
    assert gsm_units(text) == len(text)


@pytest.mark.parametrize(("character", "position"), [("✓", 2), ("ç", 2), ("`", 2), ("🎉", 2)])
def test_non_gsm_character_is_refused_naming_it(character: str, position: int) -> None:
    """A character outside GSM 03.38 is refused with the character and its position."""
    assert fallback_problems(f"ab{character}cd") == [
        f"fallback.text: character {character!r} at position {position} "
        "is not in the GSM 03.38 charset"
    ]


def test_empty_fallback_text_is_allowed() -> None:
    """fallback.text has no minimum length."""
    assert fallback_problems("") == []


# -- the Intent model ----------------------------------------------------------------------------


def test_string_recipients_are_shorthand_for_identifier_objects() -> None:
    """A bare string recipient becomes an object holding only that identifier."""
    parsed = Intent.model_validate(
        intent(recipients=["alice", {"identifier": "bob", "recipientRef": "bob-ref"}])
    )
    assert parsed.recipients == [
        IntentRecipient(identifier="alice"),
        IntentRecipient(identifier="bob", recipient_ref="bob-ref"),
    ]
    assert parsed.to_wire()["recipients"] == [
        {"identifier": "alice"},
        {"identifier": "bob", "recipientRef": "bob-ref"},
    ]


def test_contract_example_intent_is_valid() -> None:
    """The intent shown in the contract validates and keeps every value."""
    data = {
        "id": "order-1234-shipped",
        "recipients": [
            "alice",
            {
                "identifier": "bob",
                "recipientRef": "bob-order-1234",
                "mobileNumber": "393331234567",
                "data": {"name": "Bob"},
            },
        ],
        "text": "Your order has shipped",
        "mobileAppId": 123,
    }
    # Per-recipient data only matters with a template, but it is accepted with inline text.
    parsed = Intent.model_validate(data)
    assert parsed.id == "order-1234-shipped"
    assert parsed.mobile_app_id == 123
    assert parsed.recipients[1].mobile_number == "393331234567"


@pytest.mark.parametrize(
    "recipients",
    [["alice", "alice"], ["alice", {"identifier": "alice", "recipientRef": "other"}]],
)
def test_intent_recipients_are_unique_across_shorthand_and_objects(
    recipients: list[Any],
) -> None:
    """The same identifier twice is refused whether written as a string or an object."""
    assert intent_problems(intent(recipients=recipients)) == [
        "recipients: identifier 'alice' appears more than once"
    ]


@pytest.mark.parametrize(
    ("recipients", "path"),
    [
        ([], "recipients"),
        ("alice", "recipients"),
        ({"identifier": "alice"}, "recipients"),
        ([5], "recipients.0"),
        ([None], "recipients.0"),
        ([{}], "recipients.0.identifier"),
    ],
)
def test_intent_recipients_shape(recipients: Any, path: str) -> None:
    """recipients is a non-empty list whose items are strings or objects with an identifier."""
    assert refused_on(intent_problems(intent(recipients=recipients)), path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipientRef", "abcd"),
        ("mobileNumber", "1234567"),
        ("locale", "english!"),
        ("data", [1]),
        ("unknown", 1),
    ],
)
def test_intent_recipient_object_fields(field: str, value: Any) -> None:
    """A recipient object's fields carry the same constraints as Catapush's, and no extras."""
    problems = intent_problems(intent(recipients=[{"identifier": "bob", field: value}]))
    assert refused_on(problems, f"recipients.0.{field}")


@pytest.mark.parametrize("good", ["abcde", "A" * 50, "order-1234_shipped", "0123456789"])
def test_intent_id_accepts_pattern(good: str) -> None:
    """An id of 5..50 letters, digits, '_' or '-' is accepted."""
    assert intent_problems(intent(id=good)) == []


@pytest.mark.parametrize("bad", ["abcd", "A" * 51, "order 1234", "order.1234", "örder", "", 12345])
def test_intent_id_refuses_outside_pattern(bad: Any) -> None:
    """An id outside ^[A-Za-z0-9_-]{5,50}$ (or not a string) is refused, naming `id`."""
    assert refused_on(intent_problems(intent(id=bad)), "id")


def test_intent_needs_text_or_template() -> None:
    """An intent with neither text nor template is refused, naming text."""
    assert intent_problems(intent(text=None)) == ["text: is required unless a template is named"]


def test_intent_refuses_text_and_template_together() -> None:
    """An intent with both inline text and a template is refused."""
    assert intent_problems(intent(template="order_shipped")) == [
        "text: give either text or a template, not both"
    ]


def test_template_intent_refuses_notification_text() -> None:
    """With a template, notificationText comes from the template and may not be given."""
    assert intent_problems(intent(text=None, template="t", notificationText="n")) == [
        "notificationText: comes from the template when one is named"
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"data": {"a": 1}}, "data: only applies to a template; inline text takes none"),
        ({"locale": "it"}, "locale: only applies to a template"),
    ],
)
def test_data_and_locale_only_with_a_template(extra: dict[str, Any], expected: str) -> None:
    """data and locale are refused on an inline-text intent and accepted with a template."""
    assert intent_problems(intent(**extra)) == [expected]
    assert intent_problems(intent(text=None, template="order_shipped", **extra)) == []


@pytest.mark.parametrize("locale", ["en", "pt-BR", "pt_BR", "zh-Hant-TW", "ast"])
def test_locale_pattern_accepts_bcp47_like_tags(locale: str) -> None:
    """Language tags such as en, pt-BR, pt_BR and zh-Hant-TW are accepted."""
    assert intent_problems(intent(text=None, template="t", locale=locale)) == []


@pytest.mark.parametrize("locale", ["e", "english", "en-", "en BR", "12"])
def test_locale_pattern_refuses_malformed_tags(locale: str) -> None:
    """Malformed locales are refused, naming locale."""
    assert refused_on(intent_problems(intent(text=None, template="t", locale=locale)), "locale")


@pytest.mark.parametrize("name", ["", "a/b", "../x", "a b", "x" * 101])
def test_template_name_pattern(name: str) -> None:
    """A template name is 1..100 letters, digits, '_' or '-' (no paths)."""
    assert refused_on(intent_problems(intent(text=None, template=name)), "template")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", ""),
        ("text", "x" * 32769),
        ("text", "a\x00b"),
        ("notificationText", "x" * 401),
        ("expireTime", 0),
        ("expireTime", 2_592_001),
        ("expireTime", "60"),
        ("isMarketing", "false"),
        ("mobileAppId", "123"),
        ("createdAt", -1),
        ("createdAt", 1.5),
        ("unknownField", 1),
    ],
)
def test_intent_inline_fields_carry_catapush_constraints(field: str, value: Any) -> None:
    """The intent's inline content fields are checked at intake like the message's."""
    assert refused_on(intent_problems(intent(**{field: value})), field)


def test_intent_nested_constraints_are_checked_at_intake() -> None:
    """fallback and devicesData on an intent are validated with the message's rules."""
    problems = intent_problems(
        intent(fallback={"text": "✓", "timeout": 5}, devicesData={"ios": {"badge": -1}})
    )
    assert refused_on(problems, "fallback.text")
    assert refused_on(problems, "fallback.timeout")
    assert refused_on(problems, "devicesData.ios.badge")


def test_intent_boundaries_are_accepted() -> None:
    """Values exactly at their limits are accepted on an intent."""
    assert (
        intent_problems(
            intent(
                text="x" * 32768,
                notificationText="y" * 400,
                expireTime=2_592_000,
                fallback={"text": "€" * 765, "timeout": 864_000, "validityPeriod": 300},
            )
        )
        == []
    )


# -- attachment ----------------------------------------------------------------------------------


def attachment(**fields: Any) -> dict[str, Any]:
    data = {
        "filename": "invoice.pdf",
        "contentType": "application/pdf",
        "data": base64.b64encode(b"%PDF-1.4 fake").decode(),
    }
    data.update(fields)
    return data


def test_attachment_base64_is_decoded() -> None:
    """A valid attachment is accepted and content() returns the decoded bytes."""
    parsed = Intent.model_validate(intent(attachment=attachment()))
    assert parsed.attachment is not None
    assert parsed.attachment.content() == b"%PDF-1.4 fake"


@pytest.mark.parametrize("data", ["not base64!", "abc", "YWJj\nZA==", "YQ"])
def test_attachment_refuses_invalid_base64(data: str) -> None:
    """Data that is not strict base64 (bad characters, padding, embedded newline) is refused."""
    problems = intent_problems(intent(attachment=attachment(data=data)))
    assert len(problems) == 1
    assert problems[0].startswith("attachment.data: is not valid base64")


def test_attachment_size_limit() -> None:
    """Decoded data of exactly the limit is accepted; one byte more is refused."""
    at_limit = base64.b64encode(bytes(MAX_ATTACHMENT_BYTES)).decode()
    assert intent_problems(intent(attachment=attachment(data=at_limit))) == []
    over = base64.b64encode(bytes(MAX_ATTACHMENT_BYTES + 1)).decode()
    assert intent_problems(intent(attachment=attachment(data=over))) == [
        f"attachment.data: decodes to {MAX_ATTACHMENT_BYTES + 1} bytes, "
        f"at most {MAX_ATTACHMENT_BYTES}"
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filename", ""),
        ("filename", "dir/invoice.pdf"),
        ("filename", "dir\\invoice.pdf"),
        ("filename", "x" * 256),
        ("contentType", "pdf"),
        ("contentType", "application/pdf; charset=x"),
        ("contentType", ""),
    ],
)
def test_attachment_filename_and_content_type(field: str, value: str) -> None:
    """Filenames cannot carry paths or be empty; content types must be type/subtype."""
    problems = intent_problems(intent(attachment=attachment(**{field: value})))
    assert refused_on(problems, f"attachment.{field}")


@pytest.mark.parametrize("missing", ["filename", "contentType", "data"])
def test_attachment_fields_are_required(missing: str) -> None:
    """filename, contentType and data are all required."""
    data = attachment()
    del data[missing]
    assert refused_on(intent_problems(intent(attachment=data)), f"attachment.{missing}")


# -- field_errors and parse_intent ---------------------------------------------------------------


def test_field_errors_use_dotted_camel_case_paths() -> None:
    """Nested problems are reported as `<dotted.camelCase.path>: <reason>`, one line each."""
    problems = intent_problems(
        intent(
            recipients=["alice", {"identifier": "bob", "mobileNumber": "12"}],
            devicesData={"ios": {"soundPath": "x" * 32769}},
            fallback={"validityPeriod": 1, "senderString": "x" * 12},
            expireTime=0,
        )
    )
    paths = sorted(problem.split(": ", 1)[0] for problem in problems)
    assert paths == [
        "devicesData.ios.soundPath",
        "expireTime",
        "fallback.senderString",
        "fallback.validityPeriod",
        "recipients.1.mobileNumber",
    ]
    for problem in problems:
        field, reason = problem.split(": ", 1)
        assert reason
        assert "_" not in field
        assert "Value error" not in reason


def test_field_errors_reports_model_level_checks_with_their_field() -> None:
    """A cross-field check names its own field instead of an empty path."""
    with pytest.raises(ValidationError) as caught:
        Intent.model_validate(intent(text=None))
    assert field_errors(caught.value) == ["text: is required unless a template is named"]


def test_field_errors_for_a_missing_field() -> None:
    """A missing required field is reported at its camelCase path."""
    with pytest.raises(ValidationError) as caught:
        Intent.model_validate({"text": "hello"})
    assert field_errors(caught.value) == ["recipients: Field required"]


def test_field_errors_never_name_pydantic_union_branches() -> None:
    """A recipient of the wrong type is reported at recipients.N, not a model class name."""
    problems = intent_problems(intent(recipients=["alice", 5]))
    assert problems == [
        "recipients.1: Input should be a valid dictionary or instance of IntentRecipient"
    ]


@pytest.mark.parametrize(
    ("value", "type_name"),
    [([], "list"), ("text", "str"), (None, "NoneType"), (5, "int"), (1.5, "float"), (True, "bool")],
)
def test_parse_intent_refuses_non_objects(value: Any, type_name: str) -> None:
    """A JSON value that is not an object is refused naming its type."""
    with pytest.raises(IntentRefused) as caught:
        parse_intent(value)
    assert caught.value.problems == [f"intent: must be a JSON object, not {type_name}"]


def test_parse_intent_returns_intent_or_raises_with_field_errors() -> None:
    """parse_intent returns an Intent for valid data and IntentRefused listing each problem."""
    assert parse_intent(intent()).text == "hello"
    with pytest.raises(IntentRefused) as caught:
        parse_intent(intent(id="bad", expireTime=0))
    assert sorted(p.split(":")[0] for p in caught.value.problems) == ["expireTime", "id"]
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value.__cause__, ValidationError)
    assert str(caught.value) == "; ".join(caught.value.problems)


# -- with_defaults -------------------------------------------------------------------------------


def test_with_defaults_generates_a_valid_id_and_creation_time() -> None:
    """Without an id, a fresh one matching the id pattern is generated and createdAt set."""
    bare = Intent.model_validate(intent())
    first = bare.with_defaults(now_ms=1_700_000_000_000)
    second = bare.with_defaults(now_ms=1_700_000_000_000)
    assert first.id is not None
    assert ID_RE.fullmatch(first.id)
    assert first.id != second.id
    assert first.created_at == 1_700_000_000_000
    assert bare.id is None  # the original is untouched
    # The generated id survives validation as a producer-given id would.
    assert Intent.model_validate(first.to_wire()) == first


def test_with_defaults_keeps_given_id_and_creation_time() -> None:
    """A given id and createdAt are kept; nothing to fill in returns the same intent."""
    given_intent = Intent.model_validate(intent(id="order-1234", createdAt=5))
    assert given_intent.with_defaults(now_ms=99) is given_intent
    only_id = Intent.model_validate(intent(id="order-1234"))
    filled = only_id.with_defaults(now_ms=99)
    assert (filled.id, filled.created_at) == ("order-1234", 99)


@FAST
@given(st.integers(min_value=0, max_value=2**53))
def test_with_defaults_id_always_matches_pattern(now_ms: int) -> None:
    """Every generated id matches ^[A-Za-z0-9_-]{5,50}$."""
    filled = Intent.model_validate(intent()).with_defaults(now_ms=now_ms)
    assert filled.id is not None
    assert ID_RE.fullmatch(filled.id)
    assert filled.created_at == now_ms


# -- round trip (property) -----------------------------------------------------------------------

safe_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cc", "Cs", "Cn"]), st.sampled_from("\n\t")
    ),
    min_size=1,
    max_size=40,
)
gsm_text = st.text(alphabet="abcXYZ 019.,!?@£èΔ€[]{}~^|\\\n", max_size=40)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
json_object = st.dictionaries(st.text(max_size=8), json_value, max_size=3)
identifiers = st.text(alphabet=PRINTABLE_NO_SPACE, min_size=1, max_size=20)
refs = st.from_regex(r"\A[a-zA-Z0-9._-]{5,20}\Z")
locales = st.sampled_from(["en", "it", "pt-BR", "zh_Hant"])


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def recipient_entries(draw: st.DrawFn, identifier: str, template: bool) -> Any:
    if draw(st.booleans()):
        return identifier
    entry: dict[str, Any] = {
        "identifier": identifier,
        "recipientRef": draw(_optional(refs)),
        "mobileNumber": draw(_optional(st.from_regex(r"\A[0-9]{8,15}\Z"))),
    }
    if template:
        entry["data"] = draw(_optional(json_object))
        entry["locale"] = draw(_optional(locales))
    return {key: value for key, value in entry.items() if value is not None}


@st.composite
def valid_intents(draw: st.DrawFn) -> Intent:
    template = draw(st.booleans())
    names = draw(st.lists(identifiers, min_size=1, max_size=4, unique=True))
    data: dict[str, Any] = {
        "id": draw(_optional(st.from_regex(r"\A[A-Za-z0-9_-]{5,50}\Z"))),
        "recipients": [draw(recipient_entries(name, template)) for name in names],
        "mobileAppId": draw(_optional(st.integers(min_value=-(2**31), max_value=2**31))),
        "expireTime": draw(_optional(st.integers(min_value=1, max_value=2_592_000))),
        "isMarketing": draw(_optional(st.booleans())),
        "createdAt": draw(_optional(st.integers(min_value=0, max_value=2**53))),
        "devicesData": draw(
            _optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "ios": st.fixed_dictionaries(
                            {},
                            optional={
                                "sound": st.booleans(),
                                "badge": st.integers(min_value=0, max_value=2_147_483_647),
                                "category": st.text(max_size=20),
                                "customData": json_object,
                            },
                        ),
                        "android": st.fixed_dictionaries({}, optional={"title": safe_text}),
                    },
                )
            )
        ),
        "fallback": draw(
            _optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "timeout": st.integers(min_value=10, max_value=864_000),
                        "validityPeriod": st.integers(min_value=300, max_value=864_000),
                        "condition": st.sampled_from(["undelivered", "unread"]),
                        "text": gsm_text,
                        "senderNumber": st.from_regex(r"\A[0-9]{0,12}\Z"),
                        "senderString": st.from_regex(r"\A[a-zA-Z0-9 .]{0,11}\Z"),
                    },
                )
            )
        ),
        "attachment": draw(
            _optional(
                st.builds(
                    lambda name, blob: {
                        "filename": name,
                        "contentType": "application/octet-stream",
                        "data": base64.b64encode(blob).decode(),
                    },
                    st.from_regex(r"\A[A-Za-z0-9._ -]{1,30}\Z"),
                    st.binary(max_size=64),
                )
            )
        ),
    }
    if template:
        data["template"] = draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,30}\Z"))
        data["data"] = draw(_optional(json_object))
        data["locale"] = draw(_optional(locales))
    else:
        data["text"] = draw(safe_text)
        data["notificationText"] = draw(_optional(safe_text))
    return Intent.model_validate({key: value for key, value in data.items() if value is not None})


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(valid_intents())
def test_valid_intents_round_trip_through_the_wire(value: Intent) -> None:
    """Any valid intent survives `Intent.model_validate(intent.to_wire()) == intent`."""
    assert Intent.model_validate(value.to_wire()) == value


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(valid_intents().filter(lambda intent: intent.template is None))
def test_an_inline_body_built_unchecked_meets_every_catapush_constraint(value: Intent) -> None:
    """The worker sends an inline intent's body without a second validation: it must be
    exactly what checking it against `CatapushMessage` would give."""
    body = render_wire(
        value.with_defaults(now_ms=1_700_000_000_000),
        default_mobile_app_id=7,
        now_ms=1_700_000_000_000,
        notify_callback_url="https://example.com/cb",
    )
    assert CatapushMessage.model_validate(body).to_wire() == body
