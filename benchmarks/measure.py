"""One benchmark run: warm up, measure a saturated burst, then latency at a steady load."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks.common import REPO_ROOT, BenchmarkError, percentile
from benchmarks.procs import busy_core_s, busy_share, host_cpu_ticks, own_cpu_s
from benchmarks.redisstats import RedisSnapshot, calls_delta, snapshot
from benchmarks.sandboxlog import RequestLog, first_accepts, wait_accepted
from benchmarks.systems import Enqueuer, QueueSystem
from dispatcher.sandbox.admin import SandboxAdmin

CALIBRATION_INTENTS = 200
CEILING_CONNECTIONS = 200
# Waits are bounded by a stall detector (sandboxlog.STALL_S); this is the outer bound.
WAIT_BASE_S = 120.0
WAIT_MIN_RATE = 20.0
# What ends one run but not the suite: the run is reported as failed and the exit status
# says so; anything else is a bug in the benchmark and stops it.
RUN_FAILURES = (BenchmarkError, redis.RedisError, httpx.HTTPError, OSError)
# Processes outside the benchmark using more than this share of one core during a run
# (another test suite, say) compete with it for the CPU and bend its figures.
OTHER_LOAD_WARN_PCT = 20.0
# /proc/stat counts in ticks of 10 ms: over a shorter window the estimate is mostly rounding.
OTHER_LOAD_MIN_WINDOW_S = 1.0


@dataclass(frozen=True)
class Context:
    """What every run talks to: the sandbox, its request log and Redis."""

    admin: SandboxAdmin
    api_base_url: str
    log: RequestLog
    redis: redis.Redis


@dataclass(frozen=True)
class Plan:
    latency_ms: int
    warmup: int
    steady_rate: float
    steady_s: float
    # Intents in the saturated burst, given the system's concurrency (sends in flight).
    choose_n: Callable[[int], int]


@dataclass
class RunResult:
    system: str
    latency_ms: int
    processes: int
    threads: str = "?"
    n: int = 0
    throughput_per_s: float | None = None
    span_s: float | None = None
    enqueue_per_s: float | None = None
    worker_cpu_ms_per_notification: float | None = None
    worker_cpu_pct: float | None = None
    redis_commands_per_notification: float | None = None
    producer_redis_commands_per_intent: float | None = None
    worker_redis_commands_per_notification: float | None = None
    redis_commands_by_name_per_notification: dict[str, float] = field(default_factory=dict)
    redis_cpu_ms_per_notification: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    steady_rate_per_s: float | None = None
    steady_n: int | None = None
    steady_p50_ms: float | None = None
    steady_p99_ms: float | None = None
    sandbox_cpu_s: float | None = None
    sandbox_cpu_pct: float | None = None
    wall_s: float | None = None
    host_cpu_busy_pct: float | None = None
    other_cpu_pct: float | None = None
    anomalies: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    wall: float
    worker_cpu_s: float
    sandbox: dict[str, Any]
    redis: RedisSnapshot
    host: tuple[int, int]
    own_cpu_s: float


def take_snapshot(ctx: Context, worker_cpu_s: Callable[[], float]) -> Snapshot:
    return Snapshot(
        wall=time.time(),
        worker_cpu_s=worker_cpu_s(),
        sandbox=ctx.admin.stats(),
        redis=snapshot(ctx.redis),
        host=host_cpu_ticks(),
        own_cpu_s=own_cpu_s(),
    )


def wait_deadline_s(n: int) -> float:
    return WAIT_BASE_S + n / WAIT_MIN_RATE


def _latencies_ms(ctx: Context, created: dict[str, float]) -> tuple[list[float], dict[str, float]]:
    """Enqueue → 201 of every intent of a phase, from the sandbox's log; all must be there."""
    accepts = first_accepts(ctx.log.advance(), set(created))
    if len(accepts) < len(created):
        raise BenchmarkError(
            f"{len(created) - len(accepts)} of {len(created)} intents have no 201 in the "
            "sandbox's log (the counter reached its target through duplicates or other sends)"
        )
    return [(accepts[ref] - created[ref]) * 1000 for ref in created], accepts


def _enqueue_and_wait(
    system: QueueSystem, ctx: Context, enqueuer: Enqueuer, refs: list[str]
) -> dict[str, float]:
    target = int(ctx.admin.stats()["accepted"]) + len(refs)
    created = {ref: enqueuer.enqueue(ref, n) for n, ref in enumerate(refs)}
    wait_accepted(
        ctx.admin, target, deadline_s=wait_deadline_s(len(refs)), check=system.check_alive
    )
    return created


