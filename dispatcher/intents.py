"""The notification intent (what producers enqueue) and the Catapush message (what is sent).

Both are pydantic models that carry every constraint Catapush documents, so that an intent
which could never be accepted is refused at intake instead of travelling through the queue.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from dispatcher.errors import IntentRefused
from dispatcher.lanes import Lane, lane_of_priority

__all__ = [
    "MAX_INTENT_BYTES",
    "CatapushMessage",
    "Intent",
    "IntentRefused",
    "check_size",
    "field_errors",
    "id_of",
    "parse_intent",
]

MAX_TEXT_LENGTH = 32768
MAX_NOTIFICATION_TEXT_LENGTH = 400
MAX_FALLBACK_TEXT_UNITS = 1530
MAX_EXPIRE_TIME_S = 2_592_000
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The largest intent, encoded as compact JSON: the base64 of the largest attachment
# (13.3 MiB), the longest text even if every character is escaped (192 KiB), and room for
# recipients, data and the rest, rounded up. Intake refuses a larger one, whatever the door
# (Python, CLI, HTTP), so all of them take the same intents.
MAX_INTENT_BYTES = 16 * 1024 * 1024
# The earliest `sendAt` taken as epoch milliseconds (2001-09-09): a smaller number is far
# more likely seconds, which would send at once instead of when meant.
MIN_SEND_AT_MS = 1_000_000_000_000
# Parts one intent may be split into (see `dispatcher.fanout`), whatever the settings.
MAX_PARTS = 100_000

ID_PATTERN = r"^[A-Za-z0-9_-]{5,50}$"
IDENTIFIER_PATTERN = r"^[!-~]{1,100}$"
RECIPIENT_REF_PATTERN = r"^[a-zA-Z0-9._-]{5,100}$"
MOBILE_NUMBER_PATTERN = r"^[0-9]{8,}$"
TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
LOCALE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"

# Catapush's "safe" charset forbids non-printable characters. Line breaks and tabs are kept
# because multi-line push texts are common and every device renders them.
_UNSAFE_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

# GSM 03.38: the basic set plus the extension set, whose characters take two units each.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\x0c")


def check_safe_text(value: str) -> str:
    """Refuse the characters Catapush rejects as not "safe"."""
    match = _UNSAFE_CHARACTERS.search(value)
    if match is not None:
        raise ValueError(
            f"contains a non-printable character U+{ord(match.group()):04X} "
            f"at position {match.start()}"
        )
    return value


def gsm_units(text: str) -> int:
    """Length of a text in GSM 03.38 septets; raises on a character outside the charset."""
    units = 0
    for position, character in enumerate(text):
        if character in _GSM_BASIC:
            units += 1
        elif character in _GSM_EXTENDED:
            units += 2
        else:
            raise ValueError(
                f"character {character!r} at position {position} is not in the GSM 03.38 charset"
            )
    return units


def check_gsm_text(value: str) -> str:
    units = gsm_units(value)
    if units > MAX_FALLBACK_TEXT_UNITS:
        raise ValueError(
            f"is {units} GSM units long, at most {MAX_FALLBACK_TEXT_UNITS} are allowed "
            "(^ { } \\ [ ] ~ | € count as two)"
        )
    return value


# Lengths are checked before the charset so an oversized text is reported as such.
_Safe = AfterValidator(check_safe_text)
MessageText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH), _Safe]
OverrideText = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH), _Safe]
NotificationText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NOTIFICATION_TEXT_LENGTH), _Safe
]
AndroidTitle = Annotated[str, StringConstraints(max_length=MAX_NOTIFICATION_TEXT_LENGTH), _Safe]
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
RecipientRef = Annotated[str, Field(pattern=RECIPIENT_REF_PATTERN)]
MobileNumber = Annotated[str, Field(pattern=MOBILE_NUMBER_PATTERN)]
IntentId = Annotated[str, Field(pattern=ID_PATTERN)]
ExpireTime = Annotated[StrictInt, Field(ge=1, le=MAX_EXPIRE_TIME_S)]
FallbackText = Annotated[str, AfterValidator(check_gsm_text)]


def parse_send_at(value: Any) -> Any:
    """`sendAt` as epoch milliseconds: given so, or as an RFC 3339 time with its offset."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        if value < MIN_SEND_AT_MS:
            raise ValueError(
                f"{value} is before 2001 as epoch milliseconds; give milliseconds, not seconds"
            )
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time (2026-12-24T09:00:00Z) or epoch milliseconds")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an RFC 3339 time such as 2026-12-24T09:00:00Z"
        ) from None
    if moment.tzinfo is None or "T" not in value.upper().replace(" ", "T"):
        raise ValueError(f"{value!r} needs a date, a time and an offset (Z or +01:00)")
    return round(moment.timestamp() * 1000)


