"""Catapush status callbacks: the three wire forms, parsed and checked into one typed event.

Catapush reports each step of a message's life (`enqueued`, `delivered`, `read`, SMS
fallback, push errors, ...) to the message's `notifyCallback` as a `GET` query string, a
form-encoded `POST` or a JSON `POST`, all with the same keys. Pure: no I/O; the server reads
the request and stores the event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import parse_qsl

import orjson

from dispatcher.errors import CallbackRefused
from dispatcher.intents import ID_PATTERN

__all__ = [
    "MESSAGE_STATUS_TYPE",
    "STATUSES",
    "CallbackEvent",
    "CallbackRefused",
    "CallbackStatus",
    "fields_from_form",
    "fields_from_json",
    "fields_from_query",
    "parse_callback",
]

MESSAGE_STATUS_TYPE: Final = "MessageStatus"

CallbackStatus = Literal[
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
STATUSES: Final[tuple[str, ...]] = get_args(CallbackStatus)

# The query parameter that carries the receiver's shared secret. It is the server's business,
# never part of an event, so the parsers drop it.
SECRET_PARAMETER: Final = "secret"

REQUIRED_KEYS: Final = ("type", "timestamp", "applicationId", "messageId", "recipient", "status")
OPTIONAL_KEYS: Final = ("messageRef", "recipientRef", "fallbackRef")

# A real callback has nine keys at most; the cap keeps a hostile query string from costing
# more than a glance.
MAX_FIELDS: Final = 50
MAX_VALUE_LENGTH: Final = 1000

# `messageId` can end up in a Redis key. Catapush documents a UUID; anything printable
# without spaces is taken, so that a format change on their side does not start refusing
# every callback.
_KEY_PART = re.compile(r"^[!-~]{1,100}$")
_MESSAGE_REF = re.compile(ID_PATTERN)


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One checked status callback. `timestamp` is kept exactly as Catapush wrote it."""

    status: CallbackStatus
    timestamp: str
    application_id: str
    message_id: str
    recipient: str
    message_ref: str | None = None
    recipient_ref: str | None = None
    fallback_ref: str | None = None

    def stored(self) -> dict[str, str]:
        """The compact event kept per message: what ops need, in Catapush's spelling."""
        event = {
            "status": self.status,
            "recipient": self.recipient,
            "timestamp": self.timestamp,
            "messageId": self.message_id,
        }
        if self.recipient_ref is not None:
            event["recipientRef"] = self.recipient_ref
        if self.fallback_ref is not None:
            event["fallbackRef"] = self.fallback_ref
        return event


# -- The three wire forms ---------------------------------------------------------------------


def _from_pairs(pairs: list[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key == SECRET_PARAMETER:
            continue
        # Two different values for one key leave no way to tell which Catapush meant.
        if key in fields and fields[key] != value:
            raise CallbackRefused(key, "given more than once with different values")
        fields[key] = value
    return fields


def _parse_pairs(text: str, where: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise CallbackRefused(where, "is not UTF-8 once percent-decoded") from None
    except ValueError:
        raise CallbackRefused(where, f"has more than {MAX_FIELDS} fields") from None


def fields_from_query(query_string: str) -> dict[str, str]:
    """The keys of a `GET` callback, from its raw query string (the `secret` left out)."""
    return _from_pairs(_parse_pairs(query_string, "query"))


def fields_from_form(body: bytes) -> dict[str, str]:
    """The keys of a `POST application/x-www-form-urlencoded` callback."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CallbackRefused("body", "is not UTF-8") from None
    return _from_pairs(_parse_pairs(text, "body"))


def fields_from_json(body: bytes) -> dict[str, Any]:
    """The keys of a `POST application/json` callback: one JSON object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallbackRefused("body", f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CallbackRefused("body", f"must be a JSON object, not {type(data).__name__}")
    if len(data) > MAX_FIELDS:
        raise CallbackRefused("body", f"has more than {MAX_FIELDS} fields")
    return data


# -- Checking ------------------------------------------------------------------------------------


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    """The value of a key as text; None when absent, null or empty."""
    value = fields.get(key)
    if value is None:
        return None
    # JSON may carry an id as a number; the form encodings only ever carry text.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise CallbackRefused(key, f"must be a string, not {type(value).__name__}")
    if len(value) > MAX_VALUE_LENGTH:
        raise CallbackRefused(key, f"is longer than {MAX_VALUE_LENGTH} characters")
    # An empty optional value is how a form encoding says "absent".
    return value or None


def _required(fields: Mapping[str, Any], key: str) -> str:
    value = _text(fields, key)
    if value is None:
        raise CallbackRefused(key, "is required" if key not in fields else "must not be empty")
    return value


def _matching(key: str, value: str, pattern: re.Pattern[str]) -> str:
    if pattern.fullmatch(value) is None:
        raise CallbackRefused(key, f"{value!r} does not match {pattern.pattern}")
    return value


def _checked_timestamp(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise CallbackRefused("timestamp", f"{value!r} is not an ISO-8601 date and time") from None
    return value


def _checked_status(value: str) -> CallbackStatus:
    if value not in STATUSES:
        raise CallbackRefused("status", f"{value!r} is not a documented MessageStatus status")
    return cast(CallbackStatus, value)


def parse_callback(fields: Mapping[str, Any]) -> CallbackEvent:
    """Check the keys of a status callback, in any of the three forms, or raise
    `CallbackRefused` naming the first bad key. Keys Catapush may add later are ignored."""
    # Every required key is checked for presence first, so that a callback missing a key is
    # reported as such rather than by whichever value check happens to run first.
    for key in REQUIRED_KEYS:
        _required(fields, key)
    kind = _required(fields, "type")
    if kind != MESSAGE_STATUS_TYPE:
        raise CallbackRefused("type", f"must be {MESSAGE_STATUS_TYPE!r}, not {kind!r}")
    message_ref = _text(fields, "messageRef")
    return CallbackEvent(
        status=_checked_status(_required(fields, "status")),
        timestamp=_checked_timestamp(_required(fields, "timestamp")),
        application_id=_required(fields, "applicationId"),
        message_id=_matching("messageId", _required(fields, "messageId"), _KEY_PART),
        recipient=_required(fields, "recipient"),
        # messageRef is the intent id: checked with the same pattern, which also keeps ':' out
        # of the key it is stored under, so it can never collide with the `msgid:` keys.
        message_ref=None
        if message_ref is None
        else _matching("messageRef", message_ref, _MESSAGE_REF),
        # Only shown to ops, never used as a key: taken as Catapush sends them.
        recipient_ref=_text(fields, "recipientRef"),
        fallback_ref=_text(fields, "fallbackRef"),
    )
