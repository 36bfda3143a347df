"""The two queue-based systems under test: their worker processes and their producers."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dramatiq
import dramatiq.cli
from dramatiq.brokers.redis import RedisBroker

from benchmarks.common import (
    BASELINE_ACTOR,
    BASELINE_QUEUE,
    MOBILE_APP_ID,
    REPO_ROOT,
    BenchmarkError,
    catapush_message,
    intent,
)
from benchmarks.procs import ManagedProcess, tree_cpu_s
from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.settings import DEFAULT_QUEUE

READY_DEADLINE_S = 60.0
# The dispatcher drains in-flight sends for up to DISPATCHER_SHUTDOWN_GRACE_S (30 s by
# default); the queue is empty when we stop, so reaching this means a stuck shutdown.
STOP_DEADLINE_S = 45.0
PROBLEM_SAMPLES = 3


@dataclass(frozen=True)
class Environment:
    redis_url: str
    api_base_url: str
    logs_dir: Path


class Enqueuer(Protocol):
    def enqueue(self, ref: str, n: int) -> float:
        """Put one notification on the queue; returns time.time() read just before."""
        ...

    def close(self) -> None: ...


class QueueSystem(Protocol):
    name: str
    processes: int
    threads: int

    def start(self) -> None: ...

    def enqueuer(self, namespace: str | None = None) -> Enqueuer:
        """A producer for this system's queue, in its own namespace unless one is given."""
        ...

    def cpu_s(self) -> float: ...

    def check_alive(self) -> None: ...

    def stop(self) -> list[str]:
        """Stop every process; returns what looked wrong (exit status, log problems)."""
        ...


def _clean_environ() -> dict[str, str]:
    # Settings inherited from the shell (a permanent token, another rate limit) would change
    # what is measured.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISPATCHER_", "BASELINE_"))
    }


def _stop_all(processes: list[ManagedProcess]) -> list[str]:
    problems = []
    for process in processes:
        code = process.stop(STOP_DEADLINE_S)
        if code != 0:
            problems.append(f"{process.name} exited with status {code}")
    return problems


# -- the dispatcher ------------------------------------------------------------------------


class DispatcherEnqueuer:
    def __init__(self, redis_url: str, namespace: str) -> None:
        self._producer = Producer(redis_url, namespace, DEFAULT_QUEUE)

    def enqueue(self, ref: str, n: int) -> float:
        created = time.time()
        # The producer validates the intent and stamps `createdAt` itself, as in production.
        self._producer.enqueue(intent(ref, n))
        return created

    def close(self) -> None:
        self._producer.close()


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_worker_started(line: str) -> bool:
    record = _json_line(line)
    return record is not None and record.get("event") == "worker.started"


def dispatcher_log_problems(text: str) -> list[str]:
    """Warnings, errors and lines that are not JSON, counted by event, with a few samples."""
    counts: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for line in text.splitlines():
        record = _json_line(line)
        if record is None:
            key = "non-JSON line"
        elif record.get("level") in {"warning", "error", "critical"}:
            key = f"{record.get('level')} {record.get('event')}"
        else:
            continue
        counts[key] += 1
        samples.setdefault(key, line[:300])
    return [f"{count} x {key}, e.g. {samples[key]}" for key, count in counts.most_common()]


class DispatcherSystem:
    """P separate `dispatcher worker --processes 1` processes at default threads."""

    name = "dispatcher"

    def __init__(self, env: Environment, tag: str, processes: int) -> None:
        self.env = env
        self.tag = tag
        self.processes = processes
        self.threads = 0  # read from `worker.started` once they run
        self.namespace = f"bench-{tag}"
        self._workers: list[ManagedProcess] = []

    def _worker_environ(self) -> dict[str, str]:
        return {
            **_clean_environ(),
            "DISPATCHER_REDIS_URL": self.env.redis_url,
            "DISPATCHER_NAMESPACE": self.namespace,
            "DISPATCHER_CATAPUSH_BASE_URL": self.env.api_base_url,
            "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
            "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "DISPATCHER_CATAPUSH_MOBILE_APP_ID": str(MOBILE_APP_ID),
            # Every feature stays on; the limit is only set above the offered load.
            "DISPATCHER_RATE_LIMIT": "100000",
            "DISPATCHER_RATE_BURST": "10000",
            "DISPATCHER_LOG_FORMAT": "json",
        }

    def start(self) -> None:
        command = [sys.executable, "-m", "dispatcher", "worker", "--processes", "1"]
        environ = self._worker_environ()
        for index in range(self.processes):
            worker = ManagedProcess(
                f"dispatcher worker {index + 1}/{self.processes}",
                command,
                env=environ,
                # The workers read `.env` from their working directory; an empty folder
                # keeps a developer's `.env` out of the measurement.
                cwd=self.env.logs_dir,
                log_path=self.env.logs_dir / f"{self.tag}-worker{index}.log",
            )
            self._workers.append(worker)
            worker.start()
        for worker in self._workers:
            (line,) = worker.wait_for_lines(_is_worker_started, 1, READY_DEADLINE_S)
            record = _json_line(line) or {}
            self.threads = int(record.get("threads", 0))
        if self.threads <= 0:
            raise BenchmarkError("worker.started did not say how many threads the worker runs")

    def enqueuer(self, namespace: str | None = None) -> Enqueuer:
        return DispatcherEnqueuer(self.env.redis_url, namespace or self.namespace)

    def cpu_s(self) -> float:
        return tree_cpu_s(worker.pid for worker in self._workers)

    def check_alive(self) -> None:
        for worker in self._workers:
            worker.check_alive()

    def stop(self) -> list[str]:
        problems = _stop_all(self._workers)
        # Read after the stop, so that what went wrong while draining is seen too.
        for worker in self._workers:
            found = dispatcher_log_problems(worker.log_text())
            problems.extend(f"{worker.name}: {problem}" for problem in found)
        self._workers.clear()
        return problems


