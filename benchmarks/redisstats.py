"""Redis's own counters: commands executed (by name) and CPU time of the server."""

from __future__ import annotations

from dataclasses import dataclass

import redis

# The benchmark's own INFO calls are not part of what it measures.
IGNORED_COMMANDS = frozenset({"info"})


@dataclass(frozen=True)
class RedisSnapshot:
    calls: dict[str, int]
    cpu_s: float


def snapshot(client: redis.Redis) -> RedisSnapshot:
    stats = client.info("commandstats")
    calls: dict[str, int] = {}
    for key, value in stats.items():
        name = str(key).removeprefix("cmdstat_")
        if name not in IGNORED_COMMANDS:
            calls[name] = int(value["calls"])
    cpu = client.info("cpu")
    return RedisSnapshot(calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))


def calls_delta(before: RedisSnapshot, after: RedisSnapshot) -> dict[str, int]:
    """Commands run between two snapshots, by name, most frequent first."""
    delta = {
        name: count - before.calls.get(name, 0)
        for name, count in after.calls.items()
        if count > before.calls.get(name, 0)
    }
    return dict(sorted(delta.items(), key=lambda item: (-item[1], item[0])))


def server_version(client: redis.Redis) -> str:
    return str(client.info("server")["redis_version"])
