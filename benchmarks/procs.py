"""Child processes of the benchmark: start, watch their log, stop, and read their CPU time."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmarks.common import BenchmarkError

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
POLL_S = 0.05
LOG_TAIL_CHARS = 3000


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float:
    """utime + stime of one live process (not of its children), in seconds."""
    fields = _stat_fields(pid)
    # After the name, fields start at `state` (field 3); utime and stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return parents


def process_tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their descendants, found by scanning /proc for parent ids.

    dramatiq's CLI forks its worker processes, so their CPU is not in the root's own stat
    (and reaches its `cutime` only once they exit and are waited for).
    """
    parents = _parents()
    found = [pid for pid in roots if pid in parents]
    index = 0
    while index < len(found):
        found.extend(child for child, parent in parents.items() if parent == found[index])
        index += 1
    return found


def tree_cpu_s(roots: Iterable[int]) -> float:
    total = 0.0
    for pid in process_tree(roots):
        try:
            total += process_cpu_s(pid)
        except (OSError, ValueError, IndexError):
            continue  # exited between the scan and the read
    return total


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_core_s(before: tuple[int, int], after: tuple[int, int]) -> float:
    """CPU seconds the whole machine spent busy between two `host_cpu_ticks()` readings."""
    return (after[0] - before[0]) / CLOCK_TICKS_PER_S


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share (0..1) of all cores that was busy between two readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else None


def sample_busy_share(seconds: float) -> float | None:
    """How busy the machine is right now, measured over `seconds`."""
    before = host_cpu_ticks()
    time.sleep(seconds)  # the measurement window itself, not a wait for something
    return busy_share(before, host_cpu_ticks())


def own_cpu_s() -> float:
    """CPU time of this process (the producer, the polling), all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ManagedProcess:
    """A child in its own session, its stdout and stderr in one log file."""

    def __init__(
        self, name: str, command: list[str], *, env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchmarkError(f"{self.name} is not started")
        return self._process.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            # A session of its own lets a stop that times out kill the whole process group
            # (dramatiq's forked workers included) without touching anything else.
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self) -> str:
        return self.log_text()[-LOG_TAIL_CHARS:]

    def check_alive(self) -> None:
        if self._process is None:
            raise BenchmarkError(f"{self.name} is not started")
        code = self._process.poll()
        if code is not None:
            raise BenchmarkError(f"{self.name} exited with status {code}; log ends:\n{self.tail()}")

    def wait_for_lines(
        self, matches: Callable[[str], bool], count: int, deadline_s: float
    ) -> list[str]:
        """The first `count` log lines that match, polled until `deadline_s` seconds pass."""
        deadline = time.monotonic() + deadline_s
        while True:
            found = [line for line in self.log_text().splitlines() if matches(line)]
            if len(found) >= count:
                return found[:count]
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{self.name} did not become ready within {deadline_s:.0f} s "
                    f"({len(found)}/{count} ready lines); log ends:\n{self.tail()}"
                )
            time.sleep(POLL_S)

    def stop(self, deadline_s: float) -> int | None:
        """SIGTERM, then SIGKILL to the process group after `deadline_s`; the exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code: int | None = process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            code = None
        # Also ends forked children the leader may have left behind; a group with no
        # member left is simply not found.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return code if code is not None else process.wait(timeout=deadline_s)
