"""Lanes: does a login code still go out at once while a campaign drains?

    .venv/bin/python benchmarks/lanes.py                     # backlog 100,000, 60 s
    .venv/bin/python benchmarks/lanes.py --backlog 20000     # a smaller backlog

Starts a private `redis-server` and the sandbox, enqueues a backlog of bulk intents, starts
one `dispatcher worker` at a rate limit of `--rate` per second (`--burst`, default 1, so no
1-second window may hold more than the rate), waits for the
backlog to flow, then enqueues transactional intents at `--tx-rate` per second for
`--seconds` seconds. Then the same with lanes off: the backlog enqueued as transactional
too, so everything shares one queue, as before lanes.

Reports, from the sandbox's request log, for each run: the transactional intents' latency
from enqueue to Catapush accepting them (p50, p99, max; how many were accepted at all), the
bulk sends per second meanwhile and their part of all sends, and the busiest 1-second window
at the API (any window, not aligned to whole seconds). Exit status 1 when a run could not
be completed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import BenchmarkError, accepted_entries, percentile
from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.admin import SandboxAdmin
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import DEFAULT_QUEUE
from dispatcher.store.localredis import LocalRedis

ENQUEUE_BATCH = 2_000
WORKER_START_DEADLINE_S = 60.0
# Transactional intents still not accepted this long after the last one was enqueued are
# reported as not accepted.
SETTLE_S = 10.0
# The backlog must be flowing before the transactional intents start.
WARM_UP_SENDS = 100


@dataclass
class RunFigures:
    name: str
    tx_enqueued: int
    tx_accepted: int
    tx_latencies_s: list[float]
    bulk_sent: int
    window_s: float
    busiest_window: int
    total_sent: int

    def lines(self) -> list[str]:
        lat = self.tx_latencies_s
        shown = (
            f"p50 {percentile(lat, 0.5):.3f} s, p99 {percentile(lat, 0.99):.3f} s, "
            f"max {max(lat):.3f} s"
            if lat
            else "none accepted"
        )
        bulk_rate = self.bulk_sent / self.window_s
        share = self.bulk_sent / max(1, self.total_sent)
        return [
            f"### {self.name}",
            f"- transactional accepted: {self.tx_accepted} of {self.tx_enqueued}",
            f"- transactional enqueue-to-accepted: {shown}",
            f"- bulk sent meanwhile: {self.bulk_sent} in {self.window_s:.1f} s "
            f"= {bulk_rate:.1f}/s ({share:.1%} of the sends in that time)",
            f"- busiest 1-second window at the API: {self.busiest_window} sends",
        ]


def busiest_window(stamps: list[float], width_s: float = 1.0) -> int:
    """The most stamps in any half-open window of `width_s` seconds."""
    ordered = sorted(stamps)
    best = start = 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= width_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def worker_env(
    redis_url: str, api_url: str, namespace: str, args: argparse.Namespace
) -> dict[str, str]:
    return {
        **os.environ,
        "DISPATCHER_REDIS_URL": redis_url,
        "DISPATCHER_NAMESPACE": namespace,
        "DISPATCHER_CATAPUSH_BASE_URL": api_url,
        "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
        "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "DISPATCHER_CATAPUSH_MOBILE_APP_ID": "1",
        "DISPATCHER_RATE_LIMIT": str(args.rate),
        "DISPATCHER_RATE_BURST": str(args.burst),
        "DISPATCHER_BULK_SHARE": str(args.share),
        "DISPATCHER_LOG_FORMAT": "json",
    }


def enqueue_backlog(producer: Producer, count: int, *, lanes: bool) -> float:
    started = time.monotonic()
    extra = {"priority": "bulk"} if lanes else {}
    for first in range(0, count, ENQUEUE_BATCH):
        batch = [
            {"id": f"bulk-{n:08d}", "recipients": [f"user{n % 50_000}"], "text": "campaign"} | extra
            for n in range(first, min(count, first + ENQUEUE_BATCH))
        ]
        producer.enqueue_many(batch)
    return time.monotonic() - started


def wait_sends(admin: SandboxAdmin, count: int, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WORKER_START_DEADLINE_S
    while int(admin.stats()["accepted"]) < count:
        if worker.poll() is not None:
            raise BenchmarkError(f"the worker exited with status {worker.returncode}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"fewer than {count} sends within {WORKER_START_DEADLINE_S} s")
        time.sleep(0.1)


def run(
    name: str, *, lanes: bool, redis_url: str, sandbox: SandboxProcess, args: argparse.Namespace
) -> RunFigures:
    namespace = f"lanes{int(lanes)}{int(time.time())}"
    admin = sandbox.admin
    admin.reset()
    producer = Producer(redis_url, namespace, DEFAULT_QUEUE)
    try:
        took = enqueue_backlog(producer, args.backlog, lanes=lanes)
        print(f"{name}: {args.backlog} bulk intents enqueued in {took:.1f} s", flush=True)
        log = Path(tempfile.mkstemp(prefix=f"lanes-{int(lanes)}-", suffix=".log")[1])
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "worker"],
                env=worker_env(redis_url, sandbox.base_url, namespace, args),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_sends(admin, WARM_UP_SENDS, worker)
            enqueued: dict[str, float] = {}
            window_start = time.time()
            interval = 1.0 / args.tx_rate
            count = int(args.seconds * args.tx_rate)
            began = time.monotonic()
            for n in range(count):
                # On a schedule, not after a sleep each: the rate holds however long a call takes.
                pause = began + n * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                ref = f"login-{n:05d}"
                enqueued[ref] = time.time()
                producer.enqueue({"id": ref, "recipients": [f"member{n}"], "text": "code"})
            window_end = time.time()
            settle = time.monotonic() + SETTLE_S
            while time.monotonic() < settle:
                if worker.poll() is not None:
                    raise BenchmarkError(f"the worker exited with status {worker.returncode}")
                accepted = {e["messageRef"] for e in accepted_entries(admin)} & set(enqueued)
                if len(accepted) == len(enqueued):
                    break
                time.sleep(0.5)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=45)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        entries = accepted_entries(admin)
    finally:
        producer.close()
    first_accept: dict[str, float] = {}
    for entry in entries:
        first_accept.setdefault(entry["messageRef"], float(entry["ts"]))
    latencies = [first_accept[ref] - at for ref, at in enqueued.items() if ref in first_accept]
    in_window = [e for e in entries if window_start <= float(e["ts"]) <= window_end]
    bulk = sum(e["messageRef"].startswith("bulk-") for e in in_window)
    return RunFigures(
        name=name,
        tx_enqueued=len(enqueued),
        tx_accepted=len(latencies),
        tx_latencies_s=latencies,
        bulk_sent=bulk,
        window_s=window_end - window_start,
        busiest_window=busiest_window([float(e["ts"]) for e in entries]),
        total_sent=len(in_window),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="bulk intents first")
    parser.add_argument("--rate", type=float, default=50.0, help="DISPATCHER_RATE_LIMIT")
    parser.add_argument("--burst", type=int, default=1, help="DISPATCHER_RATE_BURST")
    parser.add_argument("--share", type=float, default=0.2, help="DISPATCHER_BULK_SHARE")
    parser.add_argument("--tx-rate", type=float, default=2.0, help="transactional per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="transactional for this long")
    parser.add_argument("--no-off", action="store_true", help="skip the run with lanes off")
    args = parser.parse_args()
    results: list[RunFigures] = []
    try:
        with LocalRedis() as server, SandboxProcess(log_bodies=False) as sandbox:
            results.append(
                run("lanes on", lanes=True, redis_url=server.url, sandbox=sandbox, args=args)
            )
            if not args.no_off:
                results.append(
                    run("lanes off", lanes=False, redis_url=server.url, sandbox=sandbox, args=args)
                )
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(
        f"## Lanes: backlog {args.backlog} bulk, rate limit {args.rate:g}/s "
        f"(burst {args.burst}), "
        f"bulk share {args.share:g}, transactional {args.tx_rate:g}/s for {args.seconds:g} s"
    )
    for figures in results:
        print()
        print("\n".join(figures.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
