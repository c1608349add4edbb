"""Real components on loopback: the exporter as a process, Prometheus."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.tlsutil import PKI

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(
    fn: Callable[[], T | None],
    timeout: float = 30.0,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``fn`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = fn()
        except (requests.RequestException, OSError) as e:
            last = e
        else:
            if result:
                return result
            last = result
        time.sleep(0.05)
    detail = on_timeout() if on_timeout is not None else ""
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{detail}")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed; `make test` installs it (Debian package)")
    return path


class Process:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=self._fh, stderr=subprocess.STDOUT, env=env or os.environ.copy()
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    procs: list[Process] = []

    def start(args: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        p = Process(args, tmp_path / f"{name}.log", env)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        p.stop()


def exporter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter.cli", *args]


def webhook_flags(pki: PKI, port: int) -> list[str]:
    """`run` flags for the webhook on loopback with mutual TLS from ``pki``."""
    return [
        "--webhook.listen-address", f"127.0.0.1:{port}",
        "--webhook.tls-cert-file", str(pki.server.cert_file),
        "--webhook.tls-key-file", str(pki.server.key_file),
        "--webhook.client-ca-file", str(pki.ca.cert_file),
    ]  # fmt: skip


def client_tls(pki: PKI) -> dict[str, Any]:
    """requests arguments for the API server's side of that mutual TLS.
    (Per request: requests lets REQUESTS_CA_BUNDLE override session.verify.)"""
    return {
        "verify": str(pki.ca.cert_file),
        "cert": (str(pki.client.cert_file), str(pki.client.key_file)),
    }


def run_alertmanager(
    spawn: Callable[..., Process], config_file: Path, data_dir: Path
) -> tuple[str, Process]:
    """Debian's Alertmanager on a loopback port with ``config_file``, alone
    (no cluster), ready: its URL and process."""
    binary = need("prometheus-alertmanager")
    port = free_port()
    proc = spawn(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        "alertmanager",
    )
    url = f"http://127.0.0.1:{port}"
    poll(
        lambda: proc.alive() and requests.get(f"{url}/-/ready", timeout=2).ok,
        what="alertmanager ready",
        on_timeout=proc.output,
    )
    return url, proc
