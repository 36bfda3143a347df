"""Run the sandbox as a subprocess, for tests, benchmarks and the demo."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from dispatcher.sandbox import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PERMANENT_TOKEN,
)
from dispatcher.sandbox.admin import SandboxAdmin

# The package's parent folder, so that the child imports this very copy of `dispatcher`
# even when the parent found it through sys.path rather than an installation.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

_STDERR_TAIL_CHARS = 4000


class SandboxStartError(RuntimeError):
    """The sandbox process died or did not report that it was listening in time."""


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Draining stdout for the whole life of the child keeps it from ever blocking on a full
    # pipe; None marks the end of the stream (the child exited).
    for line in stream:
        lines.put(line)
    lines.put(None)


class SandboxProcess:
    """`with SandboxProcess() as sandbox:` a sandbox on a free loopback port.

    `sandbox.base_url` is the API root to give a client (`http://127.0.0.1:N/1`) and
    `sandbox.admin` steers it.
    """

    def __init__(
        self,
        *,
        token_ttl_s: float | None = None,
        latency_ms: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        permanent_token: str = DEFAULT_PERMANENT_TOKEN,
        log_bodies: bool = True,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.token_ttl_s = token_ttl_s
        self.latency_ms = latency_ms
        self.client_id = client_id
        self.client_secret = client_secret
        self.permanent_token = permanent_token
        self.log_bodies = log_bodies
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._port: int | None = None
        self._admin: SandboxAdmin | None = None
        self.ready: dict[str, Any] = {}

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "dispatcher.sandbox", "--host", "127.0.0.1"]
        command += ["--port", "0", "--latency-ms", str(self.latency_ms)]
        command += ["--client-id", self.client_id, "--client-secret", self.client_secret]
        command += ["--permanent-token", self.permanent_token]
        if self.token_ttl_s is not None:
            command += ["--token-ttl", repr(float(self.token_ttl_s))]
        if not self.log_bodies:
            command.append("--no-log-bodies")
        return command

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("the sandbox is already started")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        # A file rather than a pipe: nobody reads stderr until something goes wrong, and a
        # full pipe would block the child. It stays open until stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert self._process.stdout is not None
        self._pump = threading.Thread(
            target=_pump_lines, args=(self._process.stdout, lines), daemon=True
        )
        self._pump.start()
        try:
            self.ready = self._await_ready(lines)
        except BaseException:
            self.stop()
            raise
        self._port = int(self.ready["port"])
        self._admin = SandboxAdmin(self.admin_url)
        return self

    def _await_ready(self, lines: queue.Queue[str | None]) -> dict[str, Any]:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxStartError(
                    f"the sandbox did not report readiness within {self.startup_timeout_s} s"
                    + self._stderr_tail()
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self._process.wait(timeout=self.stop_timeout_s) if self._process else None
                raise SandboxStartError(
                    f"the sandbox exited with status {code} before listening" + self._stderr_tail()
                )
            try:
                ready = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ready, dict) and ready.get("event") == "sandbox.started":
                return ready

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        if not text:
            return " (its stderr is empty)"
        return f"; its stderr ends with:\n{text[-_STDERR_TAIL_CHARS:]}"

    def stop(self) -> int | None:
        """Terminate the sandbox (SIGTERM, then SIGKILL after `stop_timeout_s`)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=self.stop_timeout_s)
            code = process.returncode
            if process.stdout is not None:
                # The pump sees the end of the stream once the child is gone.
                if self._pump is not None:
                    self._pump.join(timeout=self.stop_timeout_s)
                process.stdout.close()
        self._pump = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _running_port(self) -> int:
        if self._port is None or self._process is None:
            raise RuntimeError("the sandbox is not running")
        return self._port

    @property
    def port(self) -> int:
        return self._running_port()

    @property
    def pid(self) -> int:
        self._running_port()
        assert self._process is not None
        return self._process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._running_port()}/1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self._running_port()}/_sandbox"

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            raise RuntimeError("the sandbox is not running")
        return self._admin
