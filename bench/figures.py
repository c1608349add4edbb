"""The benchmark figures in one place: ``python bench/figures.py``, the last
step of ``make bench``.

It reads the JSON that bench/run.py, bench/loki.py and bench/detect.py wrote
in the same ``make bench`` run, keeps it with the date and the machine in
bench/figures.json (committed), and renders it into bench/README.md (the
"Figures" section between the markers) and into the short quote of it in
README.md's Performance section. ``--render`` renders again from
bench/figures.json without new figures. tests/test_bench_figures.py checks
that both READMEs say what bench/figures.json holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FIGURES = BENCH / "figures.json"
BENCH_README = BENCH / "README.md"
README = ROOT / "README.md"
BEGIN = "<!-- figures: begin (written by bench/figures.py from bench/figures.json; do not edit) -->"
END = "<!-- figures: end -->"

REPLAY_TARGET = 100_000  # events/s, one core (bench/run.py)
WEBHOOK_TARGET = 30_000  # events/s
RSS_TARGET_MB = 200.0
LOKI_TARGET = 50.0  # times python-logging-loki (bench/loki.py)


# --- collecting ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        # which build: the interpreter's speed on Python code differs between
        # builds of one version (the venv's base interpreter)
        "python_executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        # the decoder's fast path in C (exporter._speedups) or in Python
        "speedups": _speedups(),
        "system": f"{platform.system()} {platform.release()}",
        # when the figures were collected: the machine may be shared
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def collect(run: Path, loki: Path, detect: Path, scale: Path | None = None) -> dict[str, Any]:
    def rows(path: Path) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(path.read_text())
        return data

    fig = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "run": rows(run),
        "loki": rows(loki),
        "detect": json.loads(detect.read_text()),
    }
    if scale is not None:
        fig["scale"] = rows(scale)  # bench/scale.py
    return fig


RATIO_TARGET = 0.3  # replay / orjson.loads loop, one core (bench/scale.py)
JOBS_TARGET = 1.7  # replay --jobs 2 / --jobs 1


def _pair(fig: dict[str, Any], group: str) -> float | None:
    """The second row's rate over the first's in a bench/scale.py group."""
    rows = [r for r in fig.get("scale", []) if r["group"] == group]
    if len(rows) != 2 or not _rate(rows[0]):
        return None
    return _rate(rows[1]) / _rate(rows[0])


def _scaling(fig: dict[str, Any]) -> str:
    """One sentence of bench/scale.py's ratios ("" without them)."""
    if "scale" not in fig:
        return ""

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    meta, bodies = _pair(fig, "ratio-metadata"), _pair(fig, "ratio-bodies")
    jobs, workers = _pair(fig, "jobs"), _pair(fig, "workers")
    return (
        f"Scaling (`bench/scale.py`): `replay` on one core runs at {x(meta)} of a bare "
        f"`orjson.loads` loop over small Metadata-level events and {x(bodies)} over "
        f"body-heavy ones (target {RATIO_TARGET}); `replay --jobs 2` runs {x(jobs)} times "
        f"`--jobs 1` (target {JOBS_TARGET}); `run --workers 2` takes {x(workers)} times "
        f"the events of `--workers 1`, its client on the same two CPUs."
    )


# --- rendering -------------------------------------------------------------------------------


