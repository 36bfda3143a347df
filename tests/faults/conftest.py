"""Plumbing for the fault tests: private Redis servers, dispatcher processes on them, and
checks of what a run left behind (queues, ack sets, log lines)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import redis

from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import ReceiptReader
from tests.conftest import MOBILE_APP_ID, DispatcherProcess

QUEUE = "notifications"
# Short enough that a stopping worker does not hold up teardown, long enough to drain.
SHUTDOWN_GRACE_S = "10"
ERROR_LEVELS = {"warning", "error", "critical", "exception"}


def poll_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    """Like `wait_until`, but returns the last value at the deadline instead of failing, so
    the test can say what was missing and still report its other figures."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- private Redis servers and the environment of processes using them ------------------------


@pytest.fixture
def private_redis() -> Iterator[Callable[..., LocalRedis]]:
    """`private_redis(appendonly=True, start=True)`: a redis-server of this test's own."""
    made: list[LocalRedis] = []

    def make(*, start: bool = True, **options: Any) -> LocalRedis:
        server = LocalRedis(**options)
        made.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def fault_env(sandbox: SandboxProcess, namespace: str) -> Callable[..., dict[str, str]]:
    """`fault_env(redis_url, defaults=False)`: the environment of a dispatcher process.

    With `defaults=True` only what reaches Redis and the sandbox is set; every tunable
    (rate limit, backoff, timeouts, budgets) keeps its default.
    """

    def env(redis_url: str, *, defaults: bool = False) -> dict[str, str]:
        base = {
            "DISPATCHER_REDIS_URL": redis_url,
            "DISPATCHER_NAMESPACE": namespace,
            "DISPATCHER_CATAPUSH_BASE_URL": sandbox.base_url,
            "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
            "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "DISPATCHER_CATAPUSH_MOBILE_APP_ID": str(MOBILE_APP_ID),
            "DISPATCHER_LOG_FORMAT": "json",
        }
        if defaults:
            return base
        return base | {
            "DISPATCHER_BACKOFF_MIN_MS": "50",
            "DISPATCHER_BACKOFF_MAX_MS": "500",
            "DISPATCHER_HTTP_TIMEOUT_S": "5",
            "DISPATCHER_RATE_LIMIT": "2000",
            "DISPATCHER_RATE_BURST": "200",
            "DISPATCHER_SHUTDOWN_GRACE_S": SHUTDOWN_GRACE_S,
        }

    return env


@pytest.fixture
def launch(
    private_redis: Callable[..., LocalRedis],
) -> Iterator[Callable[..., DispatcherProcess]]:
    """`launch(env, "worker", "--processes", "2")`: a `dispatcher` command, stopped (SIGTERM,
    then SIGKILL) at teardown, before the private Redis servers go."""
    started: list[DispatcherProcess] = []

    def run(env: dict[str, str], *args: str) -> DispatcherProcess:
        process = DispatcherProcess(env, *args)
        started.append(process)
        return process

    yield run
    for process in started:
        process.close()


class PipedProcess:
    """A `dispatcher` command whose stdout and stderr are pipes, each drained by a thread
    into bytes, as a container runtime collects them."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, chunks), daemon=True)
            for stream, chunks in (
                (self.process.stdout, self._chunks["stdout"]),
                (self.process.stderr, self._chunks["stderr"]),
            )
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: IO[bytes], chunks: list[bytes]) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            chunks.append(chunk)

    def output(self, name: str) -> bytes:
        return b"".join(self._chunks[name])

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.output("stderr").splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pump in self._pumps:
            pump.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return self.process.returncode


@pytest.fixture
def launch_piped(
    private_redis: Callable[..., LocalRedis],
) -> Iterator[Callable[..., PipedProcess]]:
    started: list[PipedProcess] = []

    def run(env: dict[str, str], *args: str) -> PipedProcess:
        process = PipedProcess(env, *args)
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


# -- intents -------------------------------------------------------------------------------


def enqueue_intents(
    redis_url: str, namespace: str, count: int, *, prefix: str = "intent", **fields: Any
) -> list[str]:
    """`count` intents `<prefix>-00000`... to `user<n>`, in one round trip."""
    producer = Producer(redis_url, namespace, QUEUE)
    try:
        return producer.enqueue_many(
            {"id": f"{prefix}-{n:05d}", "recipients": [f"user{n}"], "text": f"hi {n}", **fields}
            for n in range(count)
        )
    finally:
        producer.close()


def receipt_count(client: redis.Redis, namespace: str, ids: list[str]) -> int:
    reader = ReceiptReader(client, Keys(namespace))
    return sum(reader.get(intent_id) is not None for intent_id in ids)


# -- what a run leaves behind --------------------------------------------------------------


def leftovers(client: redis.Redis, namespace: str) -> dict[str, int]:
    """Every queue list and ack set of the namespace still holding something, with its size
    (Redis deletes an emptied list or set, so any such key that exists is not empty)."""
    found: dict[str, int] = {}
    for raw in client.scan_iter(match=f"{namespace}:*", count=1000):
        key = raw.decode()
        kind = client.type(key).decode()
        if kind == "list":
            found[key] = int(client.llen(key))
        elif kind == "set" and key.startswith(f"{namespace}:__acks__."):
            found[key] = int(client.scard(key))
    return found


def message_bodies_left(client: redis.Redis, namespace: str) -> int:
    """Message bodies still stored in the namespace's `.msgs` hashes."""
    return sum(
        int(client.hlen(raw))
        for raw in client.scan_iter(match=f"{namespace}:*.msgs", count=1000)
        if client.type(raw) == b"hash"
    )


def intent_errors_without_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warning and error lines about an intent (a `delivery.*` event, or one naming an
    attempt) that do not say which intent."""
    return [
        event
        for event in events
        if str(event.get("level", "")).lower() in ERROR_LEVELS
        and (str(event.get("event", "")).startswith("delivery.") or "attempt" in event)
        and not event.get("intent_id")
    ]


def started_worker_pids(events: list[dict[str, Any]]) -> list[int]:
    return [int(event["pid"]) for event in events if event.get("event") == "worker.started"]


def child_pids(parent: int) -> set[int]:
    """Live children of `parent` (from /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may hold spaces: the fields follow its end.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def peak_rss_mib(pid: int) -> float | None:
    """The high-water mark of a live process's resident memory, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def describe(events: list[dict[str, Any]], limit: int = 3) -> str:
    return "; ".join(orjson.dumps(event).decode()[:300] for event in events[:limit])
