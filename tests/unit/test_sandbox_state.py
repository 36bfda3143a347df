"""The sandbox's in-memory state, driven with a fake clock (no I/O, no sleeping)."""

from __future__ import annotations

import pytest

from dispatcher.sandbox import DEFAULT_PERMANENT_TOKEN
from dispatcher.sandbox.state import FaultRule, SandboxState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    return SandboxState(token_ttl_s=60, clock=clock, wall_clock=clock)


def test_temporary_token_expires_after_ttl(state: SandboxState, clock: FakeClock) -> None:
    """A token is valid until its TTL has passed, then reported as expired, not unknown."""
    token = state.issue_token()
    clock.now += 59.9
    assert state.check_token(token) == "ok"
    clock.now += 0.1
    assert state.check_token(token) == "expired"
    assert state.check_token("never-issued") == "unknown"


def test_ttl_none_never_expires_and_applies_to_issued_tokens(
    state: SandboxState, clock: FakeClock
) -> None:
    """Without a TTL tokens live forever; a new TTL applies to tokens already issued."""
    state.set_token_ttl(None)
    token = state.issue_token()
    clock.now += 10**6
    assert state.check_token(token) == "ok"
    state.set_token_ttl(5)
    assert state.check_token(token) == "expired"


def test_expire_and_revoke_spare_the_permanent_token(state: SandboxState) -> None:
    """Expiring or revoking ends every temporary token but never the permanent one."""
    first, second = state.issue_token(), state.issue_token()
    assert state.expire_tokens() == 2
    assert state.check_token(first) == "expired"
    assert state.check_token(second) == "expired"
    third = state.issue_token()
    assert state.check_token(third) == "ok"
    assert state.revoke_tokens() == 1
    assert state.check_token(third) == "unknown"
    assert state.check_token(DEFAULT_PERMANENT_TOKEN) == "ok"


def test_fault_rules_apply_in_order_and_run_out(state: SandboxState) -> None:
    """The first matching rule applies, a count is used up, and identifier rules are scoped."""
    scoped = FaultRule(status=403, identifier="mallory")
    twice = FaultRule(status=503, count=2)
    state.add_fault(scoped)
    state.add_fault(twice)
    assert state.take_fault(["mallory"]) is scoped
    assert state.take_fault(["alice"]) is twice
    assert state.take_fault(["alice", "mallory"]) is scoped
    assert state.take_fault(["alice"]) is twice
    assert state.take_fault(["alice"]) is None
    assert state.faults == [scoped]
    state.clear_faults()
    assert state.take_fault(["mallory"]) is None


def test_fault_count_must_be_positive(state: SandboxState) -> None:
    """A rule that could never apply is refused."""
    with pytest.raises(ValueError, match="count"):
        state.add_fault(FaultRule(status=500, count=0))


def test_request_log_filters_by_kind_and_seq(state: SandboxState) -> None:
    """Entries get increasing seq numbers; `since` and `kind` select among them."""
    first = state.log("oauth", {"status": 200})
    second = state.log("messages", {"status": 201})
    third = state.log("messages", {"status": 401})
    assert [first["seq"], second["seq"], third["seq"]] == [1, 2, 3]
    assert state.requests() == [first, second, third]
    assert state.requests("messages") == [second, third]
    assert state.requests(since=2) == [third]
    assert state.requests(since=3) == []
    state.clear_requests()
    assert state.requests() == []
    assert state.log("messages", {})["seq"] == 4


def test_request_log_forgets_the_oldest_past_its_limit(clock: FakeClock) -> None:
    """Past the limit the oldest entries go, and `since` still means the same seq numbers."""
    state = SandboxState(log_limit=10, clock=clock, wall_clock=clock)
    for _ in range(25):
        state.log("messages", {})
    seqs = [entry["seq"] for entry in state.requests()]
    assert seqs == list(range(seqs[0], 26))
    assert len(seqs) <= 10
    assert [entry["seq"] for entry in state.requests(since=23)] == [24, 25]


def test_counters_and_reset(state: SandboxState, clock: FakeClock) -> None:
    """Answers are counted by status, repeated messageRefs as duplicates; reset clears all."""
    state.count_oauth()
    state.count_message(201, "ref-1")
    state.count_message(201, "ref-1")
    state.count_message(201, None)
    state.count_message(503, "ref-2")
    state.count_message(None, "ref-3")
    state.latency_ms = 50
    clock.now += 2
    stats = state.stats()
    assert stats["oauth_requests"] == 1
    assert stats["messages_total"] == 5
    assert stats["messages_by_status"] == {"201": 3, "503": 1}
    assert stats["messages_dropped"] == 1
    assert stats["accepted"] == 3
    assert stats["duplicates"] == 1
    assert stats["uptime_s"] == 2

    token = state.issue_token()
    state.add_fault(FaultRule(status=500))
    state.log("messages", {})
    state.reset()
    stats = state.stats()
    assert stats["messages_total"] == 0
    assert stats["faults_active"] == 0
    assert stats["latency_ms"] == 0
    assert stats["token_ttl_s"] == 60
    assert state.requests() == []
    assert state.check_token(token) == "unknown"
