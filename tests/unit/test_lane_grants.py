"""Lanes: which lane an intent takes, the queue names, and who gets the next rate slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import IntentRefused
from dispatcher.intents import parse_intent
from dispatcher.lanes import (
    BULK,
    LANES,
    TRANSACTIONAL,
    GrantShare,
    bulk_cap,
    bulk_floor,
    lane_of,
    lane_queue,
    next_lane,
    parse_lanes,
)
from dispatcher.ratelimit import SharedRateLimiter
from dispatcher.store.keys import Keys

BASE = {"recipients": ["user-1"], "text": "hello"}


@pytest.mark.parametrize(
    ("extra", "lane"),
    [
        ({}, TRANSACTIONAL),
        ({"isMarketing": True}, BULK),
        ({"isMarketing": False}, TRANSACTIONAL),
        ({"priority": "bulk"}, BULK),
        ({"priority": "transactional", "isMarketing": True}, TRANSACTIONAL),
        ({"priority": "bulk", "isMarketing": False}, BULK),
    ],
)
def test_the_lane_of_an_intent(extra: dict[str, Any], lane: str) -> None:
    assert parse_intent(BASE | extra).lane == lane
    assert lane_of(BASE | extra) == lane


def test_an_unknown_priority_is_refused_naming_the_field() -> None:
    with pytest.raises(IntentRefused) as caught:
        parse_intent(BASE | {"priority": "urgent"})
    assert caught.value.problems == ["priority: Input should be 'transactional' or 'bulk'"]


def test_queue_names() -> None:
    assert lane_queue("notifications", TRANSACTIONAL) == "notifications"
    assert lane_queue("notifications", BULK) == "notifications.bulk"


@pytest.mark.parametrize(
    ("given", "lanes"),
    [
        ([], LANES),
        (["bulk"], (BULK,)),
        (["transactional"], (TRANSACTIONAL,)),
        (["bulk,transactional"], LANES),
        (["bulk", "transactional", "bulk"], LANES),
    ],
)
def test_parse_lanes(given: list[str], lanes: tuple[str, ...]) -> None:
    assert parse_lanes(given) == lanes


def test_parse_lanes_names_an_unknown_one() -> None:
    with pytest.raises(ValueError, match="unknown lane 'urgent'"):
        parse_lanes(["urgent"])


def test_bulk_always_leaves_a_reserve_and_keeps_a_floor() -> None:
    assert bulk_cap(128) == 96
    assert bulk_cap(8) == 6
    assert bulk_cap(1) == 1
    assert bulk_floor(128) == 16
    assert bulk_floor(4) == 1


def test_nobody_waiting_gets_nothing_and_one_lane_gets_everything() -> None:
    args = {"granted": 10, "bulk_granted": 0, "share": 0.2}
    assert next_lane(False, False, **args) is None
    assert next_lane(True, False, **args) == TRANSACTIONAL
    assert next_lane(False, True, **args) == BULK


def test_transactional_goes_first_and_bulk_gets_one_in_five() -> None:
    share = GrantShare(0.2)
    lanes = [share.choose(True, True) for _ in range(10)]
    assert lanes[0] == TRANSACTIONAL
    assert lanes.count(BULK) == 2


@settings(max_examples=200, deadline=None)
@given(
    share=st.floats(min_value=0.01, max_value=1.0),
    waiting=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=2000),
)
def test_bulk_keeps_its_share_of_contended_slots(
    share: float, waiting: list[tuple[bool, bool]]
) -> None:
    """Over any sequence of rounds, bulk's part of the slots given while both lanes waited
    stays within one slot of its share, and every uncontended slot goes to the lane waiting."""
    grants = GrantShare(share)
    contended = bulk = 0
    for transactional_waiting, bulk_waiting in waiting:
        lane = grants.choose(transactional_waiting, bulk_waiting)
        if transactional_waiting and bulk_waiting:
            contended += 1
            bulk += lane == BULK
            assert share * contended - 1 <= bulk <= share * contended + 1
        elif transactional_waiting:
            assert lane == TRANSACTIONAL
        elif bulk_waiting:
            assert lane == BULK
        else:
            assert lane is None


@settings(max_examples=100, deadline=None)
@given(share=st.floats(min_value=0.01, max_value=1.0), rounds=st.integers(100, 5000))
def test_bulk_share_converges_when_both_always_wait(share: float, rounds: int) -> None:
    grants = GrantShare(share)
    bulk = sum(grants.choose(True, True) == BULK for _ in range(rounds))
    assert bulk >= share * rounds - 1
    assert bulk / rounds == pytest.approx(share, abs=1 / rounds + 1e-9)


@settings(max_examples=50, deadline=None)
@given(share=st.floats(min_value=0.01, max_value=1.0), rounds=st.integers(1, 2000))
def test_bulk_takes_every_slot_while_transactional_is_idle(share: float, rounds: int) -> None:
    grants = GrantShare(share)
    assert all(grants.choose(False, True) == BULK for _ in range(rounds))


class _GrantAll:
    """A stand-in for the Redis script: grants `per_round` slots each call."""

    def __init__(self, per_round: int) -> None:
        self.per_round = per_round

    async def __call__(self, *, keys: list[str], args: list[Any]) -> list[int]:
        return [min(self.per_round, int(args[2])), 1]


class _ScriptRedis:
    def __init__(self, script: Any) -> None:
        self.script = script

    def register_script(self, _source: str) -> Any:
        return self.script


def test_the_limiter_serves_waiting_transactional_sends_first_and_bulk_its_share() -> None:
    """Both lanes queue up before the first grant round; transactional sends are granted in
    order ahead of bulk, except for bulk's one in five."""

    async def scenario() -> list[str]:
        limiter = SharedRateLimiter(
            _ScriptRedis(_GrantAll(per_round=1)),
            Keys("t"),
            rate_per_s=1000.0,
            burst=1,
            bulk_share=0.2,
        )
        order: list[str] = []

        async def send(lane: Any, name: str) -> None:
            await limiter.acquire(lane)
            order.append(name)

        tasks = [asyncio.create_task(send(BULK, f"b{n}")) for n in range(20)]
        tasks += [asyncio.create_task(send(TRANSACTIONAL, f"t{n}")) for n in range(20)]
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    # Every send asked before the pump's first round, so all twenty slots were contended.
    assert order[0] == "t0"
    assert sum(name.startswith("b") for name in order[:20]) == 4
    assert [name for name in order if name.startswith("t")] == [f"t{n}" for n in range(20)]
