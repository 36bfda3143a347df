"""Worker processes: each runs a dramatiq Worker with N threads over one event loop.

`run_workers` supervises the processes: SIGTERM or SIGINT is passed on to every process,
which stops fetching, lets in-flight sends finish within the grace period, puts its
prefetched messages back on the queue and exits. A process that dies unexpectedly is
started again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from types import FrameType

import dramatiq
from dramatiq.asyncio import get_event_loop_thread

from dispatcher.actors import WorkerResources, declare_deliver_actor
from dispatcher.broker import build_broker
from dispatcher.logs import configure_logging, get_logger
from dispatcher.middleware import Heartbeat
from dispatcher.settings import Settings, load_settings

DEFAULT_THREADS = 64
DEFAULT_PROCESSES = 1
RESTART_DELAY_S = 1.0

log = get_logger(__name__)


class _CloseResources(dramatiq.Middleware):
    """Closes the process's clients after the last send, before the event loop stops."""

    def __init__(self, resources: WorkerResources) -> None:
        self._resources = resources

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            try:
                loop_thread.run_coroutine(self._resources.aclose())
            except Exception as exc:  # closing is best effort once the work is done
                log.warning("worker.close_failed", error=repr(exc))


def run_worker_process(settings: Settings, threads: int) -> int:
    """Serve the queue in this process until SIGTERM or SIGINT; returns the exit status."""
    configure_logging(settings.log_format)
    resources = WorkerResources(settings)
    broker = build_broker(
        settings.redis_url,
        settings.namespace,
        extra_middleware=[Heartbeat(), _CloseResources(resources)],
    )
    declare_deliver_actor(broker, settings, resources)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    log.info("worker.started", pid=os.getpid(), threads=threads, queue=settings.queue)
    while not stop.wait(1.0):
        pass
    started = time.monotonic()
    worker.stop(timeout=int(settings.shutdown_grace_s * 1000))
    broker.close()
    log.info("worker.stopped", pid=os.getpid(), drain_s=round(time.monotonic() - started, 2))
    return 0


def _child_main(threads: int) -> None:
    # Settings are read again in the child from the same environment the parent validated.
    raise SystemExit(run_worker_process(load_settings(), threads))


def run_workers(settings: Settings, *, processes: int, threads: int) -> int:
    """Run `processes` worker processes (in this process when it is one)."""
    settings.require_credentials()
    if processes == 1:
        return run_worker_process(settings, threads)

    configure_logging(settings.log_format)
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []
    stopping = threading.Event()

    def start_child() -> multiprocessing.process.BaseProcess:
        child = context.Process(target=_child_main, args=(threads,), daemon=False)
        child.start()
        return child

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children.extend(start_child() for _ in range(processes))
    log.info("workers.started", processes=processes, threads=threads)

    while not stopping.is_set():
        for index, child in enumerate(children):
            if not child.is_alive() and not stopping.is_set():
                log.error("worker.died", pid=child.pid, exitcode=child.exitcode)
                time.sleep(RESTART_DELAY_S)
                children[index] = start_child()
        stopping.wait(0.5)

    deadline = time.monotonic() + settings.shutdown_grace_s + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
    log.info("workers.stopped")
    return 0
