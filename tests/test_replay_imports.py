"""What ``replay`` imports: with the default configuration (no Loki, OTLP,
Alertmanager or state.url), none of the HTTP servers and clients, the
Redis client, multiprocessing or prometheus_client, which only ``run``
and the configured outputs need (they were a third of replay's start-up,
prometheus_client another sixth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "aiohttp",
    "requests",
    "redis",
    "multiprocessing.pool",
    "exporter.app",
    # the installed version (searched among every distribution) and the
    # audit policy tools: asked for by --version, build_info and `policy`
    "importlib.metadata",
    "exporter.policy.lint",
    # the metrics' exposition, only for a file to write (--metrics-out): it
    # imports http.server and was a sixth of the start-up
    "prometheus_client",
    # YAML: only for a configuration file, rule files of one's own, or the
    # shipped ones when their parsed copy cannot be used (a tenth of the
    # start-up)
    "yaml",
)

PROBE = f"""
import json, sys
from exporter.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def probe(tmp_path: Path, *argv: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def test_replay_and_check_config_start_without_the_servers_and_clients(
    tmp_path: Path, corpora: Path
) -> None:
    log = corpora / "audit2rbac-demo" / "demo.log"
    assert probe(tmp_path, "replay", "--output", "json", str(log)) == {"code": 0, "loaded": []}
    assert probe(tmp_path, "check-config", "--logfile.path", str(log)) == {
        "code": 0,
        "loaded": [],
    }


def test_replay_with_loki_imports_its_client(tmp_path: Path, corpora: Path) -> None:
    """The lazy import is not a missing one: a Loki URL brings the client
    (nothing listens there: replay gives up after its stall timeout)."""
    log = corpora / "audit2rbac-demo" / "demo.log"
    result = probe(
        tmp_path,
        "replay",
        "--output",
        "json",
        "--loki.url",
        "http://127.0.0.1:9/loki/api/v1/push",
        "--loki.stall-timeout",
        "1s",
        str(log),
    )
    assert result["code"] == 3  # EXIT_LOKI
    # the Loki client's User-Agent names the version: importlib.metadata too
    assert result["loaded"] == ["requests", "importlib.metadata", "prometheus_client"]


def test_a_configuration_file_brings_yaml(tmp_path: Path, corpora: Path) -> None:
    log = corpora / "audit2rbac-demo" / "demo.log"
    config = tmp_path / "config.yaml"
    config.write_text("metrics:\n  max_users: 50\n")
    result = probe(tmp_path, "replay", "--config.file", str(config), "--output", "json", str(log))
    assert result == {"code": 0, "loaded": ["yaml"]}


def test_replay_with_metrics_out_imports_prometheus_client(tmp_path: Path, corpora: Path) -> None:
    log = corpora / "audit2rbac-demo" / "demo.log"
    out = tmp_path / "metrics.prom"
    result = probe(tmp_path, "replay", "--output", "json", "--metrics-out", str(out), str(log))
    # kube_audit_build_info names the version: importlib.metadata too
    assert result == {"code": 0, "loaded": ["importlib.metadata", "prometheus_client"]}
    assert "kube_audit_requests_total{" in out.read_text()


def test_the_policy_package_names_what_it_exports_lazily() -> None:
    """exporter.policy imports a module when one of its names is first used:
    every exported name has its home, and each home really holds it."""
    import exporter.policy as policy
    from exporter.policy import evaluate as evaluate_function

    assert set(policy.__all__) - set(policy._HOMES) == {
        "Attributes", "Decision", "Evaluator", "User", "evaluate", "rule_matches",
    }  # fmt: skip
    for name in policy.__all__:
        assert getattr(policy, name) is not None
    # a function, also once every module of the package is imported
    assert callable(evaluate_function) and callable(policy.evaluate)


def test_the_version_is_read_when_asked_for() -> None:
    import exporter

    assert exporter.__version__ == exporter.package_version() != ""


def test_a_command_of_a_module_imports_that_module_alone(tmp_path: Path, corpora: Path) -> None:
    """`report` registers its own parser only: not the simulator's (with
    its HTTP client), the policy tools' or the rule tools'; help still
    lists every command."""
    log = corpora / "audit2rbac-demo" / "demo.log"
    others = ["exporter.simulate", "exporter.policy.cli", "exporter.detect.cli"]
    code = (
        "import json, sys\n"
        "from exporter.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(json.dumps([m for m in {others!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "report", "--output", str(tmp_path / "r.html"), str(log)],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert json.loads(out.splitlines()[-1]) == []
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    helped = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout.decode()
    for command in ("rules", "policy", "simulate", "report", "replay", "run"):
        assert command in helped
