#!/usr/bin/env python3
"""Render the monitoring mixin into dashboards/out/ and the Helm chart's files/.

    python dashboards/generate.py           format the jsonnet, write every file
    python dashboards/generate.py --check   change nothing; exit 1 when a
                                            generated file or the formatting
                                            is out of date

Outputs (the same bytes in dashboards/out/ and helm/kube-audit-exporter/files/):

    dashboards/<name>.json    Grafana dashboards
    prometheus/alerts.yaml    Prometheus alerting rules (a rule file: groups)
    prometheus/rules.yaml     Prometheus recording rules
    loki/rules.yaml           Loki ruler alerts (LogQL), for the loki_rule sidecar
    alertmanager/inhibit-rules.yaml
                              Alertmanager inhibit_rules: a detection
                              notification mutes the mixin alert saying the same

Rendering uses the ``jsonnet`` wheel; formatting uses ``jsonnetfmt`` (Debian
package ``jsonnet``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import _jsonnet
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
HELM_FILES = REPO / "helm" / "kube-audit-exporter" / "files"
# The directories this script owns, in out/ and in the chart's files/.
GENERATED_DIRS = ("dashboards", "prometheus", "loki", "alertmanager")

NOTE = (
    "Generated from dashboards/*.libsonnet by `make generate` "
    "(dashboards/generate.py); do not edit."
)
RULE_KEYS = ("alert", "record", "expr", "for", "labels", "annotations")


def jsonnet_sources() -> list[Path]:
    return sorted(
        p
        for p in HERE.rglob("*")
        if p.suffix in (".libsonnet", ".jsonnet") and OUT not in p.parents
    )


def render(override: str = "{}") -> dict[str, Any]:
    """The mixin's outputs, with ``override`` (jsonnet) mixed in last, e.g.
    ``{ _config+:: { alerts+: { KubeAuditExporterDown+: { 'for': '0s' } } } }``."""
    snippet = f"""
        local mixin = (import 'mixin.libsonnet') + ({override});
        {{
          prometheusAlerts: mixin.prometheusAlerts,
          prometheusRules: mixin.prometheusRules,
          lokiRules: mixin.lokiRules,
          alertmanagerInhibitRules: mixin.alertmanagerInhibitRules,
          grafanaDashboards: mixin.grafanaDashboards,
        }}
    """
    out: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet(str(HERE / "render.jsonnet"), snippet)
    )
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings (PromQL, LogQL) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _rule_file(doc: dict[str, Any]) -> str:
    groups = [
        {
            "name": group["name"],
            "rules": [{k: rule[k] for k in RULE_KEYS if k in rule} for rule in group["rules"]],
        }
        for group in doc["groups"]
    ]
    body = yaml.dump(
        {"groups": groups},
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return f"# {NOTE}\n{body}"


def _yaml_file(doc: dict[str, Any]) -> str:
    body = yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return f"# {NOTE}\n{body}"


def _dashboard(doc: dict[str, Any]) -> str:
    return json.dumps({"__comment": NOTE, **doc}, indent=2, ensure_ascii=False) + "\n"


def outputs(override: str = "{}") -> dict[str, str]:
    """Relative path -> file content, for every generated file."""
    mixin = render(override)
    files = {
        "prometheus/alerts.yaml": _rule_file(mixin["prometheusAlerts"]),
        "prometheus/rules.yaml": _rule_file(mixin["prometheusRules"]),
        "loki/rules.yaml": _rule_file(mixin["lokiRules"]),
        "alertmanager/inhibit-rules.yaml": _yaml_file(mixin["alertmanagerInhibitRules"]),
    }
    for name, dashboard in sorted(mixin["grafanaDashboards"].items()):
        files[f"dashboards/{name}"] = _dashboard(dashboard)
    return files


def _existing(root: Path) -> set[str]:
    found = set()
    for d in GENERATED_DIRS:
        base = root / d
        if base.is_dir():
            found.update(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
    return found


def differences(files: dict[str, str]) -> list[str]:
    """What writing ``files`` would change, as readable lines."""
    problems = []
    for root in (OUT, HELM_FILES):
        for rel, text in sorted(files.items()):
            path = root / rel
            if not path.is_file():
                problems.append(f"{path.relative_to(REPO)}: missing")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{path.relative_to(REPO)}: out of date")
        for rel in sorted(_existing(root) - set(files)):
            problems.append(f"{(root / rel).relative_to(REPO)}: no longer generated")
    return problems


def write(files: dict[str, str]) -> None:
    for root in (OUT, HELM_FILES):
        for rel in _existing(root) - set(files):
            (root / rel).unlink()
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")


def jsonnetfmt(check: bool) -> list[str]:
    """Format the sources in place, or list those jsonnetfmt would change."""
    binary = shutil.which("jsonnetfmt")
    if binary is None:
        raise SystemExit("jsonnetfmt is missing: install the Debian package `jsonnet`")
    problems = []
    for path in jsonnet_sources():
        if check:
            r = subprocess.run([binary, "--test", str(path)], capture_output=True, check=False)
            if r.returncode != 0:
                problems.append(f"{path.relative_to(REPO)}: not formatted (jsonnetfmt)")
        else:
            subprocess.run([binary, "-i", str(path)], check=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = jsonnetfmt(check=True) + differences(outputs())
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run `make generate` and commit the result", file=sys.stderr)
            return 1
        return 0
    jsonnetfmt(check=False)
    files = outputs()
    write(files)
    print(
        f"wrote {len(files)} files to {OUT.relative_to(REPO)}/ and {HELM_FILES.relative_to(REPO)}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
