"""Binding a listening socket before an event loop starts, so a taken or invalid address is
reported in one line instead of a traceback from deep inside aiohttp."""

from __future__ import annotations

import socket


def bind_listener(host: str, port: int) -> socket.socket:
    """A bound TCP socket for `host:port` (port 0: any free one); raises `OSError`."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
