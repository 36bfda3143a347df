"""The real `Deliverer` with in-memory fakes behind it: every branch of one attempt, from an
unreadable intent to a send cancelled half way."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from dispatcher.backoff import backoff_ceiling_ms
from dispatcher.errors import (
    CatapushRejected,
    CatapushTimeout,
    CatapushUnreachable,
    IntentRefused,
    SlotUnavailable,
    TokenUnavailable,
)
from dispatcher.outcome import DeadLetter, RetryLater, Sent, decide
from dispatcher.store.receipts import ClaimState, Receipt
from dispatcher.worker.delivery import BUSY_RETRY_DELAY_MS, Limiter, Reschedule, Sender, Skipped
from dispatcher.worker.health import REDIS
from tests.unit.deliveryfakes import (
    APP_ID,
    NOW_MS,
    POLICY,
    Accepted,
    FakeLimiter,
    FakeSender,
    Rig,
    intent,
    redis_down,
)

pytestmark = pytest.mark.timeout(20)

FAST = settings(max_examples=60, deadline=None, database=None)
OWNER = "worker-1:m1"


def in_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A test that runs `scenario` on an event loop of its own."""

    @functools.wraps(scenario)
    def test() -> None:
        asyncio.run(scenario())

    return test


def within_policy(delay_ms: int, attempt: int) -> bool:
    return POLICY.min_ms <= delay_ms <= backoff_ceiling_ms(attempt, POLICY.min_ms, POLICY.max_ms)


def nothing_sent(rig: Rig) -> bool:
    return not rig.sender.sent and not rig.receipts.recorded


# -- the intent itself ---------------------------------------------------------------------


@in_loop
async def test_an_intent_that_is_not_an_object_is_dead_lettered_invalid_under_a_new_id() -> None:
    rig = Rig()
    result = await rig.deliverer.attempt(["not", "an", "intent"], 2, claim_owner=OWNER)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.status_code, result.title) == ("invalid", None, "invalid intent")
    assert "must be a JSON object, not list" in result.detail
    [entry] = rig.dead_letters.entries
    assert entry.id.startswith("invalid-")
    assert entry.reason == "invalid"
    assert entry.attempts == 1  # the attempt under way is not counted
    assert entry.intent == ["not", "an", "intent"]
    assert rig.receipts.claims == []
    assert rig.limiter.acquired == 0
    assert nothing_sent(rig)


@in_loop
async def test_an_intent_with_a_bad_field_is_dead_lettered_under_its_own_id() -> None:
    rig = Rig()
    raw = intent(recipients=[])
    result = await rig.deliverer.attempt(raw, 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "recipients" in result.detail
    [entry] = rig.dead_letters.entries
    assert (entry.id, entry.attempts, entry.intent) == ("intent-00001", 0, raw)
    assert rig.receipts.claims == []
    assert nothing_sent(rig)


@in_loop
async def test_an_invalid_intent_whose_id_is_unfit_for_a_key_gets_a_new_one() -> None:
    rig = Rig()
    result = await rig.deliverer.attempt(intent(id="a b", text=""), 3)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    [entry] = rig.dead_letters.entries
    assert entry.id.startswith("invalid-")
    assert entry.attempts == 2


@in_loop
async def test_an_intent_without_id_gets_one_that_its_retries_keep() -> None:
    rig = Rig()
    rig.sender.script(CatapushRejected(503, "Service Unavailable", "busy"))
    first = await rig.deliverer.attempt(intent(id=None, createdAt=None), 1)
    assert isinstance(first, Reschedule)
    given_id = first.intent["id"]
    assert isinstance(given_id, str)
    assert given_id
    assert first.intent["createdAt"] == NOW_MS
    [(payload, _)] = rig.sender.sent
    assert payload["messageRef"] == given_id
    assert rig.receipts.claims[0][0] == given_id

    # The copy on the queue carries the id: the next attempt sends and records under it.
    rig.clock[0] = NOW_MS + 60_000
    second = await rig.deliverer.attempt(first.intent, first.attempt)
    assert isinstance(second, Sent)
    assert rig.sender.sent[1][0]["messageRef"] == given_id
    [receipt] = rig.receipts.recorded
    assert (receipt.intent_id, receipt.attempts) == (given_id, 2)


@in_loop
async def test_an_expired_intent_is_dead_lettered_and_never_sent() -> None:
    rig = Rig()
    raw = intent(expireTime=10, createdAt=NOW_MS - 10_000)
    result = await rig.deliverer.attempt(raw, 2)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.title) == ("expired", "expired")
    assert "expireTime of 10 s" in result.detail
    [entry] = rig.dead_letters.entries
    assert (entry.id, entry.reason, entry.attempts, entry.intent) == (
        "intent-00001",
        "expired",
        1,
        raw,
    )
    assert rig.limiter.acquired == 0
    assert rig.receipts.claims == []
    assert nothing_sent(rig)


