"""Soak: a million intents enqueued and drained on this machine, against the sandbox.

    .venv/bin/python benchmarks/soak.py                 # 1,000,000 intents (well over an hour)
    .venv/bin/python benchmarks/soak.py --n 100000      # a shorter soak

Starts a private `redis-server` and the sandbox (with `--latency-ms` of API latency), then
`dispatcher worker --processes P`, and enqueues N short intents in batches while the worker
drains them. It samples Redis' `used_memory` every second and each worker process's RSS
every `--sample-s` seconds, waits until Catapush accepted N sends and nothing is left on a
queue or in an ack set, stops the worker (SIGTERM) and counts the keys left, by kind.

Prints a Markdown report: wall time, enqueue and drain rates, Redis peak memory, the RSS of
each worker process over time (first, lowest, highest, last, and the series), sends
accepted (more than N would mean duplicates), and the keys left. Exit status 1 when the run
could not finish within `--deadline-s`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import DEFAULT_QUEUE
from dispatcher.store.localredis import LocalRedis

NAMESPACE = "soak"
DEFAULT_N = 1_000_000
ENQUEUE_BATCH = 1_000
REDIS_SAMPLE_S = 1.0
WORKER_START_DEADLINE_S = 60.0
# A drain that makes no progress for this long has stalled: the run fails.
STALL_S = 120.0
MIB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Samples:
    redis_used: list[int] = field(default_factory=list)
    # pid -> [(seconds since start, RSS bytes)]
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    accepted: list[tuple[float, int]] = field(default_factory=list)


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def intents(start: int, stop: int) -> list[dict[str, object]]:
    return [
        {"id": f"soak-{n:08d}", "recipients": [f"user{n % 50_000}"], "text": f"soak {n}"}
        for n in range(start, stop)
    ]


def worker_env(redis_url: str, api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DISPATCHER_REDIS_URL": redis_url,
        "DISPATCHER_NAMESPACE": NAMESPACE,
        "DISPATCHER_CATAPUSH_BASE_URL": api_url,
        "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "DISPATCHER_CATAPUSH_MOBILE_APP_ID": "1",
        # Above what this machine can send: the soak measures the worker, not the limit.
        "DISPATCHER_RATE_LIMIT": "100000",
        "DISPATCHER_RATE_BURST": "10000",
        "DISPATCHER_LOG_FORMAT": "json",
    }


def work_left(client: redis.Redis) -> int:
    """Ids waiting on the queue or the delay queue, or taken and not acknowledged."""
    left = int(client.llen(f"{NAMESPACE}:{DEFAULT_QUEUE}"))
    left += int(client.llen(f"{NAMESPACE}:{DEFAULT_QUEUE}.DQ"))
    for key in client.scan_iter(match=f"{NAMESPACE}:__acks__.*", count=1000):
        left += int(client.scard(key))
    return left


def keys_left(client: redis.Redis) -> Counter[str]:
    """Keys by kind: the namespace's first name segment after the prefix."""
    kinds: Counter[str] = Counter()
    for raw in client.scan_iter(count=5000):
        key = raw.decode()
        rest = key.removeprefix(f"{NAMESPACE}:")
        kind = rest.split(":", 1)[0] if ":" in rest else rest
        kinds[kind if key != rest else key] += 1
    return kinds


def sample(
    client: redis.Redis,
    worker_pid: int,
    every_s: float,
    samples: Samples,
    *,
    started: float,
    stop: threading.Event,
) -> None:
    """Redis memory every `REDIS_SAMPLE_S`, each worker process's RSS every `every_s`
    (seconds counted from `started`, as the rest of the report)."""
    next_rss = 0.0
    while not stop.wait(REDIS_SAMPLE_S):
        with contextlib.suppress(redis.RedisError):
            samples.redis_used.append(int(client.info("memory")["used_memory"]))
        now = time.monotonic() - started
        if now >= next_rss:
            next_rss = now + every_s
            for pid in children(worker_pid):
                rss = rss_bytes(pid)
                if rss is not None:
                    samples.rss.setdefault(pid, []).append((now, rss))


