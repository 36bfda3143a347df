"""The Markdown report: the machine, one row per run, the ratios that matter, and details."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.measure import RunResult

TOP_COMMANDS = 8
PACKAGES = ("dramatiq", "redis", "httpx", "aiohttp", "orjson")


# -- the machine ---------------------------------------------------------------------------


def _first_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":" if ":" in line else "=")
            if name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return None


def _ram() -> str:
    kib = _first_value("/proc/meminfo", "MemTotal")
    return f"{int(kib.split()[0]) / 1024**2:.1f} GiB" if kib else "unknown"


def _cgroup_cpu_limit() -> str:
    # In a container the cores visible in /proc/cpuinfo may be more than the quota allows.
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return "unknown"
    return "none" if quota == "max" else f"{int(quota) / int(period):.2f} CPUs"


def describe_machine(redis_version: str) -> dict[str, str]:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    return {
        "CPU": _first_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": f"{os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable by this process",
        "cgroup CPU limit": _cgroup_cpu_limit(),
        "RAM": _ram(),
        "OS": _first_value("/etc/os-release", "PRETTY_NAME") or platform.system(),
        "kernel": platform.release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Redis": redis_version,
        "packages": versions,
    }


# -- ratios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    label: str
    value: float | None
    why_missing: str = ""

    def as_text(self) -> str:
        shown = f"{self.value:.2f}x" if self.value is not None else f"n/a ({self.why_missing})"
        return f"{self.label}: **{shown}**"


# (system, latency ms, processes or None for any)
Config = tuple[str, int, int | None]


def _find(runs: list[RunResult], config: Config) -> RunResult:
    system, latency, processes = config
    for run in runs:
        if (run.system, run.latency_ms) == (system, latency) and (
            processes is None or run.processes == processes
        ):
            return run
    raise LookupError(config)


def _ratio(label: str, runs: list[RunResult], top: Config, bottom: Config, figure: str) -> Ratio:
    try:
        upper, lower = _find(runs, top), _find(runs, bottom)
    except LookupError:
        return Ratio(label, None, "configuration not in this run")
    a, b = getattr(upper, figure), getattr(lower, figure)
    if a is None or b is None or b == 0:
        return Ratio(label, None, "a run failed")
    return Ratio(label, a / b)


def headline_ratios(runs: list[RunResult]) -> list[Ratio]:
    """The ratios the project tracks: speed-up where the network dominates, CPU cost at 0 ms."""
    throughput, cpu = "throughput_per_s", "worker_cpu_ms_per_notification"
    dispatcher, baseline = ("dispatcher", 50, 2), ("baseline", 50, 2)
    ratios = [
        _ratio(
            "50 ms, 2 processes: dispatcher ÷ baseline throughput",
            runs,
            dispatcher,
            baseline,
            throughput,
        ),
        _ratio(
            "50 ms, 2 processes: dispatcher ÷ ceiling throughput",
            runs,
            dispatcher,
            ("ceiling", 50, None),
            throughput,
        ),
    ]
    for processes in sorted({run.processes for run in runs if run.system == "dispatcher"}):
        label = f"0 ms, {processes} process(es): dispatcher ÷ baseline worker CPU per notification"
        top, bottom = ("dispatcher", 0, processes), ("baseline", 0, processes)
        ratios.append(_ratio(label, runs, top, bottom, cpu))
        # The bare client's CPU per request is what sending alone costs on this machine in
        # this run: the worker's overhead is held against it, not against a fixed figure.
        label = (
            f"0 ms, {processes} process(es): dispatcher worker CPU per notification ÷ "
            "bare client CPU per request"
        )
        ratios.append(_ratio(label, runs, top, ("ceiling", 0, None), cpu))
    return ratios


# -- tables --------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pair(first: float | None, second: float | None) -> str:
    return "—" if first is None or second is None else f"{first:,.1f} / {second:,.1f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(runs: list[RunResult]) -> list[str]:
    header = [
        "system", "latency ms", "processes", "threads", "N", "notifications/s",
        "worker CPU ms/notif", "Redis cmds/notif (worker's share)",
        "p50 / p99 ms saturated", "p50 / p99 ms steady", "sandbox CPU %",
    ]  # fmt: skip
    lines = [_row(header), _row(["---"] * len(header))]
    for run in runs:
        redis_cmds = (
            "n/a (no queue)"
            if run.system == "ceiling"
            else f"{_num(run.redis_commands_per_notification)} "
            f"({_num(run.worker_redis_commands_per_notification)})"
        )
        steady = (
            "n/a (no queue)"
            if run.system == "ceiling"
            else _pair(run.steady_p50_ms, run.steady_p99_ms)
        )
        throughput = "FAILED" if run.error else _num(run.throughput_per_s, 0)
        lines.append(
            _row([
                run.system, str(run.latency_ms), str(run.processes), run.threads, f"{run.n:,}",
                throughput, _num(run.worker_cpu_ms_per_notification, 3), redis_cmds,
                _pair(run.p50_ms, run.p99_ms), steady, _num(run.sandbox_cpu_pct, 0),
            ])
        )  # fmt: skip
    return lines


def details_table(runs: list[RunResult]) -> list[str]:
    header = [
        "system", "latency ms", "processes", "first enqueue → last 201 s", "enqueued/s",
        "worker CPU % of a core", "Redis cmds/intent by the producer", "Redis CPU ms/notif",
        "sandbox CPU s", "host CPU busy %", "other processes' CPU % of a core",
    ]  # fmt: skip
    lines = [_row(header), _row(["---"] * len(header))]
    for run in runs:
        lines.append(
            _row([
                run.system, str(run.latency_ms), str(run.processes), _num(run.span_s, 2),
                _num(run.enqueue_per_s, 0), _num(run.worker_cpu_pct, 0),
                _num(run.producer_redis_commands_per_intent, 2),
                _num(run.redis_cpu_ms_per_notification, 3), _num(run.sandbox_cpu_s, 2),
                _num(run.host_cpu_busy_pct, 0), _num(run.other_cpu_pct, 0),
            ])
        )  # fmt: skip
    return lines


def command_breakdown(runs: list[RunResult]) -> list[str]:
    lines = []
    for run in runs:
        commands = run.redis_commands_by_name_per_notification
        if not commands:
            continue
        top = ", ".join(
            f"`{name}` {count:.2f}" for name, count in list(commands.items())[:TOP_COMMANDS]
        )
        lines.append(f"- {run.system}, {run.latency_ms} ms, {run.processes} process(es): {top}")
    return lines


def notes(runs: list[RunResult]) -> list[str]:
    lines = []
    for run in runs:
        where = f"{run.system}, {run.latency_ms} ms, {run.processes} process(es)"
        if run.error:
            lines.append(f"- **{where} FAILED**: {run.error}")
        lines.extend(f"- {where}: {anomaly}" for anomaly in run.anomalies)
    return lines or ["- nothing unusual: no errors, no warnings in worker logs, only 201s"]


def render(
    *, title: str, machine: dict[str, str], runs: list[RunResult], settings: list[str]
) -> str:
    lines = [f"# {title}", "", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += ["", "## Settings", "", *settings, "", "## Results", "", *results_table(runs)]
    lines += ["", "## Ratios", "", *(f"- {ratio.as_text()}" for ratio in headline_ratios(runs))]
    lines += ["", "## Details", "", *details_table(runs)]
    lines += ["", "## Redis commands per notification, by command (top 8)", ""]
    lines += command_breakdown(runs) or ["- none measured"]
    lines += ["", "## Errors and anomalies", "", *notes(runs), ""]
    return "\n".join(lines)