# -- the baseline --------------------------------------------------------------------------


class BaselineEnqueuer:
    """What `post.send(payload)` does, without importing the baseline module."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        # No middleware, like the dispatcher's Producer: a producer only writes messages.
        self._broker = RedisBroker(url=redis_url, namespace=namespace, middleware=[])  # type: ignore[no-untyped-call]

    def enqueue(self, ref: str, n: int) -> float:
        created = time.time()
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=BASELINE_QUEUE,
            actor_name=BASELINE_ACTOR,
            args=(catapush_message(ref, n),),
            kwargs={},
            options={},
        )
        self._broker.enqueue(message)
        return created

    def close(self) -> None:
        self._broker.close()


def dramatiq_default_threads() -> int:
    """The thread count dramatiq's CLI uses when given no `--threads`."""
    parser = dramatiq.cli.make_argument_parser()  # type: ignore[no-untyped-call]
    defaults = parser.parse_args(["benchmarks.baseline"])
    return int(defaults.threads)


BASELINE_READY_LINE = "Worker process is ready for action."
BASELINE_PROBLEM_MARKERS = ("[WARNING]", "[ERROR]", "[CRITICAL]", "Traceback")


def baseline_log_problems(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if any(m in line for m in BASELINE_PROBLEM_MARKERS)]
    if not lines:
        return []
    samples = "; ".join(line[:300] for line in lines[:PROBLEM_SAMPLES])
    return [f"{len(lines)} warning/error lines, e.g. {samples}"]


class BaselineSystem:
    """`python -m dramatiq benchmarks.baseline --processes P` at dramatiq's default threads."""

    name = "baseline"

    def __init__(self, env: Environment, tag: str, processes: int) -> None:
        self.env = env
        self.tag = tag
        self.processes = processes
        self.threads = dramatiq_default_threads()
        self.namespace = f"baseline-{tag}"
        self._cli: ManagedProcess | None = None

    def start(self) -> None:
        environ = {
            **_clean_environ(),
            "BASELINE_REDIS_URL": self.env.redis_url,
            "BASELINE_NAMESPACE": self.namespace,
            "BASELINE_BASE_URL": self.env.api_base_url,
        }
        command = [sys.executable, "-m", "dramatiq", "benchmarks.baseline"]
        command += ["--processes", str(self.processes)]
        self._cli = ManagedProcess(
            f"baseline dramatiq ({self.processes} processes)",
            command,
            env=environ,
            cwd=REPO_ROOT,  # dramatiq's CLI imports modules from its working directory
            log_path=self.env.logs_dir / f"{self.tag}-baseline.log",
        )
        self._cli.start()
        # Each forked worker process says so once its threads are running.
        self._cli.wait_for_lines(
            lambda line: BASELINE_READY_LINE in line, self.processes, READY_DEADLINE_S
        )

    def _running(self) -> ManagedProcess:
        if self._cli is None:
            raise BenchmarkError("the baseline is not started")
        return self._cli

    def enqueuer(self, namespace: str | None = None) -> Enqueuer:
        return BaselineEnqueuer(self.env.redis_url, namespace or self.namespace)

    def cpu_s(self) -> float:
        # The CLI's main process and the worker processes it forked.
        return tree_cpu_s([self._running().pid])

    def check_alive(self) -> None:
        self._running().check_alive()

    def stop(self) -> list[str]:
        if self._cli is None:
            return []
        problems = _stop_all([self._cli])
        problems += baseline_log_problems(self._cli.log_text())
        self._cli = None
        return problems
