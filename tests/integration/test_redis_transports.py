"""state.url's other transports, against Debian's redis-server: TLS
(rediss://, verified with state.tls_ca_file) and a unix socket (unix://),
configured as a user would, through the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import build_parser
from exporter.config import load, state_settings
from exporter.state import Observation, RuleSpec
from exporter.state.redis_store import RedisStore
from tests.redis_server import RedisServer
from tests.tlsutil import make_ca, make_pki

SPEC = RuleSpec("burst", "threshold", 60.0, count=3)


def store_for(*flags: str) -> RedisStore:
    cfg = load(build_parser().parse_args(["run", *flags]), {})
    return RedisStore(state_settings(cfg))


def burst(store: RedisStore) -> list[bool] | None:
    return store.observe(
        [Observation(SPEC, ("203.0.113.9",), 100.0 + i, member=str(i)) for i in range(4)]
    )


@pytest.mark.parametrize("transport", ["tls", "unix"])
def test_state_over_tls_and_a_unix_socket(tmp_path: Path, transport: str) -> None:
    pki = make_pki(tmp_path / "pki")
    if transport == "tls":
        tls = (pki.server.cert_file, pki.server.key_file, pki.ca.cert_file)
        server = RedisServer(tmp_path, tls=tls)
        flags = ["--state.url", server.url, "--state.tls-ca-file", str(pki.ca.cert_file)]
        assert server.url.startswith("rediss://")
    else:
        server = RedisServer(tmp_path, unix=True)
        flags = ["--state.url", server.url]
        assert server.url.startswith("unix://")
    server.start()
    try:
        store = store_for(*flags)
        assert store.check()
        assert burst(store) == [False, False, True, False]
        assert store.seen([("a", "ResponseComplete", 1.0)]) == set()
        assert store.remember([("a", "ResponseComplete", 1.0)])
        assert store.seen([("a", "ResponseComplete", 1.0)]) == {("a", "ResponseComplete", 1.0)}
        store.close()
    finally:
        server.kill()


def test_a_tls_server_its_ca_does_not_vouch_for_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_ca(tmp_path / "other", "someone-else")
    server = RedisServer(
        tmp_path, tls=(pki.server.cert_file, pki.server.key_file, pki.ca.cert_file)
    )
    server.start()
    try:
        store = store_for(
            "--state.url", server.url, "--state.tls-ca-file", str(other.cert_file)
        )  # fmt: skip
        assert not store.check()
        assert burst(store) is None  # not shared: the caller uses its memory
        assert not store.up
        assert store.failed["connect"] == 1
    finally:
        server.kill()
