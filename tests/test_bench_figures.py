"""The benchmark figures live in one place (bench/figures.json, from one
`make bench` run) and both READMEs say what it holds: bench/README.md's
Figures section in full, README.md's Performance section as a quote."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench import figures
from bench.loki import Row as LokiRow
from bench.results import finish
from bench.run import Row as RunRow


def stored() -> dict[str, object]:
    fig: dict[str, object] = json.loads(figures.FIGURES.read_text())
    return fig


def test_bench_readme_holds_the_figures_of_the_recorded_run() -> None:
    fig = stored()
    text = figures.BENCH_README.read_text()
    assert figures.section(text) == figures.render_bench(fig)
    assert str(fig["date"]) in text


def test_readme_quotes_the_same_run() -> None:
    fig = stored()
    assert figures.section(figures.README.read_text()) == figures.render_quote(fig)


def test_readme_has_no_figures_of_its_own_in_performance() -> None:
    """A figure typed by hand beside the quote would go stale with the next run."""
    text = figures.README.read_text()
    perf = text[text.index("## Performance\n") : text.index("\n## ", text.index("## Performance"))]
    outside = perf.replace(figures.section(text), "")
    assert not re.findall(r"\d[\d,.]*\s*(?:events/s|µs|MB\b|x python-logging-loki)", outside)


def test_one_run_of_the_three_benchmarks_renders_into_both_readmes(tmp_path: Path) -> None:
    """The JSON each benchmark writes (bench/results.finish) is what
    figures.py reads; the rendering shows each figure where it belongs."""
    run_rows = [
        RunRow("generate", "kube-audit-exporter simulate (to a file)", 1000, 0.5, 50.0, 0.5),
        RunRow(
            "replay",
            "kube-audit-exporter replay (redact, every rule, report)",
            1000,
            0.008,
            101.0,
            0.008,
        ),
        RunRow(
            "replay", "library path (Decoder + Pipeline + AuditMetrics)", 1000, 0.005, 80.0, 0.005
        ),
        RunRow(
            "replay",
            "naive baseline (json.loads + prometheus_client)",
            1000,
            0.01,
            40.0,
            0.01,
            baseline=True,
        ),
        RunRow("webhook", "kube-audit-exporter run (mutual TLS)", 400, 0.01, 150.0, 0.01),
        RunRow("webhook", "naive baseline server", 400, 0.02, 60.0, 0.02, baseline=True),
    ]
    loki_rows = [
        LokiRow("LokiSink, fsync always", 1000, 0.0125, 250.0, 240.0, 0.01, 1000, decode_us=7.25),
        LokiRow("python-logging-loki LokiHandler", 100, 0.1, 90.0, 88.0, 0.1, 100, baseline=True),
    ]
    work = tmp_path / "work"
    for name, rows in (("run", run_rows), ("loki", loki_rows)):
        work.mkdir()
        finish(rows, str(tmp_path / f"{name}.json"), work, keep=False)
    (tmp_path / "detect.json").write_text(
        json.dumps(
            {
                "lines": 12000,
                "files": ["a.log"],
                "rules": 68,
                "events_per_second_without_detection": 200000,
                "events_per_second_with_detection": 160000,
                "rule_matches": 321,
                "detection_us_per_event": 1.25,
                "detector_alone_us_per_event": 0.9,
            }
        )
    )
    fig = figures.collect(tmp_path / "run.json", tmp_path / "loki.json", tmp_path / "detect.json")
    bench = figures.render_bench(fig)
    assert "| replay: kube-audit-exporter replay (redact, every rule, report) | 1,000 | 0.01 " in (
        bench
    )
    assert "| 125,000 | 101.0 | 0.01 | 1.2x |" in bench  # 1000 / 0.008 s, vs 100,000/s
    assert "| LokiSink, fsync always | 1,000 | 80,000 | 0.01 | 240.0 / 250.0 | 80.0x |" in bench
    assert "beforehand (`Decoder.decode_line`, timed apart): 7.2 µs an event" in bench
    assert "detection costs 1.25 µs an event in the pipeline" in bench
    assert "replay >= 100,000 events/s on one core (met: 125,000)" in bench
    assert "webhook >= 30,000 events/s (met: 40,000)" in bench
    assert "peak RSS <= 200 MB (met: 150 MB)" in bench
    quote = figures.render_quote(fig)
    assert "| 125,000 | 101 MB | 100,000 |" in quote
    assert (
        "| Loki: LokiSink, fsync always | 80,000 | 250 MB (240 holding the decoded input) "
        "| 80.0x python-logging-loki |"
    ) in quote
    assert "(bench/README.md#figures)" in quote
    text = f"a\n{figures.BEGIN}\nold\n{figures.END}\nb\n"
    assert figures.splice(text, "new") == f"a\n{figures.BEGIN}\nnew\n{figures.END}\nb\n"


def test_scale_figures_render_their_ratios(tmp_path: Path) -> None:
    """bench/scale.py's rows, when the run has them, render as a table and
    one sentence of ratios in both READMEs."""
    scale_rows = [
        RunRow("ratio-metadata", "orjson.loads loop, small Metadata events", 1000, 0.001, 20.0,
               0.001, baseline=True),
        RunRow("ratio-metadata", "kube-audit-exporter replay, small Metadata events", 1000,
               0.004, 90.0, 0.004),
        RunRow("jobs", "replay --jobs 1 (every rule, report)", 1000, 0.01, 90.0, 0.01,
               baseline=True),
        RunRow("jobs", "replay --jobs 2 (every rule, report)", 1000, 0.005, 90.0, 0.02),
    ]  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    finish(scale_rows, str(tmp_path / "scale.json"), work, keep=False)
    fig = dict(stored())
    fig["scale"] = json.loads((tmp_path / "scale.json").read_text())
    bench = figures.render_bench(fig)
    assert "| replay --jobs 2 (every rule, report) | 1,000 | 0.01 | 200,000 |" in bench
    sentence = "runs at 0.25 of a bare `orjson.loads` loop over small Metadata-level events"
    assert sentence in bench
    assert "`replay --jobs 2` runs 2.00 times `--jobs 1`" in bench
    assert sentence in figures.render_quote(fig)
