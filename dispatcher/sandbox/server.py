"""Binding, the ready line and signal handling around the sandbox application."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys

from aiohttp import web

from dispatcher.listening import bind_listener
from dispatcher.sandbox.app import build_app
from dispatcher.sandbox.state import SandboxState

# Benchmarks open a few thousand connections at once; the default backlog of 128 would make
# the kernel refuse or delay some of them.
LISTEN_BACKLOG = 4096

# Requests sleeping on injected latency must not hold up a stop for aiohttp's default 60 s.
SHUTDOWN_TIMEOUT_S = 1.0


def _raise_file_limit() -> None:
    # Each concurrent connection is a file descriptor; the soft limit is often 1024.
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


async def _serve(host: str, port: int, state: SandboxState) -> None:
    runner = web.AppRunner(
        build_app(state), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        sock = bind_listener(host, port)
        site = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
        await site.start()
        real_port: int = sock.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        ready = {
            "event": "sandbox.started",
            "host": host,
            "port": real_port,
            "base_url": f"http://{shown_host}:{real_port}/1",
            "pid": os.getpid(),
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(
    host: str,
    port: int,
    *,
    token_ttl_s: float | None,
    latency_ms: int,
    client_id: str,
    client_secret: str,
    permanent_token: str,
    log_bodies: bool,
) -> None:
    state = SandboxState(
        client_id=client_id,
        client_secret=client_secret,
        permanent_token=permanent_token,
        token_ttl_s=token_ttl_s,
        latency_ms=latency_ms,
        log_bodies=log_bodies,
    )
    _raise_file_limit()
    asyncio.run(_serve(host, port, state))
