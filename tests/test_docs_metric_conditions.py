"""The README's metric list says which families appear only when a part is
enabled: every family it lists that a plain replay (no Loki, Alertmanager,
webhook or log file) does not expose is named in its conditions paragraph."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent


def test_every_conditional_family_is_named_with_its_condition(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `kube_audit_")]
    listed = {name for line in table for name in re.findall(r"`(kube_audit_\w+)`", line)}
    after = section.split(table[-1], 1)[1]
    conditions = after.split("\n\n")[1]
    assert "only where" in conditions
    prom = tmp_path / "replay.prom"
    subprocess.run(
        [sys.executable, "-m", "exporter", "replay", "--metrics-out", str(prom),
         str(CORPORA / "audit2rbac-demo" / "demo.log")],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    exposed = set(re.findall(r"^# TYPE (kube_audit_\w+) ", prom.read_text(), re.M))
    exposed |= {n + "_total" for n in exposed} | {n.removesuffix("_total") for n in exposed}
    hidden = sorted(n for n in listed if n not in exposed)
    assert hidden, "a plain replay exposes everything? the test lost its point"
    named = conditions.replace("\n", " ")
    for name in hidden:
        family = re.sub(r"^(kube_audit_[a-z]+)_.*", r"\1_*", name)
        suffix = "_" + name.split("_", 3)[-1] if name.count("_") > 2 else name
        assert name in named or family in named or suffix in named, (name, family)
