"""A worker process's Prometheus metrics, in a registry of its own.

Each process serves its own `/metrics` (process i on `--metrics-port + i`), so every process
has its own registry instead of prometheus-client's global one: nothing is shared between
processes, and several workers in one interpreter (as in the tests) never collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.store.deadletters import REASONS
from dispatcher.store.overview import Overview
from dispatcher.worker.consumer import Consumer

OUTCOMES = ("sent", "skipped", "retried", "deferred", "dead_lettered", "crashed")
# From a fraction of a second (an idle fleet) to hours (a backlog, retries with backoff).
ACCEPTED_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
RATE_LIMIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """The instruments the worker's parts feed through `WorkerObserver`'s hooks."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` samples only double the lines; Prometheus does not need them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._accepted = Histogram(
            "dispatcher_enqueue_to_accepted_seconds",
            "Seconds from an intent's enqueueing to Catapush accepting it.",
            buckets=ACCEPTED_BUCKETS_S,
            registry=self.registry,
        )
        self._refreshes = Counter(
            "dispatcher_token_refreshes",
            "OAuth token fetches by this worker process, by result.",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "failed"):
            self._refreshes.labels(result)
        self._waits = Histogram(
            "dispatcher_ratelimit_wait_seconds",
            "Seconds sends of this process waited for a slot of the shared rate limit "
            "(only sends that had to wait).",
            buckets=RATE_LIMIT_BUCKETS_S,
            registry=self.registry,
        )

    def accepted(self, waited_s: float) -> None:
        self._accepted.observe(waited_s)

    def token_refreshed(self, *, ok: bool) -> None:
        self._refreshes.labels("ok" if ok else "failed").inc()

    def rate_limit_waited(self, seconds: float) -> None:
        self._waits.observe(seconds)


class ConsumerCollector(Collector):
    """The consumer's own counters (`ConsumerStats`) and state, read at each scrape."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def collect(self) -> Iterator[Metric]:
        consumer = self._consumer
        stats = consumer.stats
        yield _counter(
            "dispatcher_deliveries",
            "Delivery attempts of this worker process, by outcome.",
            "outcome",
            {outcome: stats.outcomes[outcome] for outcome in OUTCOMES},
        )
        yield _counter(
            "dispatcher_dead_lettered",
            "Intents this worker process dead-lettered, by reason.",
            "reason",
            {reason: stats.dead_letters[reason] for reason in REASONS},
        )
        ready = GaugeMetricFamily(
            "dispatcher_worker_ready",
            "1 when nothing keeps this worker process from working, else 0.",
            value=1 if consumer.health.ready else 0,
        )
        yield ready
        yield GaugeMetricFamily(
            "dispatcher_sends_in_flight",
            "Messages this worker process holds and is working on.",
            value=consumer.in_flight,
        )
        age = GaugeMetricFamily(
            "dispatcher_heartbeat_age_seconds",
            "Seconds since Redis last took this worker's heartbeat.",
        )
        last = stats.last_beat
        if last is not None:
            age.add_metric([], round(time.monotonic() - last, 3))
        yield age


def _counter(name: str, help_text: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class OverviewCollector(Collector):
    """The queue overview (`dispatcher.store.overview`), fleet-wide figures read from Redis shortly
    before the scrape; every process reports the same ones. Left out when Redis failed."""

    def __init__(self) -> None:
        self.overview: Overview | None = None

    def collect(self) -> Iterator[Metric]:
        overview = self.overview
        yield GaugeMetricFamily(
            "dispatcher_overview_up",
            "1 if the queue overview could be read from Redis, else 0 (its gauges are then "
            "left out).",
            value=0 if overview is None else 1,
        )
        families = {
            "depth": GaugeMetricFamily(
                "dispatcher_lane_depth", "Messages waiting on the lane's queue.", labels=["lane"]
            ),
            "age": GaugeMetricFamily(
                "dispatcher_lane_oldest_age_seconds",
                "Age of the message at the head of the lane's queue.",
                labels=["lane"],
            ),
            "scheduled": GaugeMetricFamily(
                "dispatcher_lane_scheduled",
                "Messages on the lane's delay queue (retries and deferred sends not yet due).",
                labels=["lane"],
            ),
            "retrying": GaugeMetricFamily(
                "dispatcher_lane_retrying",
                "Messages on the lane's delay queue past their first attempt.",
                labels=["lane"],
            ),
        }
        dead = GaugeMetricFamily(
            "dispatcher_dead_letters_by_reason",
            "Entries in the dead-letter store, by reason.",
            labels=["reason"],
        )
        if overview is not None:
            for figures in overview.lanes:
                families["depth"].add_metric([figures.lane], figures.depth)
                if figures.oldest_age_s is not None:
                    families["age"].add_metric([figures.lane], figures.oldest_age_s)
                families["scheduled"].add_metric([figures.lane], figures.scheduled)
                families["retrying"].add_metric([figures.lane], figures.retrying)
            for reason, count in overview.dead_letters.items():
                dead.add_metric([reason], count)
        yield from families.values()
        yield dead
