"""The ceiling: a bare asyncio aiohttp client posting straight to the API, no queue at all.

Run as its own process (`python -m benchmarks.ceiling ...`) so that its CPU time is its own.
It warms up (opening its connections), then sends N messages from `--connections`
coroutines, and writes a JSON report: when each message was sent, the answers, its CPU time
and the sandbox's CPU time around the measured part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import catapush_message
from benchmarks.procs import host_cpu_ticks
from dispatcher.sandbox import DEFAULT_PERMANENT_TOKEN


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _send_all(
    session: aiohttp.ClientSession, url: str, refs: list[str], connections: int
) -> tuple[dict[str, float], Counter[int]]:
    sent: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    numbered = iter(enumerate(refs))

    async def sender() -> None:
        # One coroutine per connection, each taking the next message as soon as it is free:
        # no task per message, nothing queued inside the client.
        for n, ref in numbered:
            sent[ref] = time.time()
            async with session.post(url, json=catapush_message(ref, n)) as response:
                await response.read()
                statuses[response.status] += 1

    await asyncio.gather(*(sender() for _ in range(connections)))
    return sent, statuses


async def _sandbox_cpu_s(session: aiohttp.ClientSession, admin_url: str) -> float:
    async with session.get(f"{admin_url}/stats") as response:
        response.raise_for_status()
        stats: dict[str, Any] = await response.json()
        return float(stats["cpu_s"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"{args.base_url.rstrip('/')}/messages"
    headers = {"Authorization": f"Bearer {DEFAULT_PERMANENT_TOKEN}"}
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        warm = [f"{args.tag}-w{n}" for n in range(args.warmup)]
        await _send_all(session, url, warm, args.connections)
        refs = [f"{args.tag}-s{n}" for n in range(args.n)]
        sandbox_before = await _sandbox_cpu_s(session, args.admin_url)
        host_before, cpu_before, wall_before = host_cpu_ticks(), _cpu_s(), time.time()
        sent, statuses = await _send_all(session, url, refs, args.connections)
        cpu_after, wall_after, host_after = _cpu_s(), time.time(), host_cpu_ticks()
        sandbox_after = await _sandbox_cpu_s(session, args.admin_url)
    return {
        "sent": sent,
        "statuses": {str(status): count for status, count in statuses.items()},
        "cpu_s": cpu_after - cpu_before,
        "wall_s": wall_after - wall_before,
        "sandbox_cpu_s": sandbox_after - sandbox_before,
        "host_ticks": [host_before, host_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--tag", required=True, help="prefix of the messageRefs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
