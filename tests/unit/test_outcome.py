"""What each Catapush answer means: retry later or dead letter (the contract's outcomes table)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import (
    CatapushError,
    CatapushRejected,
    CatapushTimeout,
    CatapushUnreachable,
    TokenUnavailable,
)
from dispatcher.outcome import DeadLetter, RetryLater, classify, decide, is_transient


def rejected(status: int, *, retry_after_s: float | None = None) -> CatapushRejected:
    return CatapushRejected(
        status, f"title {status}", f"detail {status}", retry_after_s=retry_after_s
    )


@pytest.mark.parametrize("status", [401, 408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    """401 (after the shared refresh), 408, 425, 429 and every 5xx are retried with details."""
    assert classify(rejected(status)) == RetryLater(status, f"title {status}", f"detail {status}")


@pytest.mark.parametrize("status", [400, 403, 404, 409, 410, 413, 422])
def test_other_4xx_are_rejected_with_status_title_detail(status: int) -> None:
    """400, 403, 404, 422 and other 4xx are dead letters with reason rejected."""
    assert classify(rejected(status)) == DeadLetter(
        "rejected", status, f"title {status}", f"detail {status}"
    )


def test_retry_after_is_carried_on_retry() -> None:
    """A server's Retry-After travels with the retry decision."""
    outcome = classify(rejected(429, retry_after_s=12.5))
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after_s == 12.5


def test_timeout_is_retried() -> None:
    """A timeout is retried with no status code."""
    assert classify(CatapushTimeout("read timed out")) == RetryLater(
        None, "timeout", "read timed out"
    )


@pytest.mark.parametrize("error", [CatapushUnreachable("refused"), CatapushError("refused")])
def test_connection_error_is_retried(error: CatapushError) -> None:
    """A connection error (or any other Catapush failure without an answer) is retried."""
    assert classify(error) == RetryLater(None, "connection error", "refused")


@pytest.mark.parametrize("permanent", [False, True])
def test_token_unavailable_is_retried(permanent: bool) -> None:
    """A missing OAuth token is retried, even when the credentials were refused."""
    assert classify(TokenUnavailable("no token", permanent=permanent)) == RetryLater(
        None, "token unavailable", "no token"
    )


def test_decide_retries_while_attempts_remain() -> None:
    """Before the last attempt, a transient failure is retried."""
    assert isinstance(decide(rejected(503), attempt=11, max_attempts=12), RetryLater)
    assert isinstance(decide(CatapushTimeout("t"), attempt=1, max_attempts=2), RetryLater)


@pytest.mark.parametrize(
    ("error", "status", "title", "detail"),
    [
        (rejected(503), 503, "title 503", "detail 503"),
        (rejected(429, retry_after_s=3), 429, "title 429", "detail 429"),
        (CatapushTimeout("slow"), None, "timeout", "slow"),
        (CatapushUnreachable("reset"), None, "connection error", "reset"),
        (TokenUnavailable("bad secret"), None, "token unavailable", "bad secret"),
    ],
)
@pytest.mark.parametrize(("attempt", "max_attempts"), [(12, 12), (13, 12), (1, 1)])
def test_exhausted_keeps_the_last_error(
    error: CatapushError,
    status: int | None,
    title: str,
    detail: str,
    attempt: int,
    max_attempts: int,
) -> None:
    """Once attempt >= max_attempts a transient failure is dead-lettered as exhausted with it."""
    assert decide(error, attempt=attempt, max_attempts=max_attempts) == DeadLetter(
        "exhausted", status, title, detail
    )


def test_rejected_stays_rejected_on_any_attempt() -> None:
    """A permanent rejection is reported as rejected, not exhausted, even on the last attempt."""
    for attempt in (1, 12, 50):
        outcome = decide(rejected(422), attempt=attempt, max_attempts=12)
        assert outcome == DeadLetter("rejected", 422, "title 422", "detail 422")


@settings(max_examples=200, deadline=None, database=None)
@given(
    status=st.integers(min_value=400, max_value=599),
    attempt=st.integers(min_value=1, max_value=30),
    max_attempts=st.integers(min_value=1, max_value=30),
)
def test_every_error_status_has_one_outcome(status: int, attempt: int, max_attempts: int) -> None:
    """For 400..599: 5xx and 401/408/425/429 retry (or exhaust), every other 4xx is rejected."""
    transient = status >= 500 or status in {401, 408, 425, 429}
    assert is_transient(status) is transient
    outcome = decide(rejected(status), attempt=attempt, max_attempts=max_attempts)
    if not transient:
        expected: RetryLater | DeadLetter = DeadLetter(
            "rejected", status, f"title {status}", f"detail {status}"
        )
    elif attempt >= max_attempts:
        expected = DeadLetter("exhausted", status, f"title {status}", f"detail {status}")
    else:
        expected = RetryLater(status, f"title {status}", f"detail {status}")
    assert outcome == expected
