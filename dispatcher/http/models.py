"""The shapes of the API's requests and answers, as pydantic models.

The handlers build their answers from these models, and `dispatcher.http.openapi` turns them
into the OpenAPI document, so the document cannot drift from what the server does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from dispatcher.callbacks import CallbackStatus
from dispatcher.intents import ID_PATTERN, Intent
from dispatcher.lanes import Lane
from dispatcher.outcome import DeadReason

# Dead letters per page of the list, by default and at most.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_CURSOR = 2**53


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Errors(_Answer):
    """Every error answer: what was wrong, one `<field>: <reason>` a line."""

    errors: list[str]


class IntentBatch(RootModel[Annotated[list[Intent], Field(min_length=1)]]):
    """A batch of intents: all are enqueued, or none."""


class Accepted(_Answer):
    id: str


class AcceptedBatch(_Answer):
    ids: list[str]


class Ok(_Answer):
    ok: Literal[True] = True


class Health(_Answer):
    ok: bool
    errors: list[str] | None = None
    templates: int | None = Field(None, description="Notification templates loaded.")


class Callback(BaseModel):
    """A Catapush `MessageStatus` callback, as JSON (the same keys as the form and query
    forms). Keys Catapush may add later are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    type: Literal["MessageStatus"]
    timestamp: str = Field(description="ISO-8601 date and time of the event, as Catapush wrote it.")
    applicationId: str = Field(description="The Catapush app.")
    messageId: str = Field(description="Catapush's id of the message.")
    recipient: str = Field(description="The recipient's identifier.")
    status: CallbackStatus
    messageRef: Annotated[str, Field(pattern=ID_PATTERN)] | None = Field(
        None, description="The intent id, which the dispatcher sent as `messageRef`."
    )
    recipientRef: str | None = None
    fallbackRef: str | None = None


class SecretQuery(BaseModel):
    """The older form of the receiver: the secret as a query parameter."""

    secret: str = Field(description="DISPATCHER_CALLBACK_SECRET.")


class CallbackQuery(Callback):
    """A `GET` callback of the older form: its keys and the secret in the query string."""

    secret: str = Field(description="DISPATCHER_CALLBACK_SECRET.")


class CallbackRecord(BaseModel):
    """A stored status callback."""

    model_config = ConfigDict(extra="allow")

    status: str
    recipient: str
    timestamp: str
    messageId: str
    recipientRef: str | None = None
    fallbackRef: str | None = None


StatusState = Literal[
    "sent",
    "dead",
    "cancelled",
    "sending",
    "scheduled",
    "queued",
    "retrying",
    "waiting",
    "partial",
    "unknown",
]


class PartStatus(_Answer):
    """One part of a split intent (its id is the part's `messageRef`); a whole intent's
    report has these fields and more."""

    id: str
    state: StatusState
    message_id: str | None = None
    sent_at: str | None = None
    attempts: int | None = None
    reason: DeadReason | None = None
    status_code: int | None = None
    title: str | None = None
    detail: str | None = None
    dead_at: str | None = None
    cancelled_at_ms: int | None = Field(None, description="When it was cancelled (epoch ms).")


class NotificationStatus(PartStatus):
    """Where an intent stands: the same report as `dispatcher status ID --json`."""

    state: StatusState = Field(
        description="`partial`: a split intent whose parts are in different states; "
        "`waiting`: a part not sent yet."
    )
    message_id: str | None = Field(None, description="Catapush messageId (sent).")
    lane: Lane | None = Field(None, description="The lane it waits in (queued, retrying).")
    attempt: int | None = Field(None, description="The attempt waiting (queued, retrying).")
    eta_ms: int | None = Field(None, description="When a retry is due (epoch ms).")
    eta: str | None = Field(None, description="When a retry is due (RFC 3339, UTC).")
    send_at_ms: int | None = Field(None, description="When a scheduled intent goes (epoch ms).")
    recipients: int | None = Field(None, description="Recipients of a split intent.")
    split_at_ms: int | None = Field(None, description="When it was split (epoch ms).")
    parts_by_state: dict[str, int] | None = Field(None, description="A split intent's parts.")
    parts: list[PartStatus] | None = None
    callbacks: list[CallbackRecord | str]


class CancelAnswer(_Answer):
    """What a cancel did: the same object as a line of `dispatcher cancel --json`."""

    id: str
    state: Literal["cancelled", "sent", "sending"] = Field(
        description="`cancelled`: it will not be sent (a split intent: its unsent parts); "
        "`sent`: it went out before; `sending`: a worker was sending it at that moment."
    )
    message_id: str | None = None
    parts: int | None = None
    parts_sent: int | None = None


class DeadLetter(_Answer):
    id: str
    reason: DeadReason
    status_code: int | None
    title: str
    detail: str
    attempts: int
    dead_at: str
    intent: Any = Field(description="The intent, or the raw text of a message that was not one.")


class DeadLetterSummary(_Answer):
    id: str
    reason: DeadReason
    status_code: int | None
    title: str
    attempts: int
    dead_at: str


class DeadLetterPage(_Answer):
    items: list[DeadLetterSummary]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
    counts: dict[str, int] = Field(description="Dead letters by reason, all pages.")


class DeadLetterQuery(BaseModel):
    reason: DeadReason | None = Field(None, description="Only dead letters with this reason.")
    # Redis takes 64-bit positions; past this there is nothing to page through anyway.
    cursor: Annotated[int, Field(ge=0, le=MAX_CURSOR)] = Field(
        0, description="Where the page starts."
    )
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE


class Replayed(_Answer):
    id: str
    replayed: Literal[True] = True


class Purged(_Answer):
    id: str
    purged: Literal[True] = True


class QueueDepth(_Answer):
    name: str
    lane: Lane = Field(description="The lane the queue (or delay queue) serves.")
    depth: int = Field(description="Messages waiting.")
    oldest_age_s: float | None = Field(description="Age of the oldest waiting message.")


class Rates(_Answer):
    sent_last_minute: int = Field(description="Intents sent in the last full minute.")
    sent_per_minute_5m: float = Field(description="Average over the last five full minutes.")
    sent_last_hour: int
    dead_last_hour: int


class QueueOverview(_Answer):
    queues: list[QueueDepth]
    dead_letters: int
    rates: Rates
    sent_per_minute: list[int] = Field(
        description="Intents sent in each of the last 60 minutes, oldest first, the current "
        "(partial) minute last."
    )