@given(expire_s=st.integers(1, 3_600), age_ms=st.integers(0, 7_200_000))
@FAST
def test_an_intent_is_sent_while_a_second_of_life_is_left_and_buried_after(
    expire_s: int, age_ms: int
) -> None:
    async def scenario() -> None:
        rig = Rig()
        result = await rig.deliverer.attempt(
            intent(expireTime=expire_s, createdAt=NOW_MS - age_ms), 1
        )
        left_s = expire_s - age_ms // 1000
        if left_s >= 1:
            assert isinstance(result, Sent)
            # The same reading of the clock decides expiry and the expireTime sent.
            assert rig.sender.sent[0][0]["expireTime"] == left_s
        else:
            assert isinstance(result, DeadLetter)
            assert result.reason == "expired"
            assert nothing_sent(rig)

    asyncio.run(scenario())


@in_loop
async def test_a_template_intent_without_templates_is_invalid() -> None:
    rig = Rig()
    raw = intent(text=None, template="welcome", data={"name": "Ada"})
    result = await rig.deliverer.attempt(raw, 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "DISPATCHER_TEMPLATES_DIR" in result.detail
    assert rig.dead_letters.entries[0].id == "intent-00001"
    assert rig.limiter.acquired == 0
    assert nothing_sent(rig)


class _Rendered:
    text = "bell \x07 rings"
    notification_text = None
    android_title = None
    fallback_text = None


class _BadTemplates:
    def render(self, name: str, locale: str | None, data: dict[str, Any]) -> _Rendered:
        return _Rendered()


@in_loop
async def test_a_rendered_template_that_breaks_a_catapush_limit_is_invalid() -> None:
    rig = Rig(templates=_BadTemplates())
    result = await rig.deliverer.attempt(intent(text=None, template="welcome"), 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "text" in result.detail
    assert "U+0007" in result.detail
    assert nothing_sent(rig)


@in_loop
async def test_no_app_id_anywhere_is_invalid() -> None:
    rig = Rig(default_mobile_app_id=None)
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "mobileAppId" in result.detail
    assert nothing_sent(rig)


@in_loop
async def test_a_route_that_refuses_the_app_makes_the_intent_invalid() -> None:
    asked: list[int] = []

    def route(mobile_app_id: int) -> tuple[Sender, Limiter]:
        asked.append(mobile_app_id)
        raise IntentRefused([f"mobileAppId: {mobile_app_id} belongs to no configured account"])

    rig = Rig(route=route)
    result = await rig.deliverer.attempt(intent(mobileAppId=77), 1)
    assert asked == [77]
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "77 belongs to no configured account" in result.detail
    assert rig.dead_letters.entries[0].attempts == 0
    assert rig.limiter.acquired == 0
    assert nothing_sent(rig)


@in_loop
async def test_a_route_sends_through_its_own_account_and_pauses_its_own_limit() -> None:
    other_sender = FakeSender(CatapushRejected(429, "Too Many Requests", "", retry_after_s=2.0))
    other_limiter = FakeLimiter()
    rig = Rig(route=lambda app: (other_sender, other_limiter))
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, Reschedule)
    assert len(other_sender.sent) == 1
    assert other_limiter.acquired == 1
    assert other_limiter.pauses == [2.0]
    assert rig.sender.sent == []
    assert rig.limiter.acquired == 0
    assert rig.limiter.pauses == []


# -- the rate limit and the claim ----------------------------------------------------------


@in_loop
async def test_no_slot_reschedules_the_same_attempt_after_the_wait() -> None:
    rig = Rig()
    rig.limiter.acquire_error = SlotUnavailable(1.5)
    result = await rig.deliverer.attempt(intent(), 2)
    assert result == Reschedule(intent(), 2, 1_500)
    assert rig.receipts.claims == []
    assert nothing_sent(rig)
    assert rig.dead_letters.entries == []


@in_loop
async def test_a_copy_that_went_out_already_is_skipped_without_a_send() -> None:
    rig = Rig()
    rig.receipts.state = ClaimState.ALREADY_SENT
    rig.receipts.receipt = Receipt("intent-00001", "cp-earlier", "2024-01-01T00:00:00.000Z", 1)
    result = await rig.deliverer.attempt(intent(), 2, claim_owner=OWNER)
    assert result == Skipped("cp-earlier")
    assert rig.receipts.claims == [("intent-00001", OWNER)]
    assert nothing_sent(rig)
    assert rig.receipts.released == []


@in_loop
async def test_a_copy_another_worker_is_sending_waits_without_spending_an_attempt() -> None:
    rig = Rig()
    rig.receipts.state = ClaimState.BUSY
    result = await rig.deliverer.attempt(intent(), 2)
    assert result == Reschedule(intent(), 2, BUSY_RETRY_DELAY_MS)
    assert nothing_sent(rig)
    assert rig.receipts.released == []


@in_loop
async def test_redis_failing_the_claim_propagates_before_anything_is_sent() -> None:
    rig = Rig()
    rig.receipts.claim_error = redis_down()
    with pytest.raises(RedisConnectionError):
        await rig.deliverer.attempt(intent(), 1, claim_owner=OWNER)
    assert nothing_sent(rig)
    assert rig.receipts.released == []
    assert rig.dead_letters.entries == []


@in_loop
async def test_redis_failing_the_rate_limit_propagates_before_the_claim() -> None:
    rig = Rig()
    rig.limiter.acquire_error = redis_down()
    with pytest.raises(RedisConnectionError):
        await rig.deliverer.attempt(intent(), 1)
    assert rig.receipts.claims == []
    assert nothing_sent(rig)


# -- Catapush's answers --------------------------------------------------------------------


@in_loop
async def test_an_accepted_send_records_a_receipt_with_the_attempt_number() -> None:
    rig = Rig()
    rig.sender.script(Accepted("cp-42"))
    result = await rig.deliverer.attempt(intent(), 3, claim_owner=OWNER)
    assert result == Sent("cp-42")
    [(payload, attachment)] = rig.sender.sent
    assert payload["mobileAppId"] == APP_ID
    assert payload["messageRef"] == "intent-00001"
    assert attachment is None
    [receipt] = rig.receipts.recorded
    assert (receipt.intent_id, receipt.message_id, receipt.attempts) == ("intent-00001", "cp-42", 3)
    assert receipt.sent_at.endswith("Z")
    # The claim is left to expire: the receipt answers every later claim.
    assert rig.receipts.released == []
    assert rig.dead_letters.entries == []
    assert rig.health.ready


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_a_refusal_is_dead_lettered_rejected_with_catapush_s_words(status: int) -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.sender.script(CatapushRejected(status, "Bad Thing", "recipients[0] unknown"))
        result = await rig.deliverer.attempt(intent(), 2, claim_owner=OWNER)
        assert result == DeadLetter("rejected", status, "Bad Thing", "recipients[0] unknown")
        [entry] = rig.dead_letters.entries
        assert (entry.id, entry.reason, entry.status_code, entry.attempts) == (
            "intent-00001",
            "rejected",
            status,
            2,
        )
        assert (entry.title, entry.detail, entry.intent) == (
            "Bad Thing",
            "recipients[0] unknown",
            intent(),
        )
        assert rig.receipts.released == [("intent-00001", OWNER)]
        assert rig.receipts.recorded == []
        assert rig.limiter.pauses == []

    asyncio.run(scenario())


TRANSIENT = [
    CatapushRejected(500, "Internal Server Error", ""),
    CatapushRejected(502, "Bad Gateway", ""),
    CatapushRejected(503, "Service Unavailable", ""),
    CatapushRejected(429, "Too Many Requests", ""),
    CatapushRejected(401, "Unauthorized", "token refused after a refresh"),
    CatapushTimeout("no answer within 10 s"),
    CatapushUnreachable("connection reset"),
    TokenUnavailable("token endpoint answered 503"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=repr)
@pytest.mark.parametrize("attempt", [1, 2])
def test_a_transient_failure_reschedules_the_next_attempt_within_the_policy(
    error: Exception, attempt: int
) -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.sender.script(error)
        result = await rig.deliverer.attempt(intent(), attempt, claim_owner=OWNER)
        assert isinstance(result, Reschedule)
        assert result.intent == intent()
        assert result.attempt == attempt + 1
        assert within_policy(result.delay_ms, attempt)
        assert rig.receipts.released == [("intent-00001", OWNER)]
        assert rig.dead_letters.entries == []
        assert rig.receipts.recorded == []
        assert rig.limiter.pauses == []  # no Retry-After, no pause

    asyncio.run(scenario())


@pytest.mark.parametrize("error", TRANSIENT, ids=repr)
def test_a_transient_failure_at_the_last_attempt_is_dead_lettered_exhausted(
    error: Exception,
) -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.sender.script(error)
        result = await rig.deliverer.attempt(intent(), POLICY.max_attempts)
        assert isinstance(result, DeadLetter)
        assert result.reason == "exhausted"
        [entry] = rig.dead_letters.entries
        assert (entry.id, entry.reason, entry.attempts) == (
            "intent-00001",
            "exhausted",
            POLICY.max_attempts,
        )
        expected = decide(error, attempt=1, max_attempts=POLICY.max_attempts)  # type: ignore[arg-type]
        assert isinstance(expected, RetryLater)
        assert (entry.status_code, entry.title) == (expected.status_code, expected.title)
        assert len(rig.receipts.released) == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_pauses_every_worker_and_floors_this_intent_s_delay(status: int) -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.sender.script(CatapushRejected(status, "Slow Down", "", retry_after_s=7.5))
        result = await rig.deliverer.attempt(intent(), 1)
        assert rig.limiter.pauses == [7.5]
        assert isinstance(result, Reschedule)
        assert result.attempt == 2
        assert result.delay_ms >= 7_500

    asyncio.run(scenario())


@in_loop
async def test_retry_after_on_a_refusal_pauses_nothing() -> None:
    rig = Rig()
    rig.sender.script(CatapushRejected(400, "Bad Request", "", retry_after_s=30.0))
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "rejected"
    assert rig.limiter.pauses == []


@in_loop
async def test_retry_after_at_the_last_attempt_still_pauses_the_others() -> None:
    rig = Rig()
    rig.sender.script(CatapushRejected(429, "Too Many Requests", "", retry_after_s=3.0))
    result = await rig.deliverer.attempt(intent(), POLICY.max_attempts)
    assert isinstance(result, DeadLetter)
    assert result.reason == "exhausted"
    assert rig.limiter.pauses == [3.0]


@in_loop
async def test_a_pause_redis_refuses_is_swallowed_and_the_retry_still_honours_it() -> None:
    rig = Rig()
    rig.limiter.pause_error = redis_down()
    rig.sender.script(CatapushRejected(429, "Too Many Requests", "", retry_after_s=2.0))
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, Reschedule)
    assert result.delay_ms >= 2_000
    assert rig.health.has(REDIS)


@given(status=st.integers(400, 599), attempt=st.integers(1, POLICY.max_attempts))
@FAST
def test_every_error_status_ends_in_exactly_the_outcome_decide_gives(
    status: int, attempt: int
) -> None:
    async def scenario() -> None:
        rig = Rig()
        error = CatapushRejected(status, "Some Title", "some detail")
        rig.sender.script(error)
        result = await rig.deliverer.attempt(intent(), attempt)
        expected = decide(error, attempt=attempt, max_attempts=POLICY.max_attempts)
        transient = status >= 500 or status in {401, 408, 425, 429}
        assert rig.receipts.recorded == []
        assert len(rig.receipts.released) == 1
        if isinstance(expected, DeadLetter):
            assert result == expected
            assert expected.reason == ("exhausted" if transient else "rejected")
            [entry] = rig.dead_letters.entries
            assert (entry.reason, entry.status_code, entry.attempts) == (
                expected.reason,
                status,
                attempt,
            )
        else:
            assert transient
            assert attempt < POLICY.max_attempts
            assert isinstance(result, Reschedule)
            assert result.attempt == attempt + 1
            assert within_policy(result.delay_ms, attempt)
            assert rig.dead_letters.entries == []

    asyncio.run(scenario())


# -- credentials ---------------------------------------------------------------------------


@in_loop
async def test_refused_credentials_raise_and_release_the_claim_spending_nothing() -> None:
    rig = Rig()
    rig.sender.script(TokenUnavailable("token endpoint answered 401", permanent=True))
    with pytest.raises(TokenUnavailable) as raised:
        await rig.deliverer.attempt(intent(), 2, claim_owner=OWNER)
    assert raised.value.permanent
    assert rig.receipts.released == [("intent-00001", OWNER)]
    assert rig.dead_letters.entries == []
    assert rig.receipts.recorded == []


# -- Redis failing after the send ----------------------------------------------------------


@in_loop
async def test_a_receipt_redis_refuses_twice_is_written_once_it_answers() -> None:
    rig = Rig()
    rig.receipts.record_failures = 2
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, Sent)
    assert rig.receipts.record_calls == 3
    assert len(rig.receipts.recorded) == 1
    assert len(rig.sender.sent) == 1  # never sent again for it
    # The outage was reported; closing it is the consumer's watcher's job.
    assert rig.health.has(REDIS)


