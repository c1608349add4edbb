"""Debian's redis-server on loopback, on a free port, for the shared state
tests: started, killed (SIGKILL, as a crash) and started again on the same
port, with nothing persisted between its lives."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """``tls``: (certificate, key, CA) files to serve TLS only (rediss://);
    ``unix``: serve a unix socket only (unix://); ``password``: required
    (in the URL's user part)."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        unix: bool = False,
        password: str = "",
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; `make test` installs it (Debian package)")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.tls = tls
        self.password = password
        self.socket = workdir / "redis.sock" if unix else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}?db=0"
        scheme = "rediss" if self.tls is not None else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        if self.socket is not None:
            return ["--port", "0", "--unixsocket", str(self.socket)]
        if self.tls is not None:
            cert, key, ca = self.tls
            return [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return ["--port", str(self.port)]

    def _auth_args(self) -> list[str]:
        return ["--requirepass", self.password] if self.password else []

    def start(self) -> None:
        self.lives += 1
        log = self.workdir / f"redis-{self.lives}.log"
        args = [
            self.binary,
            *self._listen_args(),
            *self._auth_args(),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(
                            f"redis-server did not start: {log.read_text(errors='replace')}"
                        ) from None
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server vanishes with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> redis.Redis:
        extra = {"ssl_ca_certs": str(self.tls[2])} if self.tls is not None else {}
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2, **extra)


def running_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """The body of a test module's ``redis_server`` fixture."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
