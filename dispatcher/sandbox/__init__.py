"""A local Catapush API for trials, tests and benchmarks.

`serve` runs it in the foreground; `dispatcher.sandbox.process.SandboxProcess` runs it as a
subprocess and `dispatcher.sandbox.admin.SandboxAdmin` steers it (faults, latency, tokens) and
reads back what it received.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8710
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"
DEFAULT_PERMANENT_TOKEN = "sandbox-permanent-token"

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_HOST",
    "DEFAULT_PERMANENT_TOKEN",
    "DEFAULT_PORT",
    "serve",
]


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    token_ttl_s: float | None = None,
    latency_ms: int = 0,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    permanent_token: str = DEFAULT_PERMANENT_TOKEN,
    log_bodies: bool = True,
) -> None:
    """Serve the sandbox until SIGTERM or SIGINT.

    Once listening it prints one JSON line on stdout,
    `{"event": "sandbox.started", "host": ..., "port": N, ...}`, with the real port when
    `port` is 0. Raises `OSError` when the address cannot be bound.
    """
    # Imported here so that importing the package (for its constants, or for the test
    # helpers) does not pay for aiohttp and the message models.
    from dispatcher.sandbox.server import run

    run(
        host,
        port,
        token_ttl_s=token_ttl_s,
        latency_ms=latency_ms,
        client_id=client_id,
        client_secret=client_secret,
        permanent_token=permanent_token,
        log_bodies=log_bodies,
    )