def run(args: argparse.Namespace) -> int:
    samples = Samples()
    with (
        LocalRedis() as server,
        SandboxProcess(log_bodies=False, latency_ms=args.latency_ms) as sandbox,
        tempfile.TemporaryDirectory(prefix="dispatcher-soak-") as folder,
    ):
        client = redis.Redis.from_url(server.url)
        log_path = Path(folder) / "worker.log"
        command = [sys.executable, "-m", "dispatcher", "worker", "--processes", str(args.processes)]
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [*command, "--threads", str(args.threads)],
                env=worker_env(server.url, sandbox.base_url),
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stop_sampling = threading.Event()
        started = time.monotonic()
        sampler = threading.Thread(
            target=sample,
            args=(redis.Redis.from_url(server.url), worker.pid, args.sample_s, samples),
            kwargs={"stop": stop_sampling, "started": started},
            daemon=True,
        )
        try:
            deadline = started + WORKER_START_DEADLINE_S
            while len(children(worker.pid)) < args.processes:
                if worker.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
            sampler.start()

            producer = Producer(server.url, NAMESPACE, DEFAULT_QUEUE)
            enqueue_started = time.monotonic()
            try:
                for start in range(0, args.n, ENQUEUE_BATCH):
                    producer.enqueue_many(intents(start, min(args.n, start + ENQUEUE_BATCH)))
            finally:
                producer.close()
            enqueue_s = time.monotonic() - enqueue_started
            print(f"enqueued {args.n:,} in {enqueue_s:.1f} s", file=sys.stderr, flush=True)

            last_progress, last_accepted, next_sample = time.monotonic(), -1, 0.0
            finished = False
            while time.monotonic() - started < args.deadline_s:
                now = time.monotonic() - started
                if now >= next_sample:
                    next_sample = now + args.sample_s
                    accepted = int(sandbox.admin.stats()["accepted"])
                    samples.accepted.append((now, accepted))
                    print(f"{now:7.0f} s: {accepted:,} accepted", file=sys.stderr, flush=True)
                    if accepted != last_accepted:
                        last_accepted, last_progress = accepted, time.monotonic()
                    if accepted >= args.n and work_left(client) == 0:
                        finished = True
                        break
                    if time.monotonic() - last_progress > STALL_S or worker.poll() is not None:
                        break
                time.sleep(0.5)
            drained_s = time.monotonic() - started
        finally:
            stop_sampling.set()
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=10)
        accepted = int(sandbox.admin.stats()["accepted"])
        peak = int(client.info("memory")["used_memory_peak"])
        left = keys_left(client)
        client.close()

    report(args, samples, enqueue_s, drained_s, accepted, peak, left, finished)
    return 0 if finished else 1


def report(
    args: argparse.Namespace,
    samples: Samples,
    enqueue_s: float,
    drained_s: float,
    accepted: int,
    peak: int,
    left: Counter[str],
    finished: bool,
) -> None:
    print(f"## Soak: {args.n:,} intents, {args.processes} processes x {args.threads} sends")
    print(f"(sandbox latency {args.latency_ms} ms; {'finished' if finished else 'NOT FINISHED'})")
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| wall time, worker start to all drained | {drained_s:,.0f} s |")
    print(f"| enqueue ({ENQUEUE_BATCH:,} a round trip) | {enqueue_s:,.0f} s |")
    print(f"| drain rate | {accepted / drained_s:,.0f} sends/s |")
    print(f"| sends Catapush accepted | {accepted:,} (intents: {args.n:,}) |")
    print(f"| Redis used_memory_peak | {peak / MIB:,.0f} MiB |")
    if samples.redis_used:
        print(f"| Redis used_memory, highest sampled | {max(samples.redis_used) / MIB:,.0f} MiB |")
    for pid, series in sorted(samples.rss.items()):
        values = [rss for _, rss in series]
        print(
            f"| worker process {pid} RSS first / lowest / highest / last | "
            f"{values[0] / MIB:.0f} / {min(values) / MIB:.0f} / {max(values) / MIB:.0f} / "
            f"{values[-1] / MIB:.0f} MiB ({len(values)} samples) |"
        )
    print(f"| keys left afterwards | {sum(left.values()):,}: " + ", ".join(
        f"{kind} {count:,}" for kind, count in left.most_common()) + " |")  # fmt: skip
    print()
    print("Worker RSS over time (MiB), every tenth sample:")
    print()
    pids = sorted(samples.rss)
    print("| s | " + " | ".join(f"process {pid}" for pid in pids) + " | accepted |")
    print("|---" * (len(pids) + 2) + "|")
    longest = max((len(series) for series in samples.rss.values()), default=0)
    step = max(1, longest // 10)
    for index in [*range(0, longest, step), longest - 1] if longest else []:
        at = samples.rss[pids[0]][min(index, len(samples.rss[pids[0]]) - 1)][0]
        cells = []
        for pid in pids:
            series = samples.rss[pid]
            cells.append(f"{series[min(index, len(series) - 1)][1] / MIB:.0f}")
        seen = [count for when, count in samples.accepted if when <= at]
        done = f"{seen[-1]:,}" if seen else "(enqueueing)"
        print(f"| {at:,.0f} | " + " | ".join(cells) + f" | {done} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="intents to enqueue and drain")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=128, help="sends in flight per process")
    parser.add_argument("--latency-ms", type=int, default=20, help="sandbox API latency")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--deadline-s", type=float, default=4 * 3600, help="give up after")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