def producer_commands_per_intent(system: QueueSystem, ctx: Context, tag: str) -> float:
    """Redis commands one enqueue costs, counted on a namespace no worker reads."""
    namespace = f"calibrate-{tag}"
    enqueuer = system.enqueuer(namespace)
    try:
        before = snapshot(ctx.redis)
        for n in range(CALIBRATION_INTENTS):
            enqueuer.enqueue(f"{tag}-c{n}", n)
        after = snapshot(ctx.redis)
    finally:
        enqueuer.close()
    leftovers = list(ctx.redis.scan_iter(match=f"{namespace}:*"))
    if leftovers:
        ctx.redis.delete(*leftovers)
    return sum(calls_delta(before, after).values()) / CALIBRATION_INTENTS


def _window_figures(result: RunResult, before: Snapshot, after: Snapshot, n: int) -> None:
    wall = after.wall - before.wall
    worker_cpu = after.worker_cpu_s - before.worker_cpu_s
    sandbox_cpu = float(after.sandbox["cpu_s"]) - float(before.sandbox["cpu_s"])
    commands = calls_delta(before.redis, after.redis)
    result.wall_s = wall
    result.worker_cpu_ms_per_notification = worker_cpu / n * 1000
    result.worker_cpu_pct = worker_cpu / wall * 100
    result.sandbox_cpu_s = sandbox_cpu
    result.sandbox_cpu_pct = sandbox_cpu / wall * 100
    result.redis_commands_per_notification = sum(commands.values()) / n
    result.redis_commands_by_name_per_notification = {
        name: count / n for name, count in commands.items()
    }
    redis_cpu = after.redis.cpu_s - before.redis.cpu_s
    result.redis_cpu_ms_per_notification = redis_cpu / n * 1000
    known = worker_cpu + sandbox_cpu + redis_cpu + after.own_cpu_s - before.own_cpu_s
    _host_figures(result, before.host, after.host, known)


def _host_figures(
    result: RunResult, before: tuple[int, int], after: tuple[int, int], known_cpu_s: float
) -> None:
    """The machine's busy share, and how much of it was not the benchmark's own doing."""
    assert result.wall_s is not None
    share = busy_share(before, after)
    result.host_cpu_busy_pct = None if share is None else share * 100
    other = max(0.0, busy_core_s(before, after) - known_cpu_s)
    result.other_cpu_pct = other / result.wall_s * 100
    if result.wall_s >= OTHER_LOAD_MIN_WINDOW_S and result.other_cpu_pct > OTHER_LOAD_WARN_PCT:
        result.anomalies.append(
            f"processes outside the benchmark used {result.other_cpu_pct:.0f} % of a core "
            "during the measurement: its figures are disturbed"
        )


def _saturated(system: QueueSystem, ctx: Context, result: RunResult, tag: str) -> None:
    refs = [f"{tag}-s{n}" for n in range(result.n)]
    enqueuer = system.enqueuer()
    try:
        ctx.log.advance()  # forget the warm-up
        before = take_snapshot(ctx, system.cpu_s)
        created = {ref: enqueuer.enqueue(ref, n) for n, ref in enumerate(refs)}
        result.enqueue_per_s = result.n / (time.time() - created[refs[0]])
        target = int(before.sandbox["accepted"]) + result.n
        deadline = wait_deadline_s(result.n)
        wait_accepted(ctx.admin, target, deadline_s=deadline, check=system.check_alive)
        after = take_snapshot(ctx, system.cpu_s)
    finally:
        enqueuer.close()
    latencies, accepts = _latencies_ms(ctx, created)
    result.span_s = max(accepts.values()) - created[refs[0]]
    result.throughput_per_s = result.n / result.span_s
    result.p50_ms, result.p99_ms = percentile(latencies, 0.50), percentile(latencies, 0.99)
    _window_figures(result, before, after, result.n)


def _steady(system: QueueSystem, ctx: Context, plan: Plan, result: RunResult, tag: str) -> None:
    count = max(1, round(plan.steady_rate * plan.steady_s))
    refs = [f"{tag}-t{n}" for n in range(count)]
    enqueuer = system.enqueuer()
    try:
        ctx.log.advance()
        target = int(ctx.admin.stats()["accepted"]) + count
        created: dict[str, float] = {}
        start = time.monotonic()
        for n, ref in enumerate(refs):
            # Paced against the start, so a late enqueue does not shift every later one.
            time.sleep(max(0.0, start + n / plan.steady_rate - time.monotonic()))
            created[ref] = enqueuer.enqueue(ref, n)
        offered_s = time.monotonic() - start
        wait_accepted(
            ctx.admin, target, deadline_s=wait_deadline_s(count), check=system.check_alive
        )
    finally:
        enqueuer.close()
    if offered_s > plan.steady_s * 1.2 + 0.1:
        result.anomalies.append(f"steady load: offering {count} intents took {offered_s:.2f} s")
    latencies, _ = _latencies_ms(ctx, created)
    result.steady_rate_per_s, result.steady_n = plan.steady_rate, count
    result.steady_p50_ms = percentile(latencies, 0.50)
    result.steady_p99_ms = percentile(latencies, 0.99)