@in_loop
async def test_a_dead_letter_redis_refuses_is_written_once_it_answers() -> None:
    rig = Rig()
    rig.dead_letters.failures = 3
    rig.sender.script(CatapushRejected(422, "Unprocessable", "bad"))
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, DeadLetter)
    assert result.reason == "rejected"
    assert rig.dead_letters.calls == 4
    assert len(rig.dead_letters.entries) == 1
    assert rig.health.has(REDIS)


@in_loop
async def test_a_release_redis_refuses_is_swallowed() -> None:
    rig = Rig()
    rig.receipts.release_error = redis_down()
    rig.sender.script(CatapushRejected(500, "Internal Server Error", ""))
    result = await rig.deliverer.attempt(intent(), 1)
    assert isinstance(result, Reschedule)
    assert result.attempt == 2
    assert rig.health.has(REDIS)


# -- the send cut short --------------------------------------------------------------------


@in_loop
async def test_a_cancelled_send_releases_the_claim_and_the_cancellation_propagates() -> None:
    rig = Rig()
    rig.sender.script(asyncio.Event())  # never set: the send hangs
    task = asyncio.create_task(rig.deliverer.attempt(intent(), 1, claim_owner=OWNER))
    async with asyncio.timeout(5):
        await rig.sender.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.receipts.released == [("intent-00001", OWNER)]
    assert rig.receipts.recorded == []
    assert rig.dead_letters.entries == []


