"""One delivery attempt of one intent: the worker's core, free of dramatiq.

Decodes and checks the intent, holds it back if its `sendAt` is still ahead, splits it into
parts if it has more recipients than one message carries (`dispatcher.fanout`), drops it if
it was cancelled, claims it (so no other worker sends it at the same time and a copy that
already went out is skipped), waits for the shared rate limit, sends, and turns the answer
into an `Outcome`. The caller (the consumer) carries out retries; dead letters and
receipts are written here, through the `Recorder`, so that no outcome is left unrecorded even
while Redis is away.

A `RedisError` that leaves `attempt` always comes from before the send (the rate limit, the
claim): nothing went out, and the caller may run the same attempt again once Redis answers.
A `TokenUnavailable` that leaves it is a refusal of the credentials: no attempt is spent on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from dispatcher.admission import Limits, admission_problems
from dispatcher.backoff import RetryPolicy
from dispatcher.errors import (
    CatapushError,
    CatapushRejected,
    IntentRefused,
    SlotUnavailable,
    TokenUnavailable,
)
from dispatcher.fanout import needs_split, split
from dispatcher.intents import Attachment, Intent, id_of, parse_intent
from dispatcher.lanes import TRANSACTIONAL, Lane
from dispatcher.logs import get_logger
from dispatcher.outcome import DeadLetter, Sent, decide, is_transient
from dispatcher.render import Templates, remaining_expire_time, render_wire
from dispatcher.store.deadletters import AsyncDeadLetters, DeadLetterEntry
from dispatcher.store.receipts import Claim, ClaimState, Receipt, Receipts
from dispatcher.worker.durable import Recorder

log = get_logger(__name__)

# How long a copy of an intent that another worker is sending right now waits to look again.
BUSY_RETRY_DELAY_MS = 2_000
# A `sendAt` at most this far ahead is taken as come: the schedule moves intents by Redis's
# clock, which may run a little ahead of this worker's.
SEND_AT_SLACK_MS = 1_000


class Sender(Protocol):
    async def send(
        self, message: Mapping[str, Any], attachment: Attachment | None = None
    ) -> Any: ...


class Limiter(Protocol):
    async def acquire(self, lane: Lane = TRANSACTIONAL) -> None: ...

    async def pause_all(self, seconds: float) -> None: ...


class CancelCheck(Protocol):
    def is_cancelled(self, intent_id: str, part_of: str | None = None) -> bool: ...

    async def mark(self, intent_id: str, when_ms: int) -> None: ...


# With several accounts: the sender and limiter of the account that sends for an app (by
# its mobileAppId); raises `IntentRefused` when none does.
Route = Callable[[int], tuple[Sender, Limiter]]


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


@dataclass(frozen=True, slots=True)
class Scheduled:
    """The intent's `sendAt` is still ahead: hold it on the schedule until then."""

    intent_id: str
    intent: dict[str, Any]
    send_at_ms: int


