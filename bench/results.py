"""What every benchmark does at the end: its rows as JSON, its work folder gone."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


def finish(rows: Sequence[Any], json_path: str, work: Path, keep: bool) -> None:
    """Write ``rows`` (dataclasses with a ``rate``) to ``json_path`` when set,
    and remove ``work`` unless ``keep``."""
    if json_path and rows:
        doc = [{**asdict(r), "events_per_second": round(r.rate)} for r in rows]
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
    if keep:
        print(f"kept {work}", file=sys.stderr)
        return
    for p in sorted(work.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    work.rmdir()
