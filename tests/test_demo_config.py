"""The bundled demo configuration stands on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_config_passes_check_config_by_itself() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config.file", "demo/config.yaml"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "configuration is valid"
