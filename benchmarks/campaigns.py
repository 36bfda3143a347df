"""Campaigns: how fast a large intent is split, how close to `sendAt` a schedule goes out, and
how quickly a cancel stops a backlog.

    .venv/bin/python benchmarks/campaigns.py                        # all three runs
    .venv/bin/python benchmarks/campaigns.py --runs fanout,cancel   # some of them
    .venv/bin/python benchmarks/campaigns.py --cancel-intents 5000  # a smaller cancel

Starts a private `redis-server` and the sandbox, and for each run one `dispatcher worker` in
an empty folder (so no `.env` leaks in) with a fresh `DISPATCHER_NAMESPACE`:

- **fan-out**: one intent with `--recipients` recipients (10,000, the most one intent may
  carry by default) at the default `DISPATCHER_MAX_RECIPIENTS` (100) and a rate limit of
  `--fanout-rate` per second, burst `--fanout-burst`. Reports the time from the enqueue call
  to the split (the `split_at_ms` the worker writes in the split's record), to the first and
  to the last part accepted by the sandbox, how many messages were accepted (each
  `messageRef` once) and how many recipients they covered (each once). Before the worker
  starts, the same intent and then its parts are enqueued into a namespace no worker reads,
  to show the Redis memory the whole intent and its queued parts take.
- **scheduling**: `--scheduled` intents with the same `sendAt`, `--lead` seconds ahead,
  enqueued in one `enqueue_many` while the worker runs at the fan-out rate. Reports how many
  were accepted before `sendAt` (from the sandbox log and from the receipts' `sent_at`), and
  the lag from `sendAt` to acceptance.
- **cancel**: `--cancel-intents` bulk intents, one worker at `--cancel-rate` per second
  (burst 1); `--cancel-after` seconds after the first acceptance every id is cancelled with
  `dispatcher.store.cancels.cancel_intents`. Reports how long that took, what it answered, how many
  were accepted after it returned (only those it answered `sending` may be), and how long
  until the bulk queue (`LLEN <ns>:notifications.bulk`), its delay queue and the worker's
  taken messages were empty.

Acceptance times are the sandbox request log's `ts` (`time.time()` in the sandbox when it
decided the answer); same host, same clock. Prints a Markdown report. Exit status 1 when a
run could not be completed, or when an invariant broke (a message accepted twice, a
recipient missed, a scheduled intent sent early, a cancelled intent sent); the report is
printed either way, with the broken invariant marked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import redis

from benchmarks.common import MOBILE_APP_ID, BenchmarkError, accepted_entries, percentile
from benchmarks.procs import ManagedProcess
from benchmarks.systems import _clean_environ, _is_worker_started, dispatcher_log_problems
from dispatcher.admission import DEFAULT_MAX_INTENT_RECIPIENTS, DEFAULT_MAX_RECIPIENTS
from dispatcher.fanout import part_count, part_id, split
from dispatcher.intents import parse_intent
from dispatcher.lanes import lane_queue
from dispatcher.messages import now_ms
from dispatcher.producer import Producer
from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import DEFAULT_QUEUE, Settings
from dispatcher.store.cancels import cancel_intents
from dispatcher.store.keys import Keys, delay_queue_name
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import ReceiptReader

ENQUEUE_BATCH = 2_000
WORKER_START_DEADLINE_S = 60.0
# The worker drains in-flight sends for up to DISPATCHER_SHUTDOWN_GRACE_S (30 s by default).
STOP_DEADLINE_S = 45.0
# How long after the last expected event a run waits before it gives up.
SETTLE_DEADLINE_S = 60.0
# A cancelled backlog left to drain at the rate limit would take minutes; this is far less.
DRAIN_DEADLINE_S = 120.0
# `sendAt` must still be ahead when the enqueue returns, or the schedule is not what is timed.
MIN_SCHEDULE_MARGIN_S = 1.5
POLL_S = 0.01
BULK_QUEUE = lane_queue(DEFAULT_QUEUE, "bulk")

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, deadline_s: float, what: str, worker: ManagedProcess
) -> T:
    """The first true answer of `probe`, polled until `deadline_s` seconds pass."""
    deadline = time.monotonic() + deadline_s
    while True:
        answer = probe()
        if answer:
            return answer
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(POLL_S)


def first_accepts(entries: list[dict[str, Any]]) -> dict[str, float]:
    first: dict[str, float] = {}
    for entry in entries:
        first.setdefault(entry["messageRef"], float(entry["ts"]))
    return first


def mark(ok: bool, expected: str) -> str:
    return "" if ok else f" **(expected {expected})**"


def latency_text(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):.3f} s, p99 {percentile(values, 0.99):.3f} s, "
        f"max {max(values):.3f} s"
    )


def mib(count: int) -> str:
    return f"{count / 1_048_576:.2f} MiB"


@dataclass
class Run:
    """What one run reports: its lines, and the invariants it found broken."""

    title: str
    lines: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.broken.append(what)
        return ok

    def text(self) -> str:
        return "\n".join([f"### {self.title}", *self.lines])


class Bench:
    """The Redis and sandbox every run shares, and how a run starts its worker."""

    def __init__(self, redis_url: str, sandbox: SandboxProcess, folder: Path) -> None:
        self.redis_url = redis_url
        self.sandbox = sandbox
        self.admin = sandbox.admin
        self.folder = folder
        self.client = redis.Redis.from_url(redis_url)
        # A worker that did not stop cleanly fails the benchmark; log warnings are only shown.
        self.failures: list[str] = []
        self.notes: list[str] = []

    def close(self) -> None:
        self.client.close()

    def settings(self, namespace: str) -> Settings:
        return Settings(
            redis_url=self.redis_url, namespace=namespace, queue=DEFAULT_QUEUE, _env_file=None
        )

    @contextmanager
    def worker(self, tag: str, namespace: str, **env: str) -> Iterator[ManagedProcess]:
        worker = ManagedProcess(
            f"dispatcher worker ({tag})",
            [sys.executable, "-m", "dispatcher", "worker"],
            env={
                **_clean_environ(),
                "DISPATCHER_REDIS_URL": self.redis_url,
                "DISPATCHER_NAMESPACE": namespace,
                "DISPATCHER_CATAPUSH_BASE_URL": self.sandbox.base_url,
                "DISPATCHER_CATAPUSH_CLIENT_ID": DEFAULT_CLIENT_ID,
                "DISPATCHER_CATAPUSH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
                "DISPATCHER_CATAPUSH_MOBILE_APP_ID": str(MOBILE_APP_ID),
                "DISPATCHER_LOG_FORMAT": "json",
                **env,
            },
            cwd=self.folder,
            log_path=self.folder / f"{tag}-worker.log",
        )
        worker.start()
        try:
            worker.wait_for_lines(_is_worker_started, 1, WORKER_START_DEADLINE_S)
            yield worker
        finally:
            code = worker.stop(STOP_DEADLINE_S)
            if code != 0:
                self.failures.append(f"{worker.name} exited with status {code}")
            self.notes += [
                f"{worker.name}: {problem}"
                for problem in dispatcher_log_problems(worker.log_text())
            ]

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])


def events(worker: ManagedProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.log_text().splitlines():
        if f'"{name}"' not in line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


# -- fan-out ----------------------------------------------------------------------------------


def campaign(intent_id: str, recipients: int) -> dict[str, Any]:
    return {
        "id": intent_id,
        "recipients": [f"user{n:05d}" for n in range(recipients)],
        "text": "Spring sale",
        "priority": "bulk",
    }


def parts_memory(bench: Bench, namespace: str, intent: dict[str, Any]) -> tuple[int, int, int]:
    """Redis memory of the whole intent queued, and of its parts queued the way the worker
    pushes them (same wire form), in `namespace`, which no worker reads: the `.msgs` hash
    (MEMORY USAGE), and `used_memory` grown by the parts."""
    producer = Producer(bench.redis_url, namespace, DEFAULT_QUEUE)
    msgs = Keys(namespace).queue_messages(BULK_QUEUE)
    try:
        producer.enqueue(intent)
        whole = int(bench.client.memory_usage(msgs, samples=0) or 0)
        bench.client.delete(msgs, Keys(namespace).queue(BULK_QUEUE))
        model = parse_intent(dict(intent)).with_defaults(now_ms=now_ms())
        parts = split(model, DEFAULT_MAX_RECIPIENTS)
        before = bench.used_memory()
        producer.enqueue_many(parts, checked=True)
        grown = bench.used_memory() - before
        in_parts = int(bench.client.memory_usage(msgs, samples=0) or 0)
        bench.client.delete(msgs, Keys(namespace).queue(BULK_QUEUE))
    finally:
        producer.close()
    return whole, in_parts, grown


def run_fanout(bench: Bench, args: argparse.Namespace) -> Run:
    namespace = f"fanout{int(time.time())}"
    intent_id = "campaign-spring"
    recipients = args.recipients
    intent = campaign(intent_id, recipients)
    run = Run(
        f"Fan-out: 1 intent, {recipients} recipients, DISPATCHER_MAX_RECIPIENTS default (100), "
        f"rate {args.fanout_rate:g}/s burst {args.fanout_burst}"
    )
    whole_bytes, parts_bytes, grown = parts_memory(bench, namespace + "scratch", intent)
    bench.admin.reset()
    keys = Keys(namespace)
    expected_parts = part_count(recipients, DEFAULT_MAX_RECIPIENTS)
    refs = {part_id(intent_id, index) for index in range(1, expected_parts + 1)}
    producer = Producer(bench.redis_url, namespace, DEFAULT_QUEUE)
    try:
        with bench.worker(
            "fanout",
            namespace,
            DISPATCHER_RATE_LIMIT=str(args.fanout_rate),
            DISPATCHER_RATE_BURST=str(args.fanout_burst),
        ) as worker:
            started = time.time()
            producer.enqueue(intent)
            enqueued = time.time()
            record: bytes = wait_for(
                lambda: cast("bytes | None", bench.client.get(keys.parts(intent_id))),
                deadline_s=SETTLE_DEADLINE_S,
                what="the split",
                worker=worker,
            )
            wait_for(
                lambda: (
                    len(first_accepts(accepted_entries(bench.admin)).keys() & refs) == len(refs)
                ),
                deadline_s=SETTLE_DEADLINE_S,
                what=f"all {len(refs)} parts accepted",
                worker=worker,
            )
            # Anything sent twice would come now, not later: the queue is drained.
            wait_for(
                lambda: bench.client.llen(keys.queue(BULK_QUEUE)) == 0,
                deadline_s=SETTLE_DEADLINE_S,
                what="the bulk queue to empty",
                worker=worker,
            )
            split_events = events(worker, "delivery.split")
    finally:
        producer.close()
    entries = accepted_entries(bench.admin)
    split_at = orjson.loads(record)["split_at_ms"] / 1000
    by_ref = Counter(entry["messageRef"] for entry in entries)
    covered = Counter(identifier for entry in entries for identifier in entry["identifiers"])
    expected_recipients = set(intent["recipients"])
    stamps = sorted(float(entry["ts"]) for entry in entries)
    once = all(count == 1 for count in by_ref.values())
    run.lines += [
        f"- enqueue call (validation of {recipients} recipients and one round trip): "
        f"{enqueued - started:.3f} s",
        f"- enqueue to split (`split_at_ms` of the split's record): {split_at - started:.3f} s; "
        f"the worker logged `delivery.split` {len(split_events)} time(s) with "
        f"parts={split_events[0].get('parts') if split_events else 'n/a'}",
        f"- enqueue to first part accepted: {stamps[0] - started:.3f} s",
        f"- enqueue to all {len(refs)} parts accepted: {stamps[-1] - started:.3f} s "
        f"(split to last part: {stamps[-1] - split_at:.3f} s)",
        f"- messages accepted: {len(entries)}"
        + mark(run.check(len(entries) == len(refs), "messages accepted"), str(len(refs))),
        f"- distinct messageRefs: {len(by_ref)}, each exactly once: {once}, all of them the "
        f"part ids: {set(by_ref) == refs}"
        + mark(run.check(once and set(by_ref) == refs, "messageRefs"), "each part id once"),
        f"- recipients covered: {len(covered)} distinct, {sum(covered.values())} in all, "
        f"each once: {all(c == 1 for c in covered.values())}"
        + mark(
            run.check(
                set(covered) == expected_recipients and sum(covered.values()) == recipients,
                "recipients covered",
            ),
            f"{recipients}, each once",
        ),
        f"- Redis memory queued (`.msgs` hash, MEMORY USAGE): the whole intent "
        f"{mib(whole_bytes)}, its {len(refs)} parts {mib(parts_bytes)} "
        f"(used_memory grew {mib(grown)} when the parts were pushed)",
    ]
    return run


# -- scheduling -------------------------------------------------------------------------------


def run_schedule(bench: Bench, args: argparse.Namespace) -> Run:
    namespace = f"sched{int(time.time())}"
    count = args.scheduled
    run = Run(
        f"Scheduling: {count} intents with the same sendAt, {args.lead:g} s ahead, "
        f"rate {args.fanout_rate:g}/s burst {args.fanout_burst}"
    )
    bench.admin.reset()
    keys = Keys(namespace)
    producer = Producer(bench.redis_url, namespace, DEFAULT_QUEUE)
    try:
        with bench.worker(
            "schedule",
            namespace,
            DISPATCHER_RATE_LIMIT=str(args.fanout_rate),
            DISPATCHER_RATE_BURST=str(args.fanout_burst),
        ) as worker:
            send_at_ms = now_ms() + round(args.lead * 1000)
            items = [
                {"id": f"reminder-{n:05d}", "recipients": [f"member{n}"], "text": "Your table"}
                | {"sendAt": send_at_ms}
                for n in range(count)
            ]
            began = time.time()
            ids = producer.enqueue_many(items)
            took = time.time() - began
            if send_at_ms / 1000 - time.time() < MIN_SCHEDULE_MARGIN_S:
                raise BenchmarkError(
                    f"the enqueue took {took:.1f} s: sendAt was less than "
                    f"{MIN_SCHEDULE_MARGIN_S:g} s ahead when it returned; raise --lead"
                )
            on_schedule = int(bench.client.zcard(keys.schedule(DEFAULT_QUEUE)))
            wanted = set(ids)
            wait_for(
                lambda: (
                    len(first_accepts(accepted_entries(bench.admin)).keys() & wanted) == len(wanted)
                ),
                deadline_s=args.lead + SETTLE_DEADLINE_S,
                what=f"all {count} scheduled intents accepted",
                worker=worker,
            )
    finally:
        producer.close()
    entries = accepted_entries(bench.admin)
    first = first_accepts(entries)
    send_at = send_at_ms / 1000
    early = sum(ts < send_at for ts in first.values())
    lags = [first[ref] - send_at for ref in ids]
    reader = ReceiptReader(bench.client, keys)
    receipts = [reader.get(ref) for ref in ids]
    receipt_lags = [
        datetime.fromisoformat(receipt.sent_at).timestamp() - send_at
        for receipt in receipts
        if receipt is not None
    ]
    receipt_early = sum(lag < 0 for lag in receipt_lags)
    by_ref = Counter(entry["messageRef"] for entry in entries)
    run.lines += [
        f"- enqueue_many of {count}: {took:.3f} s; on the schedule after it: {on_schedule}"
        + mark(run.check(on_schedule == count, "on the schedule"), str(count)),
        f"- accepted before sendAt (sandbox `ts`): {early}"
        + mark(run.check(early == 0, "accepted before sendAt"), "0"),
        f"- receipts: {len(receipt_lags)}, `sent_at` before sendAt: {receipt_early}"
        + mark(
            run.check(receipt_early == 0 and len(receipt_lags) == count, "receipts"),
            f"{count}, none early",
        ),
        f"- sendAt to accepted (sandbox `ts`): min {min(lags):.3f} s, {latency_text(lags)}",
        f"- sendAt to receipt `sent_at`: {latency_text(receipt_lags)}",
        f"- first to last acceptance: {max(first.values()) - min(first.values()):.3f} s",
        f"- messages accepted: {len(entries)}, each messageRef once: "
        f"{all(c == 1 for c in by_ref.values())}"
        + mark(run.check(len(entries) == count, "messages accepted"), str(count)),
    ]
    return run


# -- cancel -----------------------------------------------------------------------------------


def run_cancel(bench: Bench, args: argparse.Namespace) -> Run:
    namespace = f"cancel{int(time.time())}"
    count = args.cancel_intents
    run = Run(
        f"Cancel: {count} bulk intents, rate {args.cancel_rate:g}/s burst 1, all cancelled "
        f"{args.cancel_after:g} s after the first acceptance"
    )
    bench.admin.reset()
    keys = Keys(namespace)
    queue_key = keys.queue(BULK_QUEUE)
    delay_key = keys.queue(delay_queue_name(BULK_QUEUE))
    producer = Producer(bench.redis_url, namespace, DEFAULT_QUEUE)
    ids: list[str] = []
    try:
        for first in range(0, count, ENQUEUE_BATCH):
            ids += producer.enqueue_many(
                {
                    "id": f"promo-{n:06d}",
                    "recipients": [f"user{n}"],
                    "text": "campaign",
                    "priority": "bulk",
                }
                for n in range(first, min(count, first + ENQUEUE_BATCH))
            )
    finally:
        producer.close()

    def taken() -> int:
        return sum(
            int(bench.client.scard(key))
            for key in bench.client.scan_iter(match=f"{namespace}:__acks__.*", count=1000)
        )

    def held() -> tuple[int, int, int]:
        return int(bench.client.llen(queue_key)), int(bench.client.llen(delay_key)), taken()

    with bench.worker(
        "cancel",
        namespace,
        DISPATCHER_RATE_LIMIT=str(args.cancel_rate),
        DISPATCHER_RATE_BURST="1",
    ) as worker:
        wait_for(
            lambda: accepted_entries(bench.admin),
            deadline_s=SETTLE_DEADLINE_S,
            what="the first acceptance",
            worker=worker,
        )
        time.sleep(args.cancel_after)
        before_cancel = len(accepted_entries(bench.admin))
        queued_before = held()
        began_wall = time.time()
        began = time.monotonic()
        answers = cancel_intents(ids, bench.settings(namespace))
        cancel_s = time.monotonic() - began
        returned_wall = time.time()
        queued_after = held()
        wait_for(
            lambda: bench.client.llen(queue_key) == 0,
            deadline_s=DRAIN_DEADLINE_S,
            what="the bulk queue to empty after the cancel",
            worker=worker,
        )
        queue_empty_s = time.time() - returned_wall
        wait_for(
            lambda: held() == (0, 0, 0),
            deadline_s=DRAIN_DEADLINE_S,
            what="the queue, the delay queue and the taken messages to empty",
            worker=worker,
        )
        settled_s = time.time() - returned_wall
        dropped = events(worker, "delivery.cancelled")
        deferred = events(worker, "delivery.deferred")
    entries = accepted_entries(bench.admin)
    states = {answer.intent_id: answer.state for answer in answers}
    by_state = Counter(states.values())
    by_ref = Counter(entry["messageRef"] for entry in entries)
    during = [e for e in entries if began_wall <= float(e["ts"]) <= returned_wall]
    after = [e for e in entries if float(e["ts"]) > returned_wall]
    after_states = Counter(states.get(e["messageRef"], "?") for e in after)
    cancelled_sent = sorted(ref for ref in by_ref if states.get(ref) == "cancelled")
    run.lines += [
        f"- accepted before the cancel: {before_cancel}; bulk queue, delay queue, taken by "
        f"the worker: {queued_before}",
        f"- cancel_intents of {len(ids)} ids: {cancel_s:.3f} s = {len(ids) / cancel_s:,.0f} "
        f"ids/s; answers: " + ", ".join(f"{state} {n}" for state, n in sorted(by_state.items())),
        f"- accepted while cancel_intents ran: {len(during)}; queued right after it "
        f"returned: {queued_after}",
        f"- accepted after cancel_intents returned: {len(after)} ("
        + (", ".join(f"answered {s}: {n}" for s, n in sorted(after_states.items())) or "none")
        + ")"
        + mark(
            run.check(all(s in ("sending", "sent") for s in after_states), "sent after cancel"),
            "only ones answered sending",
        ),
        f"- accepted although answered `cancelled`: {len(cancelled_sent)}"
        + (f" ({', '.join(cancelled_sent[:5])})" if cancelled_sent else "")
        + mark(run.check(not cancelled_sent, "cancelled but sent"), "0"),
        f"- bulk queue empty (LLEN 0) {queue_empty_s:.3f} s after cancel_intents returned; "
        f"queue, delay queue and taken messages all empty after {settled_s:.3f} s",
        f"- the worker logged `delivery.cancelled` {len(dropped)} times, "
        f"`delivery.deferred` {len(deferred)} times",
        f"- messages accepted in all: {len(entries)}, each messageRef once: "
        f"{all(c == 1 for c in by_ref.values())}"
        + mark(run.check(all(c == 1 for c in by_ref.values()), "duplicates"), "each once"),
    ]
    return run


RUNS: dict[str, Callable[[Bench, argparse.Namespace], Run]] = {
    "fanout": run_fanout,
    "schedule": run_schedule,
    "cancel": run_cancel,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs, comma-separated")
    parser.add_argument(
        "--recipients", type=int, default=DEFAULT_MAX_INTENT_RECIPIENTS, help="fan-out size"
    )
    parser.add_argument("--fanout-rate", type=float, default=2000.0, help="fan-out, schedule")
    parser.add_argument("--fanout-burst", type=int, default=200, help="fan-out, schedule")
    parser.add_argument("--scheduled", type=int, default=1000, help="intents with one sendAt")
    parser.add_argument("--lead", type=float, default=5.0, help="sendAt this far ahead, s")
    parser.add_argument("--cancel-intents", type=int, default=20_000, help="bulk backlog")
    parser.add_argument("--cancel-rate", type=float, default=50.0, help="rate while cancelling")
    parser.add_argument("--cancel-after", type=float, default=2.0, help="s after first send")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.runs.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNS]
    if unknown:
        parser.error(f"unknown runs: {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    # Intake would refuse a larger intent; that is not what is measured here.
    if not 1 <= args.recipients <= DEFAULT_MAX_INTENT_RECIPIENTS:
        parser.error(f"--recipients: from 1 to {DEFAULT_MAX_INTENT_RECIPIENTS}")
    if args.scheduled < 1 or args.cancel_intents < 1:
        parser.error("--scheduled and --cancel-intents: at least 1")
    if args.lead <= MIN_SCHEDULE_MARGIN_S:
        parser.error(f"--lead: more than {MIN_SCHEDULE_MARGIN_S:g} s")
    results: list[Run] = []
    failures: list[str] = []
    notes: list[str] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="campaigns-") as folder,
            LocalRedis() as server,
            SandboxProcess(log_bodies=False) as sandbox,
        ):
            bench = Bench(server.url, sandbox, Path(folder))
            try:
                for name in chosen:
                    results.append(RUNS[name](bench, args))
                    print(f"{name}: done", flush=True)
            except BenchmarkError as exc:
                failures.append(str(exc))
            finally:
                bench.close()
                failures += bench.failures
                notes += bench.notes
    except BenchmarkError as exc:
        failures.append(str(exc))
    print()
    print("## Campaigns: fan-out, scheduling, cancel")
    for result in results:
        print()
        print(result.text())
    failures += [f"{result.title}: {what}" for result in results for what in result.broken]
    if failures or notes:
        print()
        print("## Errors and anomalies")
        for line in failures + notes:
            print(f"- {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
