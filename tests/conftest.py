"""Fixtures shared by the suite: a private redis-server, the sandbox, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.localredis import LocalRedis

MOBILE_APP_ID = 4242

_FIGURES: list[tuple[str, str, Any]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """Record a measured figure; the terminal summary lists them after the run."""

    def record(name: str, value: Any) -> None:
        _FIGURES.append((request.node.name, name, value))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for test, name, value in _FIGURES:
            shown = f"{value:.3f}" if isinstance(value, float) else value
            terminalreporter.write_line(f"{test}: {name} = {shown}")


def wait_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[SandboxProcess]:
    with SandboxProcess() as process:
        yield process


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> Iterator[SandboxProcess]:
    """The shared sandbox, with faults, latency, tokens and its log reset for each test."""
    sandbox_process.admin.reset()
    yield sandbox_process
    sandbox_process.admin.reset()


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so tests share one Redis without seeing each other."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings_env(
    redis_server: LocalRedis, sandbox: SandboxProcess, namespace: str
) -> dict[str, str]:
    return {
        "DISPATCHER_REDIS_URL": redis_server.url,
        "DISPATCHER_NAMESPACE": namespace,
        "DISPATCHER_CATAPUSH_BASE_URL": sandbox.base_url,
        "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "DISPATCHER_CATAPUSH_MOBILE_APP_ID": str(MOBILE_APP_ID),
        "DISPATCHER_LOG_FORMAT": "json",
        "DISPATCHER_BACKOFF_MIN_MS": "50",
        "DISPATCHER_BACKOFF_MAX_MS": "500",
        "DISPATCHER_HTTP_TIMEOUT_S": "5",
        # Far above what any test sends, unless a test is about the limit.
        "DISPATCHER_RATE_LIMIT": "2000",
        "DISPATCHER_RATE_BURST": "200",
    }


@pytest.fixture
def settings(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env
    fields = {key.removeprefix("DISPATCHER_").lower(): value for key, value in settings_env.items()}
    return Settings(**fields)  # type: ignore[arg-type]


class DispatcherProcess:
    """A `dispatcher` command in a subprocess of its own group, its output kept in a file."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix=f"{args[0]}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines; anything else as `{"event": "raw", "text": ...}`."""
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                events.append({"event": "raw", "text": line})
        return events

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL for the whole group if it outlives `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as a node failure would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)


class WorkerProcess(DispatcherProcess):
    """`dispatcher worker` in a subprocess, its JSON log kept for assertions."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        processes: int = 1,
        threads: int = 8,
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            env, "worker", "--processes", str(processes), "--threads", str(threads), *extra
        )


@pytest.fixture
def start_worker(settings_env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(processes: int = 1, threads: int = 8, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess({**settings_env, **extra_env}, processes=processes, threads=threads)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
