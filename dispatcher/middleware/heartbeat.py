"""Keeps a worker visibly alive, and sweeps dead workers' messages back, on a timer."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.common import dq_name
from redis.exceptions import RedisError

from dispatcher.logs import get_logger

DEFAULT_INTERVAL_S = 3.0

log = get_logger(__name__)


class Heartbeat(dramatiq.Middleware):
    """Beats from worker boot until after the drain, so a busy worker is never taken for dead.

    dramatiq only beats when a consumer talks to Redis; a worker whose threads all wait on
    slow sends stays silent and would have its messages handed to others.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: dramatiq.Worker) -> None:
        queues = sorted(
            {*broker.get_declared_queues(), *map(dq_name, broker.get_declared_queues())}
        )
        self._thread = threading.Thread(
            target=self._run, args=(broker, queues), name="dispatcher-heartbeat", daemon=True
        )
        self._thread.start()

    def after_worker_shutdown(self, broker: Any, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s * 2)

    def _run(self, broker: Any, queues: list[str]) -> None:
        while not self._stop.is_set():
            for queue in queues:
                try:
                    broker.heartbeat(queue)
                except RedisError as exc:
                    log.warning("heartbeat.failed", queue=queue, error=repr(exc))
            self._stop.wait(self._interval_s)