@dataclass(frozen=True, slots=True)
class Split:
    """The intent has more recipients than one message carries: queue these parts instead."""

    intent_id: str
    parts: list[dict[str, Any]]
    recipients: int


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The intent (or the intent it is a part of) was cancelled: it is not sent."""

    intent_id: str


AttemptResult = Sent | DeadLetter | Reschedule | Skipped | Scheduled | Split | Cancelled


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unclaimed(job: _Job, claim: Claim) -> Skipped | Reschedule:
    """A copy that went out already is skipped; one another worker is sending waits."""
    if claim.receipt is not None:
        log.info("delivery.skipped", intent_id=job.intent_id, message_id=claim.receipt.message_id)
        return Skipped(claim.receipt.message_id)
    log.info("delivery.deferred", intent_id=job.intent_id, reason="claimed by another worker")
    # Not a failed attempt: the attempt number stays.
    return Reschedule(job.wire, job.attempt, BUSY_RETRY_DELAY_MS)


@dataclass(slots=True)
class _Job:
    """One attempt at one checked intent, with what its outcome needs to say about it."""

    intent: Intent
    intent_id: str
    attempt: int
    # The intent as it travels, when the queue's copy already is that (it had its id).
    raw: dict[str, Any] | None

    @property
    def wire(self) -> dict[str, Any]:
        # Built only for a retry or a dead letter: a send that succeeds never needs it.
        if self.raw is None:
            self.raw = self.intent.to_wire()
        return self.raw


class Deliverer:
    def __init__(
        self,
        *,
        sender: Sender,
        receipts: Receipts,
        dead_letters: AsyncDeadLetters,
        limiter: Limiter,
        recorder: Recorder,
        retry: RetryPolicy,
        default_mobile_app_id: int | None,
        notify_callback_url: str | None = None,
        templates: Templates | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        route: Route | None = None,
        limits: Limits | None = None,
        cancels: CancelCheck | None = None,
    ) -> None:
        self._sender = sender
        self._receipts = receipts
        self._dead_letters = dead_letters
        self._limiter = limiter
        self._recorder = recorder
        self._retry = retry
        self._default_mobile_app_id = default_mobile_app_id
        self._notify_callback_url = notify_callback_url
        self._templates = templates
        self._clock_ms = clock_ms
        self._route = route
        self._limits = limits if limits is not None else Limits()
        self._cancels = cancels

    async def attempt(
        self,
        raw: Any,
        attempt: int,
        *,
        claim_owner: str | None = None,
        lane: Lane = TRANSACTIONAL,
    ) -> AttemptResult:
        """Run attempt number `attempt` (1-based) for the intent `raw` (decoded JSON), taken
        from the queue of `lane` (its rate slot is granted in that lane's turn).

        `claim_owner` names the holder of this message, the same each time the attempt runs
        again, so a claim taken by a call whose answer Redis lost is recognised as ours.
        """
        try:
            intent = parse_intent(raw)
        except IntentRefused as exc:
            return await self._bury(
                DeadLetter("invalid", None, "invalid intent", str(exc)),
                intent_id=id_of(raw),
                attempts=attempt - 1,
                intent=raw,
            )
        # One reading of the clock: expiry and the expireTime sent must agree.
        now_ms = self._clock_ms()
        travelling: dict[str, Any] | None = raw
        if intent.id is None or intent.created_at is None:
            # Raw producers may leave the id and the creation time out; both are fixed now,
            # so that retries keep the id and count expireTime from the first attempt.
            intent = intent.with_defaults(now_ms=now_ms)
            travelling = None
        job = _Job(intent, intent.id, attempt, travelling)  # type: ignore[arg-type]
        early = await self._before_send(job, now_ms)
        if early is not None:
            return early
        try:
            payload = render_wire(
                intent,
                default_mobile_app_id=self._default_mobile_app_id,
                now_ms=now_ms,
                notify_callback_url=self._notify_callback_url,
                templates=self._templates,
            )
            sender, limiter = self._route_for(payload["mobileAppId"])
        except IntentRefused as exc:
            return await self._bury_job(
                job, DeadLetter("invalid", None, "invalid intent", str(exc))
            )

        # The slot comes before the claim, so a claim only ever covers the send itself and
        # can expire soon after a crash; a slot spent on a copy that needs no send is cheap.
        try:
            await limiter.acquire(lane)
        except SlotUnavailable as exc:
            log.info("delivery.deferred", intent_id=job.intent_id, reason=str(exc))
            # Waiting for the rate limit is not a failed attempt.
            return Reschedule(job.wire, attempt, int(exc.retry_in_s * 1000))

        claim = await self._receipts.claim(job.intent_id, claim_owner, part_of=intent.whole_id)
        if claim.state is ClaimState.CANCELLED:
            return await self._cancelled(job, now_ms)
        if claim.state is not ClaimState.CLAIMED:
            return _unclaimed(job, claim)
        try:
            accepted = await sender.send(payload, intent.attachment)
        except CatapushError as exc:
            await self._release(job.intent_id, claim.owner)
            return await self._failed(job, exc, limiter)
        except BaseException:
            await self._release(job.intent_id, claim.owner)
            raise
        return await self._sent(job, accepted.message_id)

    async def _before_send(self, job: _Job, now_ms: int) -> AttemptResult | None:
        """What becomes of the intent short of a send (held, expired, cancelled, split),
        or None when it is to be sent now."""
        intent = job.intent
        # Intake checked these for its own doors; a raw Redis producer had no intake.
        problems = admission_problems(intent, self._limits, now_ms=now_ms)
        if problems:
            detail = "; ".join(problems)
            return await self._bury_job(job, DeadLetter("invalid", None, "invalid intent", detail))
        if intent.send_at is not None and intent.send_at > now_ms + SEND_AT_SLACK_MS:
            log.info("delivery.scheduled", intent_id=job.intent_id, send_at=intent.send_at)
            return Scheduled(job.intent_id, job.wire, intent.send_at)
        remaining = remaining_expire_time(intent, now_ms=now_ms)
        if remaining is not None and remaining < 1:
            detail = f"expireTime of {intent.expire_time} s passed before it could be sent"
            return await self._bury_job(job, DeadLetter("expired", None, "expired", detail))
        if self._cancels is not None and self._cancels.is_cancelled(job.intent_id, intent.whole_id):
            return await self._cancelled(job, now_ms)
        if needs_split(intent, self._limits.max_recipients):
            parts = split(intent, self._limits.max_recipients)
            log.info(
                "delivery.split",
                intent_id=job.intent_id,
                parts=len(parts),
                recipients=len(intent.recipients),
            )
            return Split(job.intent_id, [part.to_wire() for part in parts], len(intent.recipients))
        return None

    async def _cancelled(self, job: _Job, now_ms: int) -> Cancelled:
        if self._cancels is not None and job.intent.part is not None:
            # The part's own mark lets `status` name it cancelled.
            cancels = self._cancels
            await self._recorder.write(
                lambda: cancels.mark(job.intent_id, now_ms), what="cancel", intent_id=job.intent_id
            )
        log.info("delivery.cancelled", intent_id=job.intent_id, attempt=job.attempt)
        return Cancelled(job.intent_id)

    def _route_for(self, mobile_app_id: int) -> tuple[Sender, Limiter]:
        if self._route is None:
            return self._sender, self._limiter
        return self._route(mobile_app_id)

    async def _sent(self, job: _Job, message_id: str) -> Sent:
        receipt = Receipt(job.intent_id, message_id, _iso_now(), job.attempt)
        await self._recorder.write(
            lambda: self._receipts.record(receipt), what="receipt", intent_id=job.intent_id
        )
        log.info(
            "delivery.sent", intent_id=job.intent_id, message_id=message_id, attempt=job.attempt
        )
        return Sent(message_id)

    async def _failed(
        self, job: _Job, exc: CatapushError, limiter: Limiter
    ) -> Reschedule | DeadLetter:
        """What an attempt that Catapush failed or refused comes to."""
        if isinstance(exc, TokenUnavailable) and exc.permanent:
            raise exc
        if (
            isinstance(exc, CatapushRejected)
            and exc.retry_after_s is not None
            and is_transient(exc.status_code)
        ):
            await self._pause_all(limiter, exc.retry_after_s, job.intent_id)
        outcome = decide(exc, attempt=job.attempt, max_attempts=self._retry.max_attempts)
        if isinstance(outcome, DeadLetter):
            return await self._bury_job(job, outcome, attempts=job.attempt)
        delay_ms = self._retry.delay_ms(job.attempt, retry_after_s=outcome.retry_after_s)
        log.warning(
            "delivery.failed",
            intent_id=job.intent_id,
            attempt=job.attempt,
            status_code=outcome.status_code,
            title=outcome.title,
            detail=outcome.detail,
            retry_in_ms=delay_ms,
        )
        return Reschedule(job.wire, job.attempt + 1, delay_ms)

    async def _bury_job(
        self, job: _Job, outcome: DeadLetter, *, attempts: int | None = None
    ) -> DeadLetter:
        # Dead before it was sent, the attempt under way does not count.
        spent = job.attempt - 1 if attempts is None else attempts
        return await self._bury(outcome, intent_id=job.intent_id, attempts=spent, intent=job.wire)

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
            intent_id=id_of(raw),
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