def sandbox_anomalies(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Answers other than 201, dropped connections and duplicate sends during a run."""
    found = []
    old_statuses: dict[str, int] = before["messages_by_status"]
    for status, count in after["messages_by_status"].items():
        extra = count - old_statuses.get(status, 0)
        if status != "201" and extra:
            found.append(f"sandbox answered {status} {extra} times")
    for key in ("messages_dropped", "duplicates"):
        extra = int(after[key]) - int(before[key])
        if extra:
            found.append(f"sandbox {key}: {extra}")
    tokens = int(after["oauth_requests"]) - int(before["oauth_requests"])
    if tokens > 1:
        # One token shared by all workers is the design; more is worth a look.
        found.append(f"sandbox was asked for {tokens} OAuth tokens in one run")
    return found


@contextmanager
def _phase(name: str) -> Iterator[None]:
    """Prefixes a failure with the phase it happened in."""
    try:
        yield
    except BenchmarkError as exc:
        raise BenchmarkError(f"{name}: {exc}") from exc


def _warm_up(system: QueueSystem, ctx: Context, plan: Plan, tag: str) -> None:
    # Fetches the token, opens connections and fills caches before anything is measured.
    enqueuer = system.enqueuer()
    try:
        _enqueue_and_wait(system, ctx, enqueuer, [f"{tag}-w{n}" for n in range(plan.warmup)])
    finally:
        enqueuer.close()


def run_queue_system(system: QueueSystem, ctx: Context, plan: Plan, tag: str) -> RunResult:
    result = RunResult(system.name, plan.latency_ms, system.processes)
    stats_before = ctx.admin.stats()
    try:
        result.producer_redis_commands_per_intent = producer_commands_per_intent(system, ctx, tag)
        with _phase("start"):
            system.start()
        result.threads = str(system.threads)
        result.n = plan.choose_n(system.processes * system.threads)
        with _phase("warm-up"):
            _warm_up(system, ctx, plan, tag)
        with _phase("saturated burst"):
            _saturated(system, ctx, result, tag)
        with _phase("steady load"):
            _steady(system, ctx, plan, result, tag)
        assert result.redis_commands_per_notification is not None
        result.worker_redis_commands_per_notification = (
            result.redis_commands_per_notification - result.producer_redis_commands_per_intent
        )
    except RUN_FAILURES as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.anomalies.extend(system.stop())
    result.anomalies.extend(sandbox_anomalies(stats_before, ctx.admin.stats()))
    return result


# -- the ceiling ---------------------------------------------------------------------------


def _ceiling_report(ctx: Context, plan: Plan, n: int, tag: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ceiling-") as folder:
        out = Path(folder) / "report.json"
        command = [sys.executable, "-m", "benchmarks.ceiling", "--base-url", ctx.api_base_url]
        command += ["--admin-url", ctx.admin.admin_url, "--n", str(n), "--tag", tag]
        command += ["--warmup", str(plan.warmup), "--connections", str(CEILING_CONNECTIONS)]
        command += ["--out", str(out)]
        try:
            done = subprocess.run(
                command,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=wait_deadline_s(n),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(
                f"the ceiling client did not finish within {exc.timeout} s"
            ) from None
        if done.returncode != 0:
            raise BenchmarkError(
                f"the ceiling client exited with {done.returncode}: {done.stderr[-2000:]}"
            )
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def run_ceiling(ctx: Context, plan: Plan, tag: str) -> RunResult:
    result = RunResult("ceiling", plan.latency_ms, 1, threads=f"{CEILING_CONNECTIONS} conns")
    stats_before = ctx.admin.stats()
    try:
        result.n = plan.choose_n(CEILING_CONNECTIONS)
        ctx.log.advance()
        report = _ceiling_report(ctx, plan, result.n, tag)
        created: dict[str, float] = report["sent"]
        if report["statuses"] != {"201": result.n}:
            raise BenchmarkError(f"the ceiling client got answers {report['statuses']}")
        latencies, accepts = _latencies_ms(ctx, created)
        result.span_s = max(accepts.values()) - min(created.values())
        result.throughput_per_s = result.n / result.span_s
        result.p50_ms, result.p99_ms = percentile(latencies, 0.50), percentile(latencies, 0.99)
        result.wall_s = float(report["wall_s"])
        result.worker_cpu_ms_per_notification = float(report["cpu_s"]) / result.n * 1000
        result.worker_cpu_pct = float(report["cpu_s"]) / result.wall_s * 100
        result.sandbox_cpu_s = float(report["sandbox_cpu_s"])
        result.sandbox_cpu_pct = result.sandbox_cpu_s / result.wall_s * 100
        (busy_before, total_before), (busy_after, total_after) = report["host_ticks"]
        known = float(report["cpu_s"]) + result.sandbox_cpu_s
        _host_figures(result, (busy_before, total_before), (busy_after, total_after), known)
    except RUN_FAILURES as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.anomalies.extend(sandbox_anomalies(stats_before, ctx.admin.stats()))
    return result
