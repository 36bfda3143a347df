"""The dramatiq Redis broker producers enqueue through, namespaced by `DISPATCHER_NAMESPACE`."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

DELIVER_ACTOR = "deliver"


def build_broker(redis_url: str, namespace: str) -> RedisBroker:
    """A broker that only writes messages: no middleware, no actors."""
    broker: RedisBroker = RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url, namespace=namespace, middleware=[]
    )
    return broker
