"""The README's examples run as written.

A fenced block the README marks with `<!-- example: KIND [PATH] -->` on the line before it is
run here against the suite's redis-server and sandbox. Only the environment is supplied
(`DISPATCHER_*` variables, `PATH`, the working directory and the files the examples name);
the text of a block is never changed. Kinds:

- `file PATH`: the block is written to PATH before any example runs;
- `intent`: a JSON intent, piped to `dispatcher enqueue -` (as one line);
- `sh`: run by bash with `-e` in the working directory;
- `python`: run by the suite's Python.

Afterwards a worker sends everything enqueued, and each accepted id must be sent.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from dispatcher.sandbox.process import SandboxProcess
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from tests.conftest import WorkerProcess, wait_until
from tests.integration.helpers import accepted_refs

README = Path(__file__).resolve().parents[2] / "README.md"
MARKED_BLOCK = re.compile(
    r"<!-- example: (?P<kind>\w+)(?: (?P<arg>\S+))? -->\n```(?P<lang>\w*)\n(?P<body>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
KINDS = {"file", "intent", "sh", "python"}
# The README's examples use the default namespace and queue: a database of their own keeps
# them apart from every other test on the shared server.
EXAMPLES_DB = 9
EXAMPLE_TIMEOUT_S = 30


def readme_examples() -> list[dict[str, str]]:
    return [match.groupdict() for match in MARKED_BLOCK.finditer(README.read_text("utf-8"))]


def test_every_marker_is_followed_by_a_block_of_a_known_kind() -> None:
    text = README.read_text("utf-8")
    examples = readme_examples()
    assert len(examples) == len(re.findall(r"^<!-- example:", text, re.MULTILINE))
    assert {example["kind"] for example in examples} <= KINDS
    assert len(examples) >= 6


def _run(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> Any:
    return subprocess.run(
        args,
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )


def _tools(directory: Path, redis_url: str) -> Path:
    """`dispatcher` and `redis-cli` on PATH, the latter pointed at the suite's server (a
    README example names no server, as a user's Redis on localhost needs none)."""
    directory.mkdir()
    real_cli = shutil.which("redis-cli")
    if real_cli is None:
        pytest.skip("redis-cli is not installed")
    shim = directory / "redis-cli"
    shim.write_text(f'#!/bin/sh\nexec {real_cli} -u "{redis_url}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    (directory / "dispatcher").symlink_to(Path(sys.executable).with_name("dispatcher"))
    return directory


def test_readme_examples_run_verbatim(
    redis_server: LocalRedis,
    sandbox: SandboxProcess,
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{EXAMPLES_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    workdir = tmp_path / "work"
    workdir.mkdir()
    tools = _tools(tmp_path / "bin", url)
    env = {
        **os.environ,
        **settings_env,
        "DISPATCHER_REDIS_URL": url,
        "DISPATCHER_TEMPLATES_DIR": str(workdir / "templates"),
        "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    del env["DISPATCHER_NAMESPACE"]  # the examples' keys name the default one
    examples = readme_examples()
    intents = [orjson.loads(e["body"]) for e in examples if e["kind"] == "intent"]
    # The file `dispatcher enqueue intents.jsonl` reads: the README's first intent.
    (workdir / "intents.jsonl").write_bytes(orjson.dumps(intents[0]) + b"\n")
    # The file `dispatcher.import_users("customers.csv", ...)` reads.
    (workdir / "customers.csv").write_text("identifier,password\nalice,alice-pass1\nbob,\n")

    enqueued: set[str] = set()
    runners: dict[str, Callable[[dict[str, str]], Any]] = {
        "intent": lambda e: _run(
            [sys.executable, "-m", "dispatcher", "enqueue", "-"],
            env,
            workdir,
            stdin=orjson.dumps(orjson.loads(e["body"])).decode() + "\n",
        ),
        "sh": lambda e: _run(["bash", "-e", "-o", "pipefail", "-c", e["body"]], env, workdir),
        "python": lambda e: _run([sys.executable, "-c", e["body"]], env, workdir),
    }
    # Files first: a command reads the templates folder whenever it starts.
    for example in examples:
        if example["kind"] == "file":
            target = workdir / example["arg"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(example["body"], "utf-8")
    for number, example in enumerate(examples):
        if example["kind"] == "file":
            continue
        result = runners[example["kind"]](example)
        shown = f"example {number} ({example['kind']}):\n{example['body']}"
        assert result.returncode == 0, f"{shown}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        if example["kind"] == "intent" or "dispatcher enqueue" in example["body"]:
            enqueued.update(result.stdout.split())

    assert "order-1234-shipped" in enqueued
    users = sandbox.admin.requests(kind="users")
    assert {"alice", "bob"} <= {str(entry.get("identifier")) for entry in users}, users
    worker = WorkerProcess(env)
    try:
        wait_until(
            lambda: (
                client.llen("dispatcher:notifications") == 0
                and client.hlen("dispatcher:notifications.msgs") == 0
            ),
            timeout=60,
            what="the examples' intents to be sent",
        )
    finally:
        worker.close()
    refs = accepted_refs(sandbox)
    # A split intent goes out as its parts (`<id>_p<n>`), never under its own id.
    sent = set(refs) | {ref.rsplit("_p", 1)[0] for ref in refs}
    assert enqueued <= sent, refs
    assert refs["order-1234-shipped"] == 1
    assert DeadLetters(client, Keys("dispatcher")).list() == []
    texts = {
        recipient.get("override", {}).get("text") or entry["body"]["text"]
        for entry in sandbox.admin.requests(kind="messages")
        if entry["status"] == 201 and "template" not in entry["body"]
        for recipient in entry["body"]["recipients"]
        if recipient["identifier"] in {"chiara", "marco"}
    }
    assert texts == {
        "Ciao Chiara, l'ordine 1234 è stato spedito",
        "Ciao cliente, l'ordine 1234 è stato spedito",
    }
    client.flushdb()
    client.close()
