"""Every configuration problem names where the value came from: the file's
line and column, the flag or the environment variable; unknown keys get a
"did you mean"; a busy port names the address and its option."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exporter.app import App
from exporter.cli import build_parser
from exporter.config import ConfigError, load


def problems(tmp_path: Path, text: str, *flags: str) -> list[str]:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    args = build_parser().parse_args(["check-config", "--config.file", str(f), *flags])
    with pytest.raises(ConfigError) as info:
        load(args, {})
    return info.value.problems


def test_a_wrong_type_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "cluster: demo\nloki:\n  url: http://loki\n  batch_bytes: [1]\n")
    assert any(p.startswith("loki.batch_bytes: [1] is not a size") for p in found), found
    assert any(p.endswith(f"(from {tmp_path / 'c.yaml'}:4:3)") for p in found), found


def test_an_unknown_key_names_its_line_and_the_nearest_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "loki:\n  url: http://x\n  bach_wait: 1s\nmetrix: {}\n")
    f = tmp_path / "c.yaml"
    assert f"loki.bach_wait: unknown key (from {f}:3:3); did you mean loki.batch_wait?" in found
    assert f"metrix: unknown key (from {f}:4:1); did you mean metrics?" in found


def test_a_bad_cidr_names_the_file_line_and_column_of_the_item(tmp_path: Path) -> None:
    found = problems(
        tmp_path, "detect:\n  trusted_networks:\n    - 192.0.2.0/24\n    - 10.8.0.0/33\n"
    )
    f = tmp_path / "c.yaml"
    bad = [p for p in found if p.startswith("detect.trusted_networks[1]:")]
    assert bad and bad[0].endswith(f"(from {f}:4:7)"), found


def test_a_bad_cidr_from_a_flag_names_the_flag(tmp_path: Path) -> None:
    found = problems(tmp_path, "cluster: x\n", "--detect.pod-cidrs", "10.0.0.0/99")
    bad = [p for p in found if p.startswith("detect.pod_cidrs[0]:")]
    assert bad and bad[0].endswith("(from --detect.pod-cidrs)"), found


def test_a_busy_port_names_the_address_and_option(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        args = build_parser().parse_args(
            ["run", "--web.listen-address", address, "--logfile.path", str(log)]
        )
        with pytest.raises(OSError) as info:
            App(load(args, {}))
    assert str(info.value).startswith(f"cannot listen on {address} (web.listen_address): ")