@in_loop
async def test_a_cancelled_send_whose_release_fails_still_propagates_the_cancellation() -> None:
    rig = Rig()
    rig.receipts.release_error = redis_down()
    rig.sender.script(asyncio.Event())
    task = asyncio.create_task(rig.deliverer.attempt(intent(), 1))
    async with asyncio.timeout(5):
        await rig.sender.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.health.has(REDIS)


@in_loop
async def test_a_bug_in_the_send_releases_the_claim_and_propagates() -> None:
    rig = Rig()
    rig.sender.script(KeyError("message_id"))
    with pytest.raises(KeyError):
        await rig.deliverer.attempt(intent(), 1, claim_owner=OWNER)
    assert rig.receipts.released == [("intent-00001", OWNER)]
    assert rig.dead_letters.entries == []


# -- burying what the consumer hands over --------------------------------------------------


@in_loop
async def test_an_unreadable_message_is_buried_with_its_text() -> None:
    rig = Rig()
    result = await rig.deliverer.bury_unreadable("{not json", "not valid JSON")
    assert result == DeadLetter("invalid", None, "invalid message", "not valid JSON")
    [entry] = rig.dead_letters.entries
    assert entry.id.startswith("invalid-")
    assert (entry.attempts, entry.intent) == (0, "{not json")


