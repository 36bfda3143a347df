"""The baseline: what a plain dramatiq app that posts to Catapush would be.

One actor, dramatiq's default middleware, one `httpx.Client` per worker thread, a permanent
token; no rate limiter, token cache, receipts or dead letters. Run with dramatiq's CLI:

    BASELINE_REDIS_URL=... BASELINE_NAMESPACE=baseline-x BASELINE_BASE_URL=... \
        python -m dramatiq benchmarks.baseline --processes 2
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker

from benchmarks.common import BASELINE_ACTOR, BASELINE_QUEUE
from dispatcher.sandbox import DEFAULT_PERMANENT_TOKEN

BASE_URL = os.environ["BASELINE_BASE_URL"].rstrip("/")
HEADERS = {"Authorization": f"Bearer {DEFAULT_PERMANENT_TOKEN}"}

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ["BASELINE_REDIS_URL"], namespace=os.environ["BASELINE_NAMESPACE"]
)
dramatiq.set_broker(broker)

# httpx.Client is not meant to be shared between threads; one per worker thread keeps its
# connections alive across messages.
_local = threading.local()


def _client() -> httpx.Client:
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        # The sandbox is on loopback: a proxy from the environment must not be used.
        client = _local.client = httpx.Client(trust_env=False)
    return client


@dramatiq.actor(queue_name=BASELINE_QUEUE, actor_name=BASELINE_ACTOR)
def post(payload: dict[str, Any]) -> None:
    response = _client().post(f"{BASE_URL}/messages", json=payload, headers=HEADERS)
    if response.status_code != 201:
        raise RuntimeError(f"Catapush answered {response.status_code}: {response.text[:200]}")
