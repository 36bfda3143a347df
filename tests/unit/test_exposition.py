"""The worker's metrics through prometheus-client, and its outcome counting (pure)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.outcome import DeadLetter, Sent
from dispatcher.worker.consumer import ConsumerStats
from dispatcher.worker.delivery import Reschedule, Skipped
from dispatcher.worker.health import Health
from dispatcher.worker.metrics import WorkerMetrics
from dispatcher.worker.probe import worker_registry


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


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_workers_in_one_interpreter_keep_their_own_counts() -> None:
    """Each process's registry is its own: the counters, the observer's histograms and the
    consumer's state of one never show in the other's exposition."""
    views = []
    for sent in (3, 5):
        stats = ConsumerStats()
        for n in range(sent):
            stats.count(Sent(f"m{n}"), 1)
        consumer = SimpleNamespace(stats=stats, health=Health(), in_flight=sent)
        metrics = WorkerMetrics()
        metrics.accepted(1.5)
        metrics.token_refreshed(ok=True)
        metrics.rate_limit_waited(0.2)
        registry = worker_registry(cast(Any, consumer), metrics)
        views.append(_samples(generate_latest(registry).decode()))
    first, second = views
    key = "dispatcher_deliveries_total[('outcome', 'sent')]"
    assert (first[key], second[key]) == (3, 5)
    assert first["dispatcher_sends_in_flight[]"] == 3
    assert first["dispatcher_enqueue_to_accepted_seconds_count[]"] == 1
    assert first["dispatcher_token_refreshes_total[('result', 'ok')]"] == 1
    assert first["dispatcher_token_refreshes_total[('result', 'failed')]"] == 0
    assert first["dispatcher_ratelimit_wait_seconds_count[]"] == 1
    assert first["dispatcher_worker_ready[]"] == 1
    assert not any(name.endswith("_created[]") for name in first)
