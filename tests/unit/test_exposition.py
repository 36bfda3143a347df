"""The Prometheus text writer and the worker's outcome counting (pure)."""

from __future__ import annotations

from dispatcher.consumer import ConsumerStats
from dispatcher.delivery import Reschedule, Skipped
from dispatcher.exposition import family, label
from dispatcher.outcome import DeadLetter, Sent


def test_a_family_has_help_type_and_samples() -> None:
    """HELP and TYPE come first, then one line per sample, counters as plain integers."""
    lines = family("x_total", "counter", "Things.", [("", 1_000_000), (label("k", "v"), 2)])
    assert lines == [
        "# HELP x_total Things.",
        "# TYPE x_total counter",
        "x_total 1000000",
        'x_total{k="v"} 2',
    ]


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a label value cannot break the format."""
    assert label("k", 'a"b\\c\nd') == '{k="a\\"b\\\\c\\nd"}'


def test_gauges_keep_their_fraction() -> None:
    """A float sample is written as a float."""
    assert family("age_seconds", "gauge", "Age.", [("", 1.25)])[-1] == "age_seconds 1.25"


def test_each_attempt_result_is_counted_once_under_its_outcome() -> None:
    """Sent, skipped, retried, deferred and dead-lettered results land in their own counters."""
    stats = ConsumerStats()
    stats.count(Sent("m1"), 1)
    stats.count(Skipped("m2"), 1)
    stats.count(Reschedule({"id": "a"}, 3, 100), 2)  # a failed attempt: next is number 3
    stats.count(Reschedule({"id": "b"}, 2, 100), 2)  # waited for a slot: same attempt
    stats.count(DeadLetter("rejected", 403, "Forbidden", ""), 1)
    assert dict(stats.outcomes) == {
        "sent": 1,
        "skipped": 1,
        "retried": 1,
        "deferred": 1,
        "dead_lettered": 1,
    }
    assert dict(stats.dead_letters) == {"rejected": 1}
