"""Series and Loki streams after made-up label values: this tree against a
baseline commit, same script, same events.

    python bench/labels.py [--events N] [--baseline REV]

Feeds N events whose verb, resource, API group, namespace, code, audit level
and admission webhook name are all made up (as a client without permission
can make them, plus a garbage code and level) through the real decoder and
pipeline, then prints the number of series per metric family, the size of
/metrics and the number of Loki streams (with every extra stream label a
label bound applies to). The baseline (default: the commit before
exporter/labels.py was added) is extracted with ``git archive`` and measured
in a subprocess with the same script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_714_557_700.0
LOKI_LABELS = ("resource", "namespace", "api_group", "audit_level")
# Codes a client cannot choose, but a damaged log can hold.
GARBAGE_CODES = (299, 600, 999, 42, 1234567)


def _letters(i: int, width: int = 5) -> str:
    out = []
    for _ in range(width):
        i, r = divmod(i, 26)
        out.append(chr(97 + r))
    return "".join(out)


def made_up_event(i: int, permitted: bool = True) -> dict[str, Any]:
    """Event ``i`` of the made-up series: every client-chosen label value new.

    Most are answered 403 or 401 (what a client without permission gets);
    one in ten is answered 200 (a client with permission) and one in ten has
    a garbage code; one in five a made-up audit level. Without ``permitted``
    the one in ten is answered 403 too."""
    word = _letters(i)
    code = (403, 403, 401, 403, 200 if permitted else 403, 403, 403, 401, 403, 0)[i % 10]
    if code == 0:
        code = GARBAGE_CODES[(i // 10) % len(GARBAGE_CODES)]
    ref: dict[str, Any] = {
        "resource": f"madeup{word}s",
        "namespace": f"ns-{word}",
        "apiGroup": f"{word}.example.com",
        "apiVersion": "v1",
    }
    if i % 3 == 0:
        ref["subresource"] = f"sub{word}"
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": f"Level{word}" if i % 5 == 0 else "Metadata",
        "auditID": f"made-up-{i}",
        "stage": "ResponseComplete",
        "requestURI": f"/apis/{word}.example.com/v1/namespaces/ns-{word}/madeup{word}s",
        "verb": f"x{word}",
        "user": {"username": f"user-{i % 3}", "groups": ["system:authenticated"]},
        "sourceIPs": [f"198.51.100.{i % 7}"],
        "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
        "annotations": {
            "failed-open.validating.webhook.admission.k8s.io/round_0_index_0": json.dumps(
                {"name": f"hook-{word}.example.com", "operation": "CREATE"}
            )
        },
        "requestReceivedTimestamp": "2024-05-01T10:00:00.100000Z",
        "stageTimestamp": "2024-05-01T10:00:00.350000Z",
    }


def made_up_events(n: int, permitted: bool = True) -> list[dict[str, Any]]:
    return [made_up_event(i, permitted) for i in range(n)]


def series_by_family(exposition: str) -> Counter[str]:
    """Samples (series) per metric family of a text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return Counter({f.name: len(f.samples) for f in text_string_to_metric_families(exposition)})


def measure(n: int, permitted: bool = True) -> dict[str, Any]:
    """The figures for the ``exporter`` package on sys.path."""
    import orjson
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.event import AuditEvent, Decoder
    from exporter.loki.entry import EntryBuilder
    from exporter.loki.settings import LokiSettings
    from exporter.metrics import AuditMetrics
    from exporter.pipeline import Pipeline

    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    before = series_by_family(generate_latest(registry).decode())
    pipeline = Pipeline(metrics, clock=lambda: NOW)
    body = b"\n".join(orjson.dumps(o) for o in made_up_events(n, permitted))
    items = list(Decoder().decode_document(body))
    events = [e for e in items if isinstance(e, AuditEvent)]
    pipeline.process(events, "replay")
    text = generate_latest(registry).decode()
    after = series_by_family(text)
    builder = EntryBuilder(LokiSettings(url="http://127.0.0.1:9/", labels=LOKI_LABELS))
    streams = {builder.labels(e) for e in events}
    return {
        "events": len(events),
        "series_before": sum(before.values()),
        "series_after": sum(after.values()),
        "families": dict(after.most_common(8)),
        "metrics_bytes": len(text.encode()),
        "loki_streams": len(streams),
    }


def baseline_rev() -> str:
    """The commit before exporter/labels.py was added."""
    out = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "exporter/labels.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not out:
        raise SystemExit("exporter/labels.py is not committed: pass --baseline REV")
    return out[-1] + "^"


def measure_baseline(rev: str, n: int, permitted: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        archive = Path(tmp) / "tree.tar"
        subprocess.run(
            ["git", "archive", "--format=tar", "-o", str(archive), rev, "exporter"],
            cwd=ROOT,
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        env = dict(os.environ, PYTHONPATH=tmp, KUBE_AUDIT_BENCH_BASELINE="1")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--events",
                str(n),
                "--json",
                *([] if permitted else ["--refused-only"]),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--baseline", default="")
    ap.add_argument("--json", action="store_true", help="measure this tree only, print JSON")
    ap.add_argument(
        "--refused-only",
        action="store_true",
        help="every request refused (401/403): a client without any permission",
    )
    args = ap.parse_args()
    if not os.environ.get("KUBE_AUDIT_BENCH_BASELINE") and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.json:
        print(json.dumps(measure(args.events, not args.refused_only)))
        return 0
    rev = args.baseline or baseline_rev()
    rows = [
        (f"baseline {rev}", measure_baseline(rev, args.events, not args.refused_only)),
        ("this tree", measure(args.events, not args.refused_only)),
    ]
    who = "all refused" if args.refused_only else "one in ten answered 200"
    print(f"{args.events} events, every client-chosen label value made up, {who}")
    print(f"{'':>28} {'series':>8} {'/metrics':>12} {'loki streams':>13}")
    for name, r in rows:
        print(
            f"{name[:28]:>28} {r['series_after']:>8} {r['metrics_bytes']:>10} B "
            f"{r['loki_streams']:>13}   (series at start: {r['series_before']})"
        )
    for name, r in rows:
        print(f"{name}: largest families {r['families']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
