"""`python benchmarks/run.py`: run every configuration, print the report, save it."""

from __future__ import annotations

import argparse
import json
import math
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import redis

from benchmarks.common import REPO_ROOT
from benchmarks.measure import Context, Plan, RunResult, run_ceiling, run_queue_system
from benchmarks.procs import sample_busy_share
from benchmarks.redisstats import server_version
from benchmarks.report import describe_machine, headline_ratios, render
from benchmarks.sandboxlog import RequestLog
from benchmarks.systems import BaselineSystem, DispatcherSystem, Environment, QueueSystem
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.localredis import LocalRedis

SYSTEMS = ("dispatcher", "baseline", "ceiling")
DEFAULT_N = 5000
QUICK_N = 200
WARMUP = 200
STEADY_RATE = 100.0
STEADY_S = 3.0
QUICK_STEADY_S = 1.0
# With latency L and C sends in flight, no system can accept more than C / L a second, so
# N = MIN_RUN_S * C / L makes a run last at least MIN_RUN_S (3 s asked, plus a margin).
MIN_RUN_S = 3.5
MIN_N_WITH_LATENCY = 1000
# The machine is sampled before starting; busier than this, other work will disturb the run.
PREFLIGHT_S = 2.0
PREFLIGHT_WARN_SHARE = 0.10


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _systems(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(chosen) - set(SYSTEMS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems: {', '.join(sorted(unknown))}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="End-to-end throughput, CPU, Redis commands and latency of the dispatcher, "
        "a plain dramatiq baseline and a bare aiohttp client, against the local sandbox.",
    )
    parser.add_argument("--quick", action="store_true", help="N=200, 0 ms, 1 process (for CI)")
    parser.add_argument(
        "--n",
        type=int,
        help=f"intents per run (default: {DEFAULT_N} at 0 ms; at higher latency enough for "
        f"{MIN_RUN_S} s at the system's concurrency, at least {MIN_N_WITH_LATENCY})",
    )
    parser.add_argument("--latencies", type=_int_list, default=[0, 50], help="ms, e.g. 0,50")
    parser.add_argument("--processes", type=_int_list, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--systems", type=_systems, default=list(SYSTEMS), help="e.g. baseline")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="results folder"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.latencies, args.processes, args.n = [0], [1], args.n or QUICK_N
    if args.n is not None and args.n < 1:
        parser.error("--n must be at least 1")
    return args


def choose_n(fixed: int | None, latency_ms: int) -> Callable[[int], int]:
    def n_for(concurrency: int) -> int:
        if fixed is not None:
            return fixed
        if latency_ms == 0:
            return DEFAULT_N
        needed = math.ceil(MIN_RUN_S * concurrency / (latency_ms / 1000) / 100) * 100
        return max(MIN_N_WITH_LATENCY, needed)

    return n_for


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(run: RunResult) -> str:
    if run.error:
        return f"FAILED: {run.error[:500]}"
    return f"{run.throughput_per_s:,.0f}/s, p50 {run.p50_ms:.1f} ms"


def run_all(
    args: argparse.Namespace, ctx: Context, logs_dir: Path, redis_url: str
) -> list[RunResult]:
    run_id = secrets.token_hex(3)
    env = Environment(redis_url=redis_url, api_base_url=ctx.api_base_url, logs_dir=logs_dir)
    steady_s = QUICK_STEADY_S if args.quick else STEADY_S
    runs: list[RunResult] = []
    for latency in args.latencies:
        ctx.admin.set_latency(latency)
        plan = Plan(latency, WARMUP, STEADY_RATE, steady_s, choose_n(args.n, latency))
        for processes in args.processes:
            for name in ("dispatcher", "baseline"):
                if name not in args.systems:
                    continue
                tag = f"{run_id}-{len(runs):02d}"
                system: QueueSystem = (
                    DispatcherSystem(env, tag, processes)
                    if name == "dispatcher"
                    else BaselineSystem(env, tag, processes)
                )
                _progress(f"… {name}, {latency} ms, {processes} process(es)")
                runs.append(run_queue_system(system, ctx, plan, tag))
                _progress(f"  {_describe(runs[-1])}")
        if "ceiling" in args.systems:
            _progress(f"… ceiling, {latency} ms")
            runs.append(run_ceiling(ctx, plan, f"{run_id}-{len(runs):02d}"))
            _progress(f"  {_describe(runs[-1])}")
    return runs


def _preflight() -> str:
    share = sample_busy_share(PREFLIGHT_S)
    if share is None:
        return "unknown"
    if share > PREFLIGHT_WARN_SHARE:
        _progress(
            f"warning: the machine is {share:.0%} busy before the benchmark starts; "
            "other work will disturb the figures"
        )
    return f"{share:.0%} of all cores, over {PREFLIGHT_S:.0f} s"


def _settings_lines(args: argparse.Namespace) -> list[str]:
    steady_s = QUICK_STEADY_S if args.quick else STEADY_S
    return [
        f"- command: `{' '.join(['python', 'benchmarks/run.py', *sys.argv[1:]])}`",
        f"- latencies {args.latencies} ms, processes {args.processes}, systems {args.systems}",
        f"- warm-up {WARMUP} intents per run; steady load {STEADY_RATE:.0f}/s for {steady_s:.0f} s",
        "- dispatcher: `dispatcher worker --processes 1` x P, default threads, rate limit "
        "100000/s, burst 10000, OAuth token shared through Redis",
        "- baseline: `python -m dramatiq benchmarks.baseline --processes P`, default threads",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with (
        LocalRedis() as local_redis,
        SandboxProcess(log_bodies=False) as sandbox,
        tempfile.TemporaryDirectory(prefix="dispatcher-bench-") as logs,
    ):
        client = redis.Redis.from_url(local_redis.url)
        ctx = Context(sandbox.admin, sandbox.base_url, RequestLog(sandbox.admin), client)
        machine = describe_machine(server_version(client))
        machine["busy before start"] = _preflight()
        runs = run_all(args, ctx, Path(logs), local_redis.url)
        client.close()
        ok = all(run.error is None for run in runs)
        if not ok:
            # The worker logs are the evidence of what went wrong; keep them.
            kept = args.out / f"{stamp}-logs"
            shutil.copytree(logs, kept)
            _progress(f"a run failed; worker logs kept in {kept}")
    duration = time.monotonic() - started
    markdown = render(
        title=f"catapush-dispatcher benchmark {stamp}",
        machine=machine,
        runs=runs,
        settings=[*_settings_lines(args), f"- duration: {duration:.0f} s"],
    )
    print(markdown)
    _save(args.out, stamp, markdown, machine, runs, duration, ok)
    return 0 if ok else 1


def _save(
    folder: Path,
    stamp: str,
    markdown: str,
    machine: dict[str, str],
    runs: list[RunResult],
    duration: float,
    ok: bool,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": stamp,
        "command": sys.argv,
        "ok": ok,
        "duration_s": duration,
        "machine": machine,
        "runs": [asdict(run) for run in runs],
        "ratios": {ratio.label: ratio.value for ratio in headline_ratios(runs)},
    }
    (folder / f"{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    (folder / f"{stamp}.md").write_text(markdown)
    _progress(f"results: {folder / stamp}.json and .md")