SendAt = Annotated[StrictInt, BeforeValidator(parse_send_at)]


class _CamelModel(BaseModel):
    """Fields are snake_case in Python and camelCase on the wire, as Catapush spells them."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# -- The Catapush message (POST /messages) -------------------------------------------------


class RecipientOverride(_CamelModel):
    text: OverrideText | None = None
    mobile_number: MobileNumber | None = None


class PayloadRecipient(_CamelModel):
    identifier: Identifier
    recipient_ref: RecipientRef | None = None
    override: RecipientOverride | None = None


class IosOptions(_CamelModel):
    sound: StrictBool | None = None
    badge: Annotated[StrictInt, Field(ge=0, le=2_147_483_647)] | None = None
    sound_path: Annotated[str, Field(max_length=MAX_TEXT_LENGTH)] | None = None
    category: Annotated[str, Field(max_length=100)] | None = None
    custom_data: dict[str, Any] | None = None


class AndroidOptions(_CamelModel):
    title: AndroidTitle | None = None


class DevicesData(_CamelModel):
    ios: IosOptions | None = None
    android: AndroidOptions | None = None


class NotifyCallback(_CamelModel):
    url: AnyUrl
    method: Literal["get", "post"]


class Fallback(_CamelModel):
    timeout: Annotated[StrictInt, Field(ge=10, le=864_000)] | None = None
    validity_period: Annotated[StrictInt, Field(ge=300, le=864_000)] | None = None
    condition: Literal["undelivered", "unread"] | None = None
    text: FallbackText | None = None
    sender_number: Annotated[str, Field(pattern=r"^[0-9]*$")] | None = None
    sender_string: Annotated[str, Field(pattern=r"^[a-zA-Z0-9 .]{0,11}$")] | None = None


def _unique_identifiers(recipients: list[Any]) -> None:
    seen: set[str] = set()
    for recipient in recipients:
        if recipient.identifier in seen:
            raise ValueError(f"identifier {recipient.identifier!r} appears more than once")
        seen.add(recipient.identifier)


class CatapushMessage(_CamelModel):
    """The body of Catapush's `POST /messages`, with the documented constraints."""

    mobile_app_id: StrictInt
    text: MessageText
    recipients: Annotated[list[PayloadRecipient], Field(min_length=1)]
    notification_text: NotificationText | None = None
    message_ref: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    expire_time: ExpireTime | None = None
    is_marketing: StrictBool | None = None
    devices_data: DevicesData | None = None
    notify_callback: NotifyCallback | None = None
    fallback: Fallback | None = None

    @field_validator("recipients")
    @classmethod
    def _recipients_are_unique(cls, value: list[PayloadRecipient]) -> list[PayloadRecipient]:
        _unique_identifiers(value)
        return value

    def to_wire(self) -> dict[str, Any]:
        """The JSON object Catapush expects: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- The notification intent -----------------------------------------------------------------


class IntentRecipient(_CamelModel):
    identifier: Identifier
    recipient_ref: RecipientRef | None = None
    mobile_number: MobileNumber | None = None
    data: dict[str, Any] | None = None
    locale: Annotated[str, Field(pattern=LOCALE_PATTERN)] | None = None


class Attachment(_CamelModel):
    filename: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")]
    content_type: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$", max_length=255)
    ]
    data: str

    @field_validator("data")
    @classmethod
    def _data_is_base64(cls, value: str) -> str:
        try:
            decoded = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"is not valid base64 ({exc})") from None
        if len(decoded) > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"decodes to {len(decoded)} bytes, at most {MAX_ATTACHMENT_BYTES}")
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.data)


def _as_recipient(value: Any) -> Any:
    # A bare string is shorthand for a recipient with only an identifier.
    if isinstance(value, str):
        return {"identifier": value}
    return value


class Part(_CamelModel):
    """Which part of a split intent this is (see `dispatcher.fanout`)."""

    of: IntentId
    index: Annotated[StrictInt, Field(ge=1, le=MAX_PARTS)]
    count: Annotated[StrictInt, Field(ge=2, le=MAX_PARTS)]

    @model_validator(mode="after")
    def _index_within_count(self) -> Self:
        if self.index > self.count:
            raise ValueError(f"index: {self.index} is beyond the count of {self.count}")
        return self


class Intent(_CamelModel):
    """One notification to one or more recipients, as a producer enqueues it (schema v1)."""

    id: IntentId | None = None
    recipients: Annotated[list[IntentRecipient], Field(min_length=1)]
    mobile_app_id: StrictInt | None = None
    # Inline content.
    text: MessageText | None = None
    notification_text: NotificationText | None = None
    devices_data: DevicesData | None = None
    fallback: Fallback | None = None
    expire_time: ExpireTime | None = None
    is_marketing: StrictBool | None = None
    # The lane (see `dispatcher.lanes`); unset: bulk for a marketing message, else
    # transactional.
    priority: Lane | None = None
    # Template content.
    template: Annotated[str, Field(pattern=TEMPLATE_NAME_PATTERN)] | None = None
    data: dict[str, Any] | None = None
    locale: Annotated[str, Field(pattern=LOCALE_PATTERN)] | None = None
    attachment: Attachment | None = None
    # Held until then (epoch ms; RFC 3339 is accepted and read as such); expiry counts
    # from it.
    send_at: SendAt | None = None
    # Set at intake so that expiry counts from when the producer asked, across retries.
    created_at: Annotated[StrictInt, Field(ge=0)] | None = None
    # Set by the worker on each part of an intent it split; producers leave it out.
    part: Part | None = None

    @field_validator("recipients", mode="before")
    @classmethod
    def _expand_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_as_recipient(item) for item in value]
        return value

    @field_validator("recipients")
    @classmethod
    def _recipients_are_unique(cls, value: list[IntentRecipient]) -> list[IntentRecipient]:
        _unique_identifiers(value)
        return value

    @model_validator(mode="after")
    def _one_kind_of_content(self) -> Self:
        if self.template is None:
            if self.text is None:
                raise ValueError("text: is required unless a template is named")
            if self.data is not None:
                raise ValueError("data: only applies to a template; inline text takes none")
            if self.locale is not None:
                raise ValueError("locale: only applies to a template")
        else:
            if self.text is not None:
                raise ValueError("text: give either text or a template, not both")
            if self.notification_text is not None:
                raise ValueError("notificationText: comes from the template when one is named")
        return self

    @property
    def lane(self) -> Lane:
        return lane_of_priority(self.priority, self.is_marketing)

    @property
    def whole_id(self) -> str | None:
        """For a part of a split intent, the id of the whole (see `dispatcher.fanout`)."""
        return None if self.part is None else self.part.of

    def with_defaults(self, *, now_ms: int) -> Intent:
        """The intent as it travels: with an id and a creation time, generated when absent."""
        updates: dict[str, Any] = {}
        if self.id is None:
            updates["id"] = uuid.uuid4().hex
        if self.created_at is None:
            updates["created_at"] = now_ms
        return self.model_copy(update=updates) if updates else self

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- Error reporting -------------------------------------------------------------------------


def _location(loc: tuple[int | str, ...]) -> str:
    # pydantic names the union branch in the location ("str", "IntentRecipient"); users
    # only know the field path.
    parts = [str(part) for part in loc if not (isinstance(part, str) and part[:1].isupper())]
    return ".".join(parts)


def field_errors(exc: ValidationError) -> list[str]:
    """Each problem as `<field>: <reason>`, the field written as a dotted wire path."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"])
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        field = _location(tuple(error["loc"]))
        # Model-level checks name their own field in the message ("text: is required ...").
        if not field and ": " in message:
            lines.append(message)
        elif field:
            lines.append(f"{field}: {message}")
        else:
            lines.append(message)
    return lines


