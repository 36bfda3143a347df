"""Production-shaped Redis for the suite: TLS with certificates made on the spot, and a
Sentinel group (one master, one replica, three sentinels) on free loopback ports.

Certificates come from the `openssl` command; the servers from Debian's `redis-server` and
`redis-sentinel` (Debian builds Redis with TLS).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from dispatcher.store.localredis import free_port

START_DEADLINE_S = 10.0
CERT_DAYS = "2"
SENTINEL_MASTER = "fleet"


def tls_available() -> str | None:
    """Why TLS tests cannot run here, or None when they can."""
    for command in ("openssl", "redis-server"):
        if shutil.which(command) is None:
            return f"no {command} on PATH"
    return None


def sentinel_available() -> str | None:
    """Why Sentinel tests cannot run here, or None when they can."""
    if shutil.which("redis-sentinel") is None or shutil.which("redis-server") is None:
        return "no redis-sentinel on PATH (apt-get install redis-sentinel)"
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by
    it, and a second CA that signed neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *curve, "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", CERT_DAYS, "-subj", f"/CN=dispatcher test {name}", cwd=folder,
        )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(
            "req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=dispatcher test {name}", cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", CERT_DAYS,
            "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip
    return Certificates(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.crt",
    )


def _wait(check: Callable[[], Any], what: str, deadline_s: float = START_DEADLINE_S) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            value = check()
        except redis.RedisError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class _Servers:
    """Processes started by a test, stopped (and their folder removed) on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dispatcher-fleet-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        self._processes.append(process)
        return process

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsRedis(_Servers):
    """A redis-server that speaks TLS only, with client certificates optional."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.certs = make_certificates(self.dir / "certs")

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.certs.ca))

    def __enter__(self) -> TlsRedis:
        try:
            self.spawn(
                "redis-server", "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                "--tls-cert-file", str(self.certs.server_cert),
                "--tls-key-file", str(self.certs.server_key),
                "--tls-ca-cert-file", str(self.certs.ca),
                "--tls-auth-clients", "optional",
            )  # fmt: skip
            probe = self.client()
            try:
                _wait(probe.ping, f"TLS redis-server on port {self.port}")
            finally:
                probe.close()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SentinelGroup(_Servers):
    """One master, one replica and three sentinels (quorum 2), all with one password."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self.password = password
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def sentinels(self) -> str:
        """DISPATCHER_REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    @property
    def url(self) -> str:
        """DISPATCHER_REDIS_URL: only the password and database count under Sentinel."""
        return f"redis://:{self.password}@{SENTINEL_MASTER}/0"

    def data_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=2)

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], socket_timeout=2)

    def master_port(self) -> int:
        client = self.sentinel_client()
        try:
            _host, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER
            )
            return int(port)
        finally:
            client.close()

    def role(self, port: int) -> str:
        client = self.data_client(port)
        try:
            return str(client.info("replication")["role"])
        finally:
            client.close()

    def _start_data(self, port: int, replica_of: int | None) -> None:
        folder = self.dir / f"redis-{port}"
        folder.mkdir()
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        self.spawn(
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder),
            "--logfile", str(folder / "redis.log"), "--requirepass", self.password,
            "--masterauth", self.password, *extra,
        )  # fmt: skip

    def _start_sentinel(self, port: int) -> None:
        folder = self.dir / f"sentinel-{port}"
        folder.mkdir()
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.data_ports[0]} 2\n"
            f"sentinel auth-pass {SENTINEL_MASTER} {self.password}\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        self.spawn("redis-sentinel", str(config))

    def _ready(self) -> bool:
        replica = self.data_client(self.data_ports[1])
        try:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        finally:
            replica.close()
        for index in range(len(self.sentinel_ports)):
            client = self.sentinel_client(index)
            try:
                replicas = client.execute_command("SENTINEL", "REPLICAS", SENTINEL_MASTER)
                others = client.execute_command("SENTINEL", "SENTINELS", SENTINEL_MASTER)
            finally:
                client.close()
            if len(replicas) < 1 or len(others) < len(self.sentinel_ports) - 1:
                return False
        return True

    def __enter__(self) -> SentinelGroup:
        try:
            master, replica = self.data_ports
            self._start_data(master, None)
            self._start_data(replica, master)
            for port in self.sentinel_ports:
                self._start_sentinel(port)
            # Sentinels find the replica and each other through the master; 30 s at most.
            _wait(self._ready, "the replica in sync and every sentinel seeing the others", 30)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def failover(self) -> None:
        """SENTINEL FAILOVER: promote the replica now, without waiting for the master to fail."""
        client = self.sentinel_client()
        try:
            client.execute_command("SENTINEL", "FAILOVER", SENTINEL_MASTER)
        finally:
            client.close()
