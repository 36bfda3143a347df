"""One delivery attempt of one intent: the worker's core, free of dramatiq.

Decodes and checks the intent, claims it (so no other worker sends it at the same time and a
copy that already went out is skipped), waits for the shared rate limit, sends, and turns the
answer into an `Outcome`. The caller (the consumer) carries out retries; dead letters and
receipts are written here, through the `Recorder`, so that no outcome is left unrecorded even
while Redis is away.

A `RedisError` that leaves `attempt` always comes from before the send (the rate limit, the
claim): nothing went out, and the caller may run the same attempt again once Redis answers.
A `TokenUnavailable` that leaves it is a refusal of the credentials: no attempt is spent on it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from dispatcher.backoff import backoff_delay_ms
from dispatcher.deadletters import AsyncDeadLetters, DeadLetterEntry
from dispatcher.durable import Recorder
from dispatcher.errors import (
    CatapushError,
    CatapushRejected,
    IntentRefused,
    SlotUnavailable,
    TokenUnavailable,
)
from dispatcher.intents import ID_PATTERN, Attachment, CatapushMessage, parse_intent
from dispatcher.logs import get_logger
from dispatcher.outcome import DeadLetter, RetryLater, Sent, decide, is_transient
from dispatcher.receipts import ClaimState, Receipt, Receipts
from dispatcher.render import Templates, remaining_expire_time, render

log = get_logger(__name__)

# How long a copy of an intent that another worker is sending right now waits to look again.
BUSY_RETRY_DELAY_MS = 2_000


class Sender(Protocol):
    async def send(self, message: CatapushMessage, attachment: Attachment | None = None) -> Any: ...


class Limiter(Protocol):
    async def acquire(self) -> None: ...

    async def pause_all(self, seconds: float) -> None: ...


# With several accounts: the sender and limiter of the account that sends for a message's
# app; raises `IntentRefused` when none does.
Route = Callable[[CatapushMessage], tuple[Sender, Limiter]]


@dataclass(frozen=True, slots=True)
class Reschedule:
    """Send the intent again after `delay_ms`, as attempt number `attempt`.

    `intent` is the checked intent as it travels (with its id fixed, even when the producer
    gave none), so every later copy is recognised as the same intent.
    """

    intent: dict[str, Any]
    attempt: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """The intent went out already (a receipt exists): nothing to do."""

    message_id: str


AttemptResult = Sent | DeadLetter | Reschedule | Skipped


def _usable_id(raw: Any) -> str | None:
    """The id of an invalid intent, if it is fit to key its dead letter."""
    candidate = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and re.fullmatch(ID_PATTERN, candidate):
        return candidate
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Deliverer:
    def __init__(
        self,
        *,
        sender: Sender,
        receipts: Receipts,
        dead_letters: AsyncDeadLetters,
        limiter: Limiter,
        recorder: Recorder,
        max_attempts: int,
        backoff_min_ms: int,
        backoff_max_ms: int,
        default_mobile_app_id: int | None,
        notify_callback_url: str | None = None,
        templates: Templates | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        route: Route | None = None,
    ) -> None:
        self._sender = sender
        self._receipts = receipts
        self._dead_letters = dead_letters
        self._limiter = limiter
        self._recorder = recorder
        self._max_attempts = max_attempts
        self._backoff_min_ms = backoff_min_ms
        self._backoff_max_ms = backoff_max_ms
        self._default_mobile_app_id = default_mobile_app_id
        self._notify_callback_url = notify_callback_url
        self._templates = templates
        self._clock_ms = clock_ms
        self._route = route

    async def attempt(
        self, raw: Any, attempt: int, *, claim_owner: str | None = None
    ) -> AttemptResult:
        """Run attempt number `attempt` (1-based) for the intent `raw` (decoded JSON).

        `claim_owner` names the holder of this message, the same each time the attempt runs
        again, so a claim taken by a call whose answer Redis lost is recognised as ours.
        """
        try:
            intent = parse_intent(raw)
        except IntentRefused as exc:
            return await self._bury(
                DeadLetter("invalid", None, "invalid intent", str(exc)),
                intent_id=_usable_id(raw),
                attempts=attempt - 1,
                intent=raw,
            )
        # One reading of the clock: expiry and the expireTime sent must agree.
        now_ms = self._clock_ms()
        if intent.id is None:
            # Raw producers may leave the id out; one is fixed now so retries keep it.
            intent = intent.with_defaults(now_ms=now_ms)
        intent_id: str = intent.id  # type: ignore[assignment]
        wire = intent.to_wire()

        remaining = remaining_expire_time(intent, now_ms=now_ms)
        if remaining is not None and remaining < 1:
            return await self._bury(
                DeadLetter(
                    "expired",
                    None,
                    "expired",
                    f"expireTime of {intent.expire_time} s passed before it could be sent",
                ),
                intent_id=intent_id,
                attempts=attempt - 1,
                intent=wire,
            )

        try:
            message = render(
                intent,
                default_mobile_app_id=self._default_mobile_app_id,
                now_ms=now_ms,
                notify_callback_url=self._notify_callback_url,
                templates=self._templates,
            )
            sender, limiter = (
                (self._sender, self._limiter) if self._route is None else self._route(message)
            )
        except IntentRefused as exc:
            return await self._bury(
                DeadLetter("invalid", None, "invalid intent", str(exc)),
                intent_id=intent_id,
                attempts=attempt - 1,
                intent=wire,
            )

        # The slot comes before the claim, so a claim only ever covers the send itself and
        # can expire soon after a crash; a slot spent on a copy that needs no send is cheap.
        try:
            await limiter.acquire()
        except SlotUnavailable as exc:
            log.info("delivery.deferred", intent_id=intent_id, reason=str(exc))
            # Waiting for the rate limit is not a failed attempt.
            return Reschedule(wire, attempt, int(exc.retry_in_s * 1000))

        claim = await self._receipts.claim(intent_id, claim_owner)
        if claim.state is ClaimState.ALREADY_SENT:
            assert claim.receipt is not None
            log.info("delivery.skipped", intent_id=intent_id, message_id=claim.receipt.message_id)
            return Skipped(claim.receipt.message_id)
        if claim.state is ClaimState.BUSY:
            log.info("delivery.deferred", intent_id=intent_id, reason="claimed by another worker")
            # Not a failed attempt: the attempt number stays.
            return Reschedule(wire, attempt, BUSY_RETRY_DELAY_MS)

        try:
            accepted = await sender.send(message, intent.attachment)
        except CatapushError as exc:
            await self._release(intent_id, claim.owner)
            if isinstance(exc, TokenUnavailable) and exc.permanent:
                raise
            if (
                isinstance(exc, CatapushRejected)
                and exc.retry_after_s is not None
                and is_transient(exc.status_code)
            ):
                await self._pause_all(limiter, exc.retry_after_s, intent_id)
            outcome = decide(exc, attempt=attempt, max_attempts=self._max_attempts)
            if isinstance(outcome, RetryLater):
                delay_ms = backoff_delay_ms(
                    attempt,
                    self._backoff_min_ms,
                    self._backoff_max_ms,
                    retry_after_s=outcome.retry_after_s,
                )
                log.warning(
                    "delivery.failed",
                    intent_id=intent_id,
                    attempt=attempt,
                    status_code=outcome.status_code,
                    title=outcome.title,
                    detail=outcome.detail,
                    retry_in_ms=delay_ms,
                )
                return Reschedule(wire, attempt + 1, delay_ms)
            return await self._bury(outcome, intent_id=intent_id, attempts=attempt, intent=wire)
        except BaseException:
            await self._release(intent_id, claim.owner)
            raise

        receipt = Receipt(intent_id, accepted.message_id, _iso_now(), attempt)
        await self._recorder.write(
            lambda: self._receipts.record(receipt), what="receipt", intent_id=intent_id
        )
        log.info(
            "delivery.sent", intent_id=intent_id, message_id=accepted.message_id, attempt=attempt
        )
        return Sent(accepted.message_id)

    async def _release(self, intent_id: str, owner: str) -> None:
        # A claim that cannot be released expires by itself soon after.
        try:
            await self._receipts.release(intent_id, owner)
        except RedisError as exc:
            self._recorder.redis_failed(exc)
            log.warning("claim.release_failed", intent_id=intent_id, error=repr(exc))

    async def _pause_all(self, limiter: Limiter, seconds: float, intent_id: str) -> None:
        # The pause is a courtesy to Catapush; this intent's own backoff honours it anyway.
        try:
            await limiter.pause_all(seconds)
        except RedisError as exc:
            self._recorder.redis_failed(exc)
            log.warning("ratelimit.pause_failed", intent_id=intent_id, error=repr(exc))

    async def bury_unreadable(self, raw: str, problem: str) -> DeadLetter:
        """Dead-letter a queue message that is not even a readable intent, keeping its text."""
        return await self._bury(
            DeadLetter("invalid", None, "invalid message", problem),
            intent_id=None,
            attempts=0,
            intent=raw,
        )

    async def bury_exhausted(self, raw: Any, attempts: int, error: str) -> DeadLetter:
        """Dead-letter an intent whose attempts all ended in unexpected errors."""
        return await self._bury(
            DeadLetter("exhausted", None, "unexpected error", error),
            intent_id=_usable_id(raw),
            attempts=attempts,
            intent=raw,
        )

    async def _bury(
        self, outcome: DeadLetter, *, intent_id: str | None, attempts: int, intent: Any
    ) -> DeadLetter:
        entry = DeadLetterEntry.create(
            intent_id=intent_id,
            reason=outcome.reason,
            status_code=outcome.status_code,
            title=outcome.title,
            detail=outcome.detail,
            attempts=attempts,
            intent=intent,
        )
        await self._recorder.write(
            lambda: self._dead_letters.add(entry), what="dead letter", intent_id=entry.id
        )
        log.warning(
            "delivery.dead_lettered",
            intent_id=entry.id,
            reason=entry.reason,
            status_code=entry.status_code,
            title=entry.title,
            detail=entry.detail,
            attempts=attempts,
        )
        return outcome