def _rate(row: dict[str, Any]) -> float:
    return float(row["events"]) / float(row["seconds"]) if row["seconds"] else 0.0


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _ratio(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if row["baseline"]:
        return "baseline"
    base = next((r for r in rows if r["baseline"]), None)
    if base is None or not _rate(base):
        return ""
    return f"{_rate(row) / _rate(base):.1f}x"


def _group(fig: dict[str, Any], group: str) -> list[dict[str, Any]]:
    return [r for r in fig["run"] if r["group"] == group]


def _named(rows: list[dict[str, Any]], start: str) -> dict[str, Any]:
    return next(r for r in rows if r["name"].startswith(start))


def _verdicts(fig: dict[str, Any]) -> str:
    replay = [r for r in _group(fig, "replay") if not r["baseline"]]
    webhook = [r for r in _group(fig, "webhook") if not r["baseline"]]
    # Rows behind a simulated round trip compare parallel pushes with one.
    sinks = [r for r in fig["loki"] if not r["baseline"] and not r.get("latency_ms")]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    slowest_replay = min(_rate(r) for r in replay)
    slowest_webhook = min(_rate(r) for r in webhook)
    peak = max(r["peak_rss_mb"] for r in replay + webhook)
    loki = min(float(_ratio(r, fig["loki"]).rstrip("x")) for r in sinks)
    return (
        f"Targets: replay >= {_n(REPLAY_TARGET)} events/s on one core "
        f"({met(slowest_replay >= REPLAY_TARGET)}: {_n(slowest_replay)}), webhook >= "
        f"{_n(WEBHOOK_TARGET)} events/s ({met(slowest_webhook >= WEBHOOK_TARGET)}: "
        f"{_n(slowest_webhook)}), peak RSS <= {RSS_TARGET_MB:.0f} MB "
        f"({met(peak <= RSS_TARGET_MB)}: {peak:.0f} MB), the Loki path >= "
        f"{LOKI_TARGET:.0f}x python-logging-loki ({met(loki >= LOKI_TARGET)}: {loki:.1f}x)."
    )


def _speedups() -> bool:
    """Whether the benchmarked commands run exporter._speedups: they run
    in processes of their own, with this environment."""
    code = "import exporter.event as e; print(e.SPEEDUPS)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip() == "True"


def _executable(m: dict[str, Any]) -> str:
    where = f" ({m['python_executable']})" if m.get("python_executable") else ""
    if "speedups" in m:
        where += ", decoder fast path in " + ("C" if m["speedups"] else "Python")
    return where


def _where(fig: dict[str, Any]) -> str:
    m = fig["machine"]
    load = "/".join(f"{x:g}" for x in m["load_average"])
    return (
        f"one `make bench` run, {fig['date']}, on {m['cpus']} CPUs ({m['cpu_model']}), "
        f"Python {m['python']}{_executable(m)}, {m['system']}; "
        f"load average {load} (1/5/15 min) as it ended"
    )


def _busy(fig: dict[str, Any]) -> bool:
    """Other work held the CPUs during the run: the 1- or 5-minute load
    average above the CPU count as it ended (the 15-minute one reaches back
    before a short run)."""
    m = fig["machine"]
    return max(m["load_average"][:2]) > m["cpus"]


def _caveat(fig: dict[str, Any]) -> str:
    if _busy(fig):
        return (
            "Other work kept this shared machine busy during the run (a load average "
            "above its CPU count), so every figure is well below what the code does on "
            "an idle machine: compare rows of this run with each other, not with other "
            "runs."
        )
    return (
        "The machine is shared: other work on it moves these figures by 10-20 % from "
        "run to run, the baselines' with them."
    )


def render_bench(fig: dict[str, Any]) -> str:
    """The Figures section of bench/README.md."""
    out = [
        f"From {_where(fig)}. {_caveat(fig)}",
        "",
        "Replay and webhook (`bench/run.py`):",
        "",
        "| run | events | seconds | events/s | peak RSS, MB | CPU s | vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group in ("generate", "replay", "webhook"):
        rows = _group(fig, group)
        for r in rows:
            ratio = _ratio(r, rows) if group != "generate" else ""
            out.append(
                f"| {group}: {r['name']} | {_n(r['events'])} | {r['seconds']:.2f} | "
                f"{_n(_rate(r))} | {r['peak_rss_mb']:.1f} | {r['cpu_seconds']:.2f} | {ratio} |"
            )
    out += [
        "",
        "The Loki path (`bench/loki.py`):",
        "",
        "| sender | events | events/s | CPU s | RSS at start / peak, MB | vs baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in fig["loki"]:
        out.append(
            f"| {r['name']} | {_n(r['events'])} | {_n(_rate(r))} | {r['cpu_seconds']:.2f} | "
            f"{r['input_rss_mb']:.1f} / {r['peak_rss_mb']:.1f} | {_ratio(r, fig['loki'])} |"
        )
    decode = [r["decode_us"] for r in fig["loki"] if r.get("decode_us")]
    if decode:
        out += [
            "",
            f"Decoding the Loki benchmark's input beforehand (`Decoder.decode_line`, timed "
            f"apart): {min(decode):.1f} µs an event.",
        ]
    d = fig["detect"]
    if "scale" in fig:
        out += [
            "",
            "Scaling (`bench/scale.py`):",
            "",
            "| run | events | seconds | events/s | peak RSS, MB | CPU s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in fig["scale"]:
            out.append(
                f"| {r['name']} | {_n(r['events'])} | {r['seconds']:.2f} | {_n(_rate(r))} | "
                f"{r['peak_rss_mb']:.1f} | {r['cpu_seconds']:.2f} |"
            )
        out += ["", _scaling(fig)]
    out += [
        "",
        f"Detection (`bench/detect.py`: {_n(d['lines'])} lines of {', '.join(d['files'])}, "
        f"{d['rules']} default rules, best of three rounds, one core): "
        f"{_n(d['events_per_second_without_detection'])} events/s without detection, "
        f"{_n(d['events_per_second_with_detection'])} with "
        f"({_n(d['rule_matches'])} rule matches); {_detection_cost(d)}, the detector "
        f"alone {d['detector_alone_us_per_event']:.2f} µs an event.",
        "",
        _verdicts(fig),
    ]
    return "\n".join(out)


def _detection_cost(d: dict[str, Any]) -> str:
    cost = float(d["detection_us_per_event"])
    if cost <= 0:
        # with detection ran faster than without: other work on the machine
        # moved the two apart by more than detection costs
        return "the pipeline's cost of detection was lost in the machine's noise in this run"
    return f"detection costs {cost:.2f} µs an event in the pipeline"


def render_quote(fig: dict[str, Any]) -> str:
    """README.md's quote of the figures, pointing to bench/README.md."""
    replay = _group(fig, "replay")
    webhook = _group(fig, "webhook")
    cli = _named(replay, "kube-audit-exporter replay")
    lib = _named(replay, "library path")
    naive = next(r for r in replay if r["baseline"])
    run = _named(webhook, "kube-audit-exporter run")
    naive_server = next(r for r in webhook if r["baseline"])
    d = fig["detect"]
    out = [
        f"From {_where(fig)}; every figure of that run, and how each is measured, is in "
        f"[bench/README.md](bench/README.md#figures). {_caveat(fig)}",
        "",
        "| run | events/s | peak RSS | naive baseline |",
        "|---|---:|---:|---:|",
        f"| `kube-audit-exporter replay` (redaction, every default rule, report), one core "
        f"| {_n(_rate(cli))} | {cli['peak_rss_mb']:.0f} MB | {_n(_rate(naive))} |",
        f"| library path (decode + dedupe + metrics), one core | {_n(_rate(lib))} "
        f"| {lib['peak_rss_mb']:.0f} MB | |",
        f"| `kube-audit-exporter run`, webhook over mutual TLS (redaction, detection) "
        f"| {_n(_rate(run))} | {run['peak_rss_mb']:.0f} MB | {_n(_rate(naive_server))} |",
    ]
    for r in fig["loki"]:
        if not r["baseline"]:
            out.append(
                f"| Loki: {r['name']} | {_n(_rate(r))} | {r['peak_rss_mb']:.0f} MB "
                f"({r['input_rss_mb']:.0f} holding the decoded input) "
                f"| {_ratio(r, fig['loki'])} python-logging-loki |"
            )
    out += [
        "",
        f"Detection with every default rule: {_detection_cost(d)} "
        f"({_n(d['events_per_second_with_detection'])} events/s with it, "
        f"{_n(d['events_per_second_without_detection'])} without, on the real corpora); "
        f"the detector alone {d['detector_alone_us_per_event']:.2f} µs an event.",
    ]
    if "scale" in fig:
        out += ["", _scaling(fig)]
    out += ["", _verdicts(fig)]
    return "\n".join(out)


def section(text: str) -> str:
    """What stands between the markers in ``text``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError("the figures markers must appear once each")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def splice(text: str, body: str) -> str:
    section(text)  # both markers, once each
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def render_files(fig: dict[str, Any]) -> None:
    for path, body in ((BENCH_README, render_bench(fig)), (README, render_quote(fig))):
        path.write_text(splice(path.read_text(), body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=BENCH / "results.json")
    parser.add_argument("--loki", type=Path, default=BENCH / "results-loki.json")
    parser.add_argument("--detect", type=Path, default=BENCH / "results-detect.json")
    parser.add_argument("--scale", type=Path, default=None, help="bench/scale.py's JSON")
    parser.add_argument(
        "--render", action="store_true", help="only render bench/figures.json into the READMEs"
    )
    args = parser.parse_args(argv)
    if args.render:
        fig = json.loads(FIGURES.read_text())
    else:
        fig = collect(args.run, args.loki, args.detect, args.scale)
        FIGURES.write_text(json.dumps(fig, indent=2) + "\n")
    render_files(fig)
    print(render_bench(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
