"""What a Catapush answer means for an intent: sent, retry later, or dead letter. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dispatcher.errors import CatapushError, CatapushRejected, CatapushTimeout, TokenUnavailable

DeadReason = Literal["rejected", "invalid", "exhausted", "expired"]

# 401 reaches here only after the shared token was already refreshed once; 408 and 425 say
# "try again"; 429 and 5xx are the server's own trouble.
TRANSIENT_4XX = frozenset({401, 408, 425, 429})


@dataclass(frozen=True, slots=True)
class Sent:
    message_id: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    status_code: int | None
    title: str
    detail: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: DeadReason
    status_code: int | None
    title: str
    detail: str


Outcome = Sent | RetryLater | DeadLetter


def is_transient(status_code: int) -> bool:
    return status_code >= 500 or status_code in TRANSIENT_4XX


def classify(error: CatapushError) -> RetryLater | DeadLetter:
    """The outcome of one failed attempt, before the attempt budget is considered."""
    if isinstance(error, CatapushRejected):
        if is_transient(error.status_code):
            return RetryLater(error.status_code, error.title, error.detail, error.retry_after_s)
        return DeadLetter("rejected", error.status_code, error.title, error.detail)
    if isinstance(error, CatapushTimeout):
        return RetryLater(None, "timeout", str(error))
    if isinstance(error, TokenUnavailable):
        # Even refused credentials are retried: ops can fix a secret within the backoff
        # window, and nothing is lost if they take longer (the intent is dead-lettered).
        return RetryLater(None, "token unavailable", str(error))
    return RetryLater(None, "connection error", str(error))


def decide(error: CatapushError, *, attempt: int, max_attempts: int) -> RetryLater | DeadLetter:
    """`classify`, then dead-letter a transient failure once the attempts are used up."""
    outcome = classify(error)
    if isinstance(outcome, RetryLater) and attempt >= max_attempts:
        return DeadLetter("exhausted", outcome.status_code, outcome.title, outcome.detail)
    return outcome
