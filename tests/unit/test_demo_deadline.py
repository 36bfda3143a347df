"""The demo's wait follows from its count and rate, and a miss is explained."""

from __future__ import annotations

import pytest

from dispatcher.demo import OUTCOME_SLACK_S, _explain, outcome_deadline_s


def test_the_deadline_grows_with_the_count_and_shrinks_with_the_rate() -> None:
    assert outcome_deadline_s(2000, 200) > 2000 / 200 + OUTCOME_SLACK_S
    assert outcome_deadline_s(2000, 20) > 2000 / 20
    assert outcome_deadline_s(12, 200) < outcome_deadline_s(2000, 200)


def test_a_miss_names_the_rate_limit(capsys: pytest.CaptureFixture[str]) -> None:
    _explain(828, 2000, 65.0, 20.0, None, 60.0)

    out = capsys.readouterr().out
    assert "828 of 2000 intent(s) had no outcome after 65 s" in out
    assert "rate limit of 20/s" in out
    assert "need at least 100 s" in out
    assert "--rate" in out


def test_a_dead_worker_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    _explain(5, 12, 3.0, 200.0, 2, 48.0)

    assert "worker exited with status 2" in capsys.readouterr().out
