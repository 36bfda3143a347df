"""Worker processes: each runs one asyncio event loop with many sends in flight.

Before consuming, every process runs the preflight (dispatcher.worker.preflight): it waits for
Redis and takes the shared token, and a setting Redis or Catapush refuses ends it with
`ConfigurationError` (exit status 2).

`run_workers` supervises the processes: it runs the preflight once before starting any, so a
bad setting is one line on stderr rather than one per process. SIGTERM or SIGINT is passed on
to every process, which stops fetching, lets in-flight sends finish within the grace period,
hands what it holds back to the queues and exits. A process that dies unexpectedly is
started again; one that exits with status 2 stops them all, since a restart cannot mend a
setting.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from dispatcher.errors import ConfigurationError
from dispatcher.lanes import LANES, Lane, lane_queue
from dispatcher.logs import configure_logging, get_logger
from dispatcher.messages import DELIVER_ACTOR
from dispatcher.settings import Settings, load_settings
from dispatcher.store.keys import Keys
from dispatcher.store.overview import read_overview
from dispatcher.store.queue import RedisQueue
from dispatcher.templates import load_templates
from dispatcher.worker.consumer import Consumer
from dispatcher.worker.preflight import preflight, preflight_blocking
from dispatcher.worker.probe import start_probe
from dispatcher.worker.resources import WorkerResources

RESTART_DELAY_S = 1.0
# A process that exits with this status met a setting it cannot work with (as the CLI's 2).
EXIT_CONFIGURATION = 2
# A message is redelivered once its worker's heartbeat is this old (dramatiq: 60 s).
HEARTBEAT_TIMEOUT_MS = 15_000
# The collector's first-generation threshold while consuming (CPython's default: 700).
GC_THRESHOLD = 10_000

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """Where a worker process serves /healthz and /metrics."""

    host: str
    port: int


async def serve_queue(
    settings: Settings,
    concurrency: int,
    probe: Probe | None = None,
    lanes: tuple[Lane, ...] = LANES,
) -> None:
    """Consume the queues of `lanes` until SIGTERM or SIGINT, then drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stopper(stop, signum))

    if not await preflight(settings, stop):
        return
    resources = WorkerResources(settings, concurrency=concurrency)
    redis, deliverer = resources.open()
    served = [(lane, lane_queue(settings.queue, lane)) for lane in lanes]
    queue = RedisQueue(
        redis,
        settings.namespace,
        served[0][1],
        worker_id=str(uuid.uuid4()),
        heartbeat_timeout_ms=HEARTBEAT_TIMEOUT_MS,
        queue_names=[name for _, name in served],
    )
    tokens = resources.tokens
    consumer = Consumer(
        queue,
        deliverer,
        health=resources.health,
        recorder=resources.recorder,
        concurrency=concurrency,
        max_in_flight_bytes=settings.max_in_flight_bytes,
        check_credentials=None if tokens is None else tokens.token,
        observer=resources.metrics,
        retry=resources.retry,
        grace_s=settings.shutdown_grace_s,
        lanes=served,
    )
    log.info(
        "worker.started",
        pid=os.getpid(),
        threads=concurrency,
        queue=settings.queue,
        queues=[name for _, name in served],
        actor=DELIVER_ACTOR,
    )
    runner = None
    watch: asyncio.Task[None] | None = None
    started = time.monotonic()
    try:
        if probe is not None:
            try:
                keys = Keys(settings.namespace)
                runner = await start_probe(
                    consumer,
                    probe.host,
                    probe.port,
                    metrics=resources.metrics,
                    overview=lambda: read_overview(redis, keys, settings.queue),
                )
            except OSError as exc:
                raise ConfigurationError(
                    f"--metrics-port: cannot listen on {probe.host}:{probe.port}: "
                    f"{exc.strerror or exc}"
                ) from exc
            log.info("probe.started", host=probe.host, port=probe.port)
        cancels = resources.cancels
        if cancels is not None:
            watch = asyncio.create_task(cancels.run(stop), name="cancels")
        _settle_heap()
        await consumer.run(stop)
    finally:
        if watch is not None:
            watch.cancel()
        if runner is not None:
            await runner.cleanup()
        await resources.aclose()
    log.info("worker.stopped", pid=os.getpid(), uptime_s=round(time.monotonic() - started, 1))


def _settle_heap() -> None:
    """Keep the collector off what start-up left behind.

    Sends make short-lived cycles (tasks, futures, exceptions); with the default thresholds
    every full collection walked the whole start-up heap (imports, pydantic models, the
    templates), measured at a fifth of the worker's CPU per notification. Frozen objects
    are skipped by every collection, and a higher threshold collects in larger batches.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def _stopper(stop: asyncio.Event, signum: int) -> Callable[[], None]:
    def on_signal() -> None:
        if not stop.is_set():
            log.info("worker.stopping", signal=signal.Signals(signum).name)
        stop.set()

    return on_signal


def run_worker_process(
    settings: Settings,
    threads: int,
    probe: Probe | None = None,
    lanes: tuple[Lane, ...] = LANES,
) -> int:
    """Serve the queues in this process until SIGTERM or SIGINT; returns the exit status."""
    configure_logging(settings.log_format)
    asyncio.run(serve_queue(settings, threads, probe, lanes))
    return 0


def _child_main(threads: int, probe: Probe | None, lanes: tuple[Lane, ...]) -> None:
    try:
        # Settings are read again in the child from the same environment the parent validated.
        code = run_worker_process(load_settings(), threads, probe, lanes)
    except ConfigurationError as exc:
        # Said as the CLI says it; the exit status tells the supervisor not to restart us.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_CONFIGURATION
    raise SystemExit(code)


def run_workers(
    settings: Settings,
    *,
    processes: int,
    threads: int,
    probe: Probe | None = None,
    lanes: tuple[Lane, ...] = LANES,
) -> int:
    """Run `processes` worker processes (in this process when it is one).

    With a probe, process number i (from 0) serves it on `probe.port + i`.
    """
    settings.require_credentials()
    # Fail before any process starts: a broken template folder is a configuration error.
    load_templates(settings.templates_dir)
    if processes == 1:
        return run_worker_process(settings, threads, probe, lanes)

    configure_logging(settings.log_format)
    if not preflight_blocking(settings):
        return 0
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []
    stopping = threading.Event()

    def start_child(index: int) -> multiprocessing.process.BaseProcess:
        own = None if probe is None else Probe(probe.host, probe.port + index)
        child = context.Process(target=_child_main, args=(threads, own, lanes), daemon=False)
        child.start()
        return child

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children.extend(start_child(index) for index in range(processes))
    log.info("workers.started", processes=processes, threads=threads)

    code = 0
    while not stopping.is_set():
        for index, child in enumerate(children):
            if child.is_alive() or stopping.is_set():
                continue
            if child.exitcode == EXIT_CONFIGURATION:
                log.error("worker.refused_configuration", pid=child.pid, exitcode=child.exitcode)
                code = EXIT_CONFIGURATION
                on_signal(signal.SIGTERM, None)
                break
            log.error("worker.died", pid=child.pid, exitcode=child.exitcode)
            time.sleep(RESTART_DELAY_S)
            children[index] = start_child(index)
        stopping.wait(0.5)

    deadline = time.monotonic() + settings.shutdown_grace_s + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
    log.info("workers.stopped")
    return code
