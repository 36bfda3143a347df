"""In-memory stand-ins for what a `Deliverer` talks to: receipts, dead letters, the rate
limit and Catapush. Each keeps what it was asked, and answers as the test scripts it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from dispatcher.admission import Limits
from dispatcher.backoff import RetryPolicy
from dispatcher.intents import Attachment
from dispatcher.render import Templates
from dispatcher.store.deadletters import DeadLetterEntry
from dispatcher.store.receipts import Claim, ClaimState, Receipt
from dispatcher.worker.delivery import Deliverer, Route
from dispatcher.worker.durable import Recorder
from dispatcher.worker.health import Health

NOW_MS = 1_700_000_000_000
APP_ID = 4242
POLICY = RetryPolicy(max_attempts=3, min_ms=10, max_ms=100)


def redis_down() -> RedisConnectionError:
    return RedisConnectionError("Connection refused")


class FakeReceipts:
    """Claims are granted unless `state` says otherwise; `*_failures` calls fail first."""

    def __init__(self) -> None:
        self.state = ClaimState.CLAIMED
        self.receipt: Receipt | None = None
        self.claim_error: BaseException | None = None
        self.record_failures = 0
        self.release_error: BaseException | None = None
        self.claims: list[tuple[str, str | None]] = []
        self.parts_of: list[str | None] = []
        self.recorded: list[Receipt] = []
        self.record_calls = 0
        self.released: list[tuple[str, str]] = []

    async def claim(
        self, intent_id: str, owner: str | None = None, *, part_of: str | None = None
    ) -> Claim:
        self.claims.append((intent_id, owner))
        self.parts_of.append(part_of)
        if self.claim_error is not None:
            raise self.claim_error
        return Claim(self.state, owner or "generated-owner", self.receipt)

    async def record(self, receipt: Receipt) -> None:
        self.record_calls += 1
        if self.record_failures:
            self.record_failures -= 1
            raise redis_down()
        self.recorded.append(receipt)

    async def release(self, intent_id: str, owner: str) -> None:
        if self.release_error is not None:
            raise self.release_error
        self.released.append((intent_id, owner))


class FakeDeadLetters:
    def __init__(self) -> None:
        self.failures = 0
        self.calls = 0
        self.entries: list[DeadLetterEntry] = []

    async def add(self, entry: DeadLetterEntry) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise redis_down()
        self.entries.append(entry)


class FakeLimiter:
    def __init__(self) -> None:
        self.acquire_error: BaseException | None = None
        self.pause_error: BaseException | None = None
        self.acquired = 0
        self.pauses: list[float] = []

    async def acquire(self, lane: str = "transactional") -> None:
        if self.acquire_error is not None:
            raise self.acquire_error
        self.acquired += 1

    async def pause_all(self, seconds: float) -> None:
        if self.pause_error is not None:
            raise self.pause_error
        self.pauses.append(seconds)


@dataclass(frozen=True)
class Accepted:
    message_id: str
    created_at: str | None = None


class FakeSender:
    """Answers each send with the next scripted answer: an exception is raised, an
    `asyncio.Event` is waited on (forever, unless set), anything else is returned. With
    nothing scripted, Catapush accepts the message."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[Mapping[str, Any], Attachment | None]] = []
        self.started = asyncio.Event()

    def script(self, *answers: Any) -> None:
        self.answers.extend(answers)

    async def send(self, message: Mapping[str, Any], attachment: Attachment | None = None) -> Any:
        self.sent.append((message, attachment))
        self.started.set()
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            answer = None
        return answer if answer is not None else Accepted(f"cp-{len(self.sent)}")


class FakeCancels:
    """Ids in `ids` are cancelled; `marked` lists the marks written."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.marked: list[tuple[str, int]] = []

    def is_cancelled(self, intent_id: str, part_of: str | None = None) -> bool:
        return intent_id in self.ids or (part_of is not None and part_of in self.ids)

    async def mark(self, intent_id: str, when_ms: int) -> None:
        self.marked.append((intent_id, when_ms))


@dataclass
class Rig:
    """A real `Deliverer` and the fakes behind it."""

    sender: FakeSender = field(default_factory=FakeSender)
    receipts: FakeReceipts = field(default_factory=FakeReceipts)
    dead_letters: FakeDeadLetters = field(default_factory=FakeDeadLetters)
    limiter: FakeLimiter = field(default_factory=FakeLimiter)
    health: Health = field(default_factory=Health)
    clock: list[int] = field(default_factory=lambda: [NOW_MS])
    retry: RetryPolicy = POLICY
    default_mobile_app_id: int | None = APP_ID
    templates: Templates | None = None
    route: Route | None = None
    limits: Limits = field(default_factory=Limits)
    cancels: FakeCancels | None = None
    deliverer: Deliverer = field(init=False)

    def __post_init__(self) -> None:
        self.recorder = Recorder(self.health, pause_min_s=0.001, pause_max_s=0.01)
        clock: Callable[[], int] = lambda: self.clock[0]  # noqa: E731
        self.deliverer = Deliverer(
            sender=self.sender,
            receipts=self.receipts,  # type: ignore[arg-type]
            dead_letters=self.dead_letters,  # type: ignore[arg-type]
            limiter=self.limiter,
            recorder=self.recorder,
            retry=self.retry,
            default_mobile_app_id=self.default_mobile_app_id,
            templates=self.templates,
            clock_ms=clock,
            route=self.route,
            limits=self.limits,
            cancels=self.cancels,
        )


def intent(**fields: Any) -> dict[str, Any]:
    """An inline intent as a producer enqueues it; `fields` override or add (None drops)."""
    base: dict[str, Any] = {
        "id": "intent-00001",
        "recipients": ["user-1"],
        "text": "hello",
        "createdAt": NOW_MS,
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}