@in_loop
async def test_an_intent_whose_attempts_all_crashed_is_buried_exhausted() -> None:
    rig = Rig()
    result = await rig.deliverer.bury_exhausted(intent(), 3, "RuntimeError('boom')")
    assert result == DeadLetter("exhausted", None, "unexpected error", "RuntimeError('boom')")
    [entry] = rig.dead_letters.entries
    assert (entry.id, entry.reason, entry.attempts, entry.intent) == (
        "intent-00001",
        "exhausted",
        3,
        intent(),
    )


@in_loop
async def test_an_exhausted_value_without_a_usable_id_gets_a_new_one() -> None:
    rig = Rig()
    await rig.deliverer.bury_exhausted("just text", 3, "RuntimeError('boom')")
    assert rig.dead_letters.entries[0].id.startswith("invalid-")


@in_loop
async def test_an_intent_without_created_at_expires_counting_from_its_first_attempt() -> None:
    rig = Rig()
    rig.sender.script(CatapushRejected(503, "Service Unavailable", ""))
    first = await rig.deliverer.attempt(intent(createdAt=None, expireTime=10), 1)
    assert isinstance(first, Reschedule)
    rig.clock[0] = NOW_MS + 11_000
    second = await rig.deliverer.attempt(first.intent, first.attempt)
    assert isinstance(second, DeadLetter)
    assert second.reason == "expired"