def parse_intent(data: Any) -> Intent:
    """Validate a decoded JSON value as an intent, or raise `IntentRefused`."""
    if not isinstance(data, dict):
        raise IntentRefused([f"intent: must be a JSON object, not {type(data).__name__}"])
    try:
        return Intent.model_validate(data)
    except ValidationError as exc:
        raise IntentRefused(field_errors(exc)) from exc


_ID = re.compile(ID_PATTERN)


def id_of(raw: Any) -> str | None:
    """The `id` of a decoded intent, valid or not, if it is fit to name it (in a log line, a
    dead letter): a string that matches the id pattern."""
    candidate = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and _ID.fullmatch(candidate):
        return candidate
    return None


def check_size(intent: Intent) -> Intent:
    """The intent, unless encoded it is larger than `MAX_INTENT_BYTES`; raises `IntentRefused`.

    Separate from parsing, because it costs one encoding of the intent: intake runs it once.
    """
    size = len(orjson.dumps(intent.to_wire()))
    if size > MAX_INTENT_BYTES:
        raise IntentRefused(
            [
                f"intent: is {size} bytes encoded as JSON, larger than the limit of "
                f"{MAX_INTENT_BYTES} bytes ({MAX_INTENT_BYTES // 2**20} MiB)"
            ]
        )
    return intent
