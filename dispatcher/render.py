"""Intent -> Catapush message. Pure: templates are handed in already loaded."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from dispatcher.errors import IntentRefused
from dispatcher.intents import CatapushMessage, Intent, field_errors

EXPIRE_TIME_MIN_S = 1


class RenderedText(Protocol):
    """What a template yields for one locale and one set of variables."""

    @property
    def text(self) -> str: ...

    @property
    def notification_text(self) -> str | None: ...

    @property
    def android_title(self) -> str | None: ...

    @property
    def fallback_text(self) -> str | None: ...


class Templates(Protocol):
    def render(self, name: str, locale: str | None, data: dict[str, Any]) -> RenderedText: ...


def remaining_expire_time(intent: Intent, *, now_ms: int) -> int | None:
    """Seconds of life the intent still has, counted from when it was enqueued, or from its
    `sendAt` when it was scheduled.

    Returns None when the intent sets no `expireTime`; 0 or less means it has expired.
    """
    if intent.expire_time is None:
        return None
    created = intent.created_at if intent.created_at is not None else now_ms
    if intent.send_at is not None:
        created = max(created, intent.send_at)
    elapsed_s = max(0, now_ms - created) // 1000
    return intent.expire_time - elapsed_s


def render(
    intent: Intent,
    *,
    default_mobile_app_id: int | None,
    now_ms: int,
    notify_callback_url: str | None = None,
    templates: Templates | None = None,
) -> CatapushMessage:
    """The `POST /messages` body for an intent as a checked model; raises `IntentRefused` if
    none can be built."""
    body = render_wire(
        intent,
        default_mobile_app_id=default_mobile_app_id,
        now_ms=now_ms,
        notify_callback_url=notify_callback_url,
        templates=templates,
    )
    return _checked(body)


def _checked(body: dict[str, Any]) -> CatapushMessage:
    try:
        return CatapushMessage.model_validate(body)
    except ValidationError as exc:
        # Reachable with templates: the rendered text can break a limit the intent could not.
        raise IntentRefused(field_errors(exc)) from exc


def render_wire(
    intent: Intent,
    *,
    default_mobile_app_id: int | None,
    now_ms: int,
    notify_callback_url: str | None = None,
    templates: Templates | None = None,
) -> dict[str, Any]:
    """The `POST /messages` body for an intent, as the JSON object Catapush takes.

    An inline intent was checked against every Catapush constraint when it was validated,
    and its body is made of those checked values, so it is not checked a second time (the
    worker's hot path; a property test holds the two in step). A template's rendered texts
    are new, so a template body is checked. Raises `IntentRefused` if no body can be built.
    """
    mobile_app_id = (
        intent.mobile_app_id if intent.mobile_app_id is not None else default_mobile_app_id
    )
    if mobile_app_id is None:
        raise IntentRefused(
            ["mobileAppId: required, as DISPATCHER_CATAPUSH_MOBILE_APP_ID sets no default"]
        )

    body: dict[str, Any] = {
        "mobileAppId": mobile_app_id,
        "messageRef": intent.id,
        "recipients": [],
    }
    text_for: dict[str, str] = {}
    if intent.template is None:
        body["text"] = intent.text
        if intent.notification_text is not None:
            body["notificationText"] = intent.notification_text
        devices = (
            intent.devices_data.model_dump(by_alias=True, exclude_none=True)
            if intent.devices_data
            else None
        )
        fallback = (
            intent.fallback.model_dump(by_alias=True, exclude_none=True)
            if intent.fallback
            else None
        )
    else:
        if templates is None:
            raise IntentRefused(
                [f"template: {intent.template!r} named, but DISPATCHER_TEMPLATES_DIR is not set"]
            )
        shared_data = intent.data or {}
        top = templates.render(intent.template, intent.locale, shared_data)
        body["text"] = top.text
        if top.notification_text:
            body["notificationText"] = top.notification_text
        devices = (
            intent.devices_data.model_dump(by_alias=True, exclude_none=True)
            if intent.devices_data
            else None
        )
        if top.android_title:
            devices = dict(devices or {})
            devices["android"] = {**devices.get("android", {}), "title": top.android_title}
        fallback = (
            intent.fallback.model_dump(by_alias=True, exclude_none=True)
            if intent.fallback
            else None
        )
        if top.fallback_text:
            fallback = {**(fallback or {}), "text": top.fallback_text}
        # Catapush overrides only `text` per recipient, so a recipient's own data or locale
        # personalise the text; the other fields come from the intent's data and locale.
        for recipient in intent.recipients:
            if recipient.data or recipient.locale:
                own = templates.render(
                    intent.template,
                    recipient.locale or intent.locale,
                    {**shared_data, **(recipient.data or {})},
                )
                if own.text != top.text:
                    text_for[recipient.identifier] = own.text

    for recipient in intent.recipients:
        entry: dict[str, Any] = {"identifier": recipient.identifier}
        if recipient.recipient_ref is not None:
            entry["recipientRef"] = recipient.recipient_ref
        override: dict[str, Any] = {}
        if recipient.identifier in text_for:
            override["text"] = text_for[recipient.identifier]
        if recipient.mobile_number is not None:
            override["mobileNumber"] = recipient.mobile_number
        if override:
            entry["override"] = override
        body["recipients"].append(entry)

    if devices:
        body["devicesData"] = devices
    if fallback:
        body["fallback"] = fallback
    remaining = remaining_expire_time(intent, now_ms=now_ms)
    if remaining is not None:
        body["expireTime"] = max(EXPIRE_TIME_MIN_S, remaining)
    if intent.is_marketing is not None:
        body["isMarketing"] = intent.is_marketing
    if notify_callback_url is not None:
        body["notifyCallback"] = {"url": notify_callback_url, "method": "post"}

    if intent.template is not None:
        return _checked(body).to_wire()
    return body


# Checking a template intent at intake renders its texts; which app receives it is the
# worker's business, so any id does here.
_ANY_APP_ID = 0


def check_template(intent: Intent, templates: Templates, *, now_ms: int) -> None:
    """Refuse at intake a template intent the worker could not render (unknown template,
    missing variable, a rendered text that breaks a Catapush limit)."""
    if intent.template is not None:
        render(intent, default_mobile_app_id=_ANY_APP_ID, now_ms=now_ms, templates=templates)
