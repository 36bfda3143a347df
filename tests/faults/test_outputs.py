"""What the dispatcher writes: never a Redis password, and only JSON lines from workers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis, free_port
from tests.conftest import DispatcherProcess, wait_until
from tests.faults.conftest import (
    PipedProcess,
    enqueue_intents,
    poll_until,
    started_worker_pids,
)
from tests.integration.helpers import accepted_refs, run_cli


def _complained(log: str) -> bool:
    """A worker's log says something went wrong (a warning or error, or a traceback)."""
    lowered = log.lower()
    return any(word in lowered for word in ("warning", "error", "traceback"))


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_no_redis_password_appears_in_any_output(
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch: Callable[..., DispatcherProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """A worker, `enqueue`, `dlq list` and `status`, against a Redis with a password, given
    the right one and wrong ones (and an unreachable port, and a database Redis refuses):
    no password, right or wrong, appears in any stdout, stderr or log line."""
    password = f"supersecretpw-{uuid.uuid4().hex}"
    server = private_redis(password=password)
    wrong = [f"wrongpw-{uuid.uuid4().hex}" for _ in range(2)]
    secrets = [password, *wrong]
    host = f"127.0.0.1:{server.port}"
    variants = {
        "right password": server.url,
        "user and right password": f"redis://default:{password}@{host}/0",
        "wrong password": f"redis://:{wrong[0]}@{host}/0",
        "user and wrong password": f"redis://default:{wrong[1]}@{host}/0",
        "no password": f"redis://{host}/0",
        "right password, nothing listening": f"redis://:{password}@127.0.0.1:{free_port()}/0",
        "right password, database out of range": f"redis://:{password}@{host}/999",
        "right password, port not a number": f"redis://:{password}@127.0.0.1:port/0",
    }
    outputs: dict[str, str] = {}

    # A worker that works (two processes, a few sends), so that `status` finds a receipt.
    ids = enqueue_intents(server.url, namespace, 10, prefix="pw")
    good = launch(fault_env(server.url), "worker", "--processes", "2", "--threads", "4")
    wait_until(
        lambda: set(ids) <= set(accepted_refs(sandbox)), timeout=60, what="10 accepted sends"
    )

    # Every command against every variant, a few at a time.
    commands = {
        "enqueue -": ("enqueue", "-"),
        "enqueue - (console logs)": ("enqueue", "-"),
        "dlq list": ("dlq", "list"),
        "dlq list --json": ("dlq", "list", "--json"),
        "status": ("status", ids[0]),
        "status --json": ("status", ids[0], "--json"),
    }
    runs = [(label, name) for label in variants for name in commands]

    def run(label: str, name: str) -> tuple[str, str, Any]:
        env = fault_env(variants[label])
        if "console" in name:
            env["DISPATCHER_LOG_FORMAT"] = "console"
        stdin = json.dumps({"recipients": ["a"], "text": "hi"}) if "enqueue" in name else None
        return label, name, run_cli(env, *commands[name], stdin=stdin)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for label, name, done in pool.map(lambda pair: run(*pair), runs):
            outputs[f"{label} / {name} / stdout"] = done.stdout
            outputs[f"{label} / {name} / stderr"] = done.stderr
            outputs[f"{label} / {name} / exit"] = str(done.returncode)

    # Workers that cannot log in or reach Redis, in both log formats, side by side.
    failing = {
        (label, log_format): launch(
            fault_env(variants[label]) | {"DISPATCHER_LOG_FORMAT": log_format},
            "worker",
            "--threads",
            "4",
        )
        for label in ("wrong password", "no password", "right password, nothing listening")
        for log_format in ("json", "console")
    }
    # Until each has said something about Redis (or given up), plus a moment.
    poll_until(
        lambda: all(
            worker.process.poll() is not None or _complained(worker.log_text())
            for worker in failing.values()
        ),
        timeout=20,
    )
    time.sleep(0.5)
    for (label, log_format), worker in failing.items():
        worker.stop(timeout=15)
        outputs[f"{label} / worker ({log_format} logs)"] = worker.log_text()
    good.stop(timeout=15)
    outputs["right password / worker --processes 2"] = good.log_text()

    leaks = []
    for where, text in outputs.items():
        for line in text.splitlines():
            found = [n for n, secret in enumerate(secrets) if secret in line]
            if found:
                shown = line
                for n, secret in enumerate(secrets):
                    shown = shown.replace(secret, "<PASSWORD>" if n == 0 else f"<WRONG{n}>")
                leaks.append(f"{where}: {shown[:300]}")
    report("outputs captured", len(outputs))
    report(
        "exit codes of the commands",
        sorted({value for key, value in outputs.items() if key.endswith("/ exit")}),
    )
    report("lines with a password", len(leaks))
    assert sum(len(text) for text in outputs.values()) > 0
    assert not leaks, f"{len(leaks)} lines show a password:\n" + "\n".join(leaks[:15])


@pytest.mark.fault
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_two_worker_processes_under_load_write_only_json_lines(
    private_redis: Callable[..., LocalRedis],
    fault_env: Callable[..., dict[str, str]],
    launch_piped: Callable[..., PipedProcess],
    sandbox: SandboxProcess,
    namespace: str,
    report: Any,
) -> None:
    """`dispatcher worker --processes 2` with 2,000 intents, some 503s, some refused (long
    details) and a drain at the end: every line of its stderr (both processes on one pipe)
    is one JSON object, and no line is empty."""
    server = private_redis()
    sandbox.admin.set_latency(10)
    sandbox.admin.add_fault(status=503, count=50, detail="busy " * 50)
    sandbox.admin.add_fault(status=403, identifier="user7", detail="refused " * 400)
    ids = enqueue_intents(server.url, namespace, 2000, prefix="load")
    worker = launch_piped(fault_env(server.url), "worker", "--processes", "2")
    client = redis.Redis.from_url(server.url)
    try:
        wait_until(
            lambda: (
                len(set(ids) & set(accepted_refs(sandbox))) == 1999
                and client.hexists(Keys(namespace).dead_letters, "load-00007")
            ),
            timeout=120,
            what="1,999 accepted sends and one dead letter",
        )
    finally:
        client.close()
    pids = started_worker_pids(worker.events())
    exit_code = worker.stop(timeout=30)
    stderr = worker.output("stderr")
    stdout = worker.output("stdout")

    lines = stderr.split(b"\n")
    unterminated = lines.pop()  # b"" when the output ends with a line break
    empty = [n for n, line in enumerate(lines, 1) if not line.strip()]
    bad = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append((n, line))
            continue
        if not isinstance(parsed, dict):
            bad.append((n, line))
    report("stderr lines", len(lines))
    report("stderr bytes", len(stderr))
    report("stdout bytes", len(stdout))
    report("longest line bytes", max((len(line) for line in lines), default=0))
    report("lines not a JSON object", len(bad))
    report("empty lines", len(empty))

    assert len(pids) == 2, pids
    assert exit_code == 0
    assert lines, "no output at all"
    problems = []
    if unterminated:
        problems.append(f"the output ends in an unfinished line: {unterminated[:200]!r}")
    if empty:
        problems.append(f"{len(empty)} empty lines (lines {empty[:10]})")
    if bad:
        problems.append(
            f"{len(bad)} lines are not a JSON object, e.g. "
            + " | ".join(f"line {n}: {line[:160]!r}...{line[-80:]!r}" for n, line in bad[:4])
        )
    assert not problems, "\n".join(problems)
