"""`serve`'s Prometheus metrics, in a registry of the application's own (not the global
one, so that several applications in one interpreter never collide)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from dispatcher.callbacks import STATUSES

_DEPTHS = (
    ("dispatcher_queue_depth", "queue", "Messages waiting on the queues of both lanes."),
    (
        "dispatcher_delayed_depth",
        "delayed",
        "Messages on the delay queues (retries not yet due) that no worker holds yet.",
    ),
    (
        "dispatcher_scheduled_depth",
        "scheduled",
        "Intents held on the schedules until their sendAt.",
    ),
    ("dispatcher_dead_letters", "dead_letters", "Entries in the dead-letter store."),
)


class _Depths(Collector):
    """The Redis gauges, as read just before the scrape; left out when Redis failed."""

    def __init__(self) -> None:
        self.depths: Mapping[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        depths = self.depths
        yield GaugeMetricFamily(
            "dispatcher_redis_up",
            "1 if Redis answered this scrape, else 0 (the depth gauges are then left out).",
            value=0 if depths is None else 1,
        )
        for name, key, help_text in _DEPTHS:
            family = GaugeMetricFamily(name, help_text)
            if depths is not None:
                family.add_metric([], depths[key])
            yield family


class ServeMetrics:
    def __init__(self) -> None:
        # `_created` samples only double the lines; Prometheus does not need them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.intake_accepted = Counter(
            "dispatcher_intake_accepted",
            "Intents accepted over HTTP and put on the queue.",
            registry=self.registry,
        )
        self.intake_refused = Counter(
            "dispatcher_intake_refused",
            "Intents refused over HTTP (a refused batch counts all its intents, "
            "an unreadable body counts one).",
            registry=self.registry,
        )
        self.callbacks = Counter(
            "dispatcher_callbacks",
            "Catapush status callbacks stored, by status.",
            ["status"],
            registry=self.registry,
        )
        # Every documented status is exposed from the start, so that rate() sees the first one.
        for status in STATUSES:
            self.callbacks.labels(status)
        self.callbacks_refused = Counter(
            "dispatcher_callbacks_refused",
            "Catapush status callbacks refused: malformed, or without the right secret.",
            registry=self.registry,
        )
        self.callbacks_duplicate = Counter(
            "dispatcher_callbacks_duplicate",
            "Catapush status callbacks received again and not stored a second time.",
            registry=self.registry,
        )
        self._depths = _Depths()
        self.registry.register(self._depths)

    def render(self, depths: Mapping[str, int] | None, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for, and its content type."""
        self._depths.depths = depths
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
