"""Azurite, Microsoft's Azure Storage emulator (npm, installed by `make test`
into tests/azurite/node_modules), started on a free loopback port with its
data in memory, for the AKS archive and the Event Hubs checkpoint store."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / "tests" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account and key (public, not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LISTENING = re.compile(rb"listens on (http://127\.0\.0\.1:\d+)")


class Azurite:
    def __init__(self, endpoint: str) -> None:
        self.account_url = f"{endpoint}/{ACCOUNT}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.account_url};"
        )


@contextmanager
def azurite(workdir: Path, deadline: float = 60.0) -> Iterator[Azurite]:
    """A running Azurite blob service; stopped on exit."""
    if not AZURITE.exists():
        pytest.fail("Azurite is not installed: run `npm ci --prefix tests/azurite` (make test)")
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
         "--skipApiVersionCheck", "--loose"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = b""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"Azurite exited: {seen.decode(errors='replace')}")
            seen += line
            m = LISTENING.search(line)
            if m:
                # keep draining its output, so that it never blocks on a full pipe
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                yield Azurite(m.group(1).decode())
                return
        pytest.fail(f"Azurite did not start within {deadline}s: {seen!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
