from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from exporter.cli import build_parser, main
from exporter.config import OPTIONS, Config, ConfigError, load, parse_duration, parse_size


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["check-config", *argv])


def test_every_option_has_a_flag_an_env_var_and_help() -> None:
    keys = {o.key for o in OPTIONS}
    assert {"webhook.listen_address", "logfile.path", "web.listen_address", "cluster"} <= keys
    for o in OPTIONS:
        assert o.help, o.key
        assert o.flag.startswith("--") and "_" not in o.flag
        assert o.env.startswith("KUBE_AUDIT_") and o.env == o.env.upper()
    webhook = next(o for o in OPTIONS if o.key == "webhook.listen_address")
    assert webhook.flag == "--webhook.listen-address"
    assert webhook.env == "KUBE_AUDIT_WEBHOOK_LISTEN_ADDRESS"


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("cluster: from-file\nlogfile:\n  path: /from/file\n  poll_interval: 2s\n")
    env = {"KUBE_AUDIT_CLUSTER": "from-env", "KUBE_AUDIT_LOGFILE_PATH": "/from/env"}
    cfg = load(parse("--config.file", str(f), "--cluster", "from-flag"), env)
    assert cfg.cluster == "from-flag"
    assert cfg.logfile.path == "/from/env"
    assert cfg.logfile.poll_interval == 2.0
    assert cfg.webhook.path == Config().webhook.path


def test_config_file_from_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("logfile: {path: /x}\n")
    cfg = load(parse(), {"KUBE_AUDIT_CONFIG_FILE": str(f)})
    assert cfg.logfile.path == "/x"


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "webhook:\n  listen_address: nowhere\n  max_connections: 0\n  bogus: 1\n"
        "events: {max_bytes: lots}\nunknown_top: 1\nlog: {format: xml}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(parse("--config.file", str(f)), {"KUBE_AUDIT_WEBHOOK_READ_TIMEOUT": "soon"})
    text = str(info.value)
    for expected in (
        "webhook.listen_address: 'nowhere' is not host:port",
        "webhook.max_connections: must be >= 1",
        "webhook.bogus: unknown key",
        "events.max_bytes: 'lots' is not a size",
        "unknown_top: unknown key",
        "log.format: must be one of logfmt, json",
        "webhook.read_timeout: 'soon' is not a duration",
        "(from KUBE_AUDIT_WEBHOOK_READ_TIMEOUT)",
    ):
        assert expected in text, text


def test_yaml_errors_are_located(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("webhook:\n  path: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load(parse("--config.file", str(f)), {})
    assert f"{f}:3:1" in str(info.value) or f"{f}:2:" in str(info.value)


def test_webhook_needs_tls_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a certificate and key"):
        load(parse("--webhook.listen-address", ":8443"), {})
    cfg = load(parse("--webhook.listen-address", ":8443", "--webhook.insecure"), {})
    assert cfg.webhook.insecure is True
    with pytest.raises(ConfigError, match="client_ca_file: cannot read"):
        load(parse("--webhook.listen-address", ":8443", "--webhook.insecure",
                   "--webhook.client-ca-file", str(tmp_path / "missing.pem")), {})  # fmt: skip


def test_sizes_and_durations() -> None:
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("64Mi") == 64 << 20
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1m30s") == 90
    assert parse_duration("2") == 2.0


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.cluster = "x"  # type: ignore[misc]


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--logfile.path", str(tmp_path / "audit.log")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check-config"]) == 1  # no source
    assert "no source configured" in capsys.readouterr().err
    assert main(["check-config", "--webhook.listen-address", "x"]) == 1
    err = capsys.readouterr().err
    assert "webhook.listen_address" in err and "Traceback" not in err


def test_loki_problems_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = str(tmp_path / "audit.log")
    assert main(["check-config", "--logfile.path", log, "--loki.url", "http://loki:3100"]) == 1
    assert "spool.dir: required with loki.url" in capsys.readouterr().err
    argv = ["check-config", "--logfile.path", log, "--spool.dir", str(tmp_path)]
    bad = ["--loki.url", "ftp://x", "--loki.labels", "user", "--loki.headers", "NoEquals",
           "--loki.backoff-max", "10ms"]  # fmt: skip
    assert main([*argv, *bad]) == 1
    err = capsys.readouterr().err
    assert "loki.url: must be an http:// or https:// URL" in err
    assert "loki.labels: 'user' is not a bounded field" in err
    assert "loki.headers: 'NoEquals' is not name=value" in err
    ok = ["--loki.url", "http://loki:3100", "--loki.headers", "X-A=1", "--loki.headers", "X-B=2",
          "--loki.redact-paths", "configmaps=requestObject.data.password"]  # fmt: skip
    assert main([*argv, *ok, "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["loki.headers"] == ["X-A=1", "X-B=2"]


def test_secrets_in_urls_are_not_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = str(tmp_path / "a.log")
    url = "https://user:hunter2@loki.example:3100"
    am = "http://admin:swordfish@am.example:9093"
    argv = ["check-config", "--logfile.path", log, "--spool.dir", str(tmp_path),
            "--loki.url", url, "--alertmanager.url", am, "--alertmanager.url",
            "http://am-2:9093", "--show"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "loki.example:3100" in out
    assert "swordfish" not in out and "am.example:9093" in out and "am-2:9093" in out
