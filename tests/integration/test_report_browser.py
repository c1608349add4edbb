"""The report in a real browser: headless Chromium (Debian's package,
installed by `make deps-system`) loads the report of the demo log and of a
corpus file over the DevTools protocol; the tests assert on the rendered DOM
and on every network request the page made."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from exporter.cli import main
from exporter.report.browser import Browser
from exporter.report.html import SECTIONS
from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "audit.log.gz"
DEMO_CONFIG = ROOT / "demo" / "config.yaml"
CORPUS = CORPORA / "perfspec-kubernetes-event-dataset" / "reconstructed-audit.log"

DOM = """(() => ({
  sections: [...document.querySelectorAll('main > section')].map(s => [s.id,
      s.querySelector('h2').innerText, s.getBoundingClientRect().height]),
  scripts: document.scripts.length,
  images: document.images.length,
  svgs: document.querySelectorAll('svg.chart').length,
  title: document.title,
  critical: [...document.querySelectorAll('.detection.sev-critical tbody tr')]
      .map(tr => [...tr.cells].map(td => td.innerText)),
  text: document.body.innerText,
}))()"""


def write_report(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "report.html"
    assert main(["report", *args, "--output", str(out)]) == 0
    return out


def load(path: Path) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    async def run() -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
        async with Browser() as browser:
            page = await browser.open(path.as_uri())
            dom = await page.evaluate(DOM)
            return dom, page.requests(), page.console_and_errors()

    return asyncio.run(run())


def assert_sections(dom: dict[str, Any]) -> None:
    ids = [s[0] for s in dom["sections"]]
    assert ids == [sid for sid, _ in SECTIONS]
    for (sid, title), (_, heading, height) in zip(SECTIONS, dom["sections"], strict=True):
        assert title in heading
        assert height > 50, f"section {sid} is not rendered"


def test_demo_report_in_chromium(tmp_path: Path) -> None:
    path = write_report(tmp_path, "--config.file", str(DEMO_CONFIG), str(DEMO))
    dom, requests, errors = load(path)
    assert_sections(dom)
    assert dom["scripts"] == 0 and dom["images"] == 0
    assert dom["svgs"] == 4
    # the critical detection: who, the verb, the object
    assert len(dom["critical"]) == 1
    cells = dom["critical"][0]
    assert cells[1] == "dave@example.com"
    assert cells[2] == "get"
    assert cells[3].split() == ["pods/exec", "payments/postgres-0"]
    # nothing left the page: the one request is the page itself
    assert requests == [path.as_uri()]
    assert errors == []


def test_corpus_report_in_chromium(tmp_path: Path) -> None:
    path = write_report(tmp_path, str(CORPUS))
    dom, requests, errors = load(path)
    assert_sections(dom)
    assert "16,563" in dom["text"]
    assert requests == [path.as_uri()]
    assert errors == []


def test_hostile_values_do_not_run_or_break_the_page(tmp_path: Path) -> None:
    evil_user = "<script>document.title='pwned'</script>"
    evil_agent = "\"'><img src=http://203.0.113.1/x onerror=\"document.title='pwned'\">"
    src = tmp_path / "evil.log"
    events = []
    for i in range(3):
        events.append(
            {
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": "Metadata",
                "auditID": f"evil-{i}",
                "stage": "ResponseComplete",
                "verb": "create",
                "requestURI": "/api/v1/namespaces/default/pods/web/exec?command=sh",
                "user": {"username": evil_user},
                "impersonatedUser": {"username": "<style>body{display:none}</style>"},
                "sourceIPs": ["198.51.100.7"],
                "userAgent": evil_agent,
                "objectRef": {
                    "resource": "pods",
                    "subresource": "exec",
                    "namespace": "default",
                    "name": "web",
                },
                "responseStatus": {"code": 101},
                "requestReceivedTimestamp": f"2024-05-01T08:00:0{i}.000000Z",
                "stageTimestamp": f"2024-05-01T08:00:0{i}.500000Z",
            }
        )
    src.write_text("".join(json.dumps(ev) + "\n" for ev in events))
    path = write_report(tmp_path, str(src))
    dom, requests, errors = load(path)
    assert_sections(dom)
    assert dom["title"] == "Kubernetes audit report"
    assert dom["scripts"] == 0 and dom["images"] == 0
    # the hostile values are shown as text
    assert evil_user in dom["text"] and evil_agent in dom["text"]
    assert "<style>body{display:none}</style>" in dom["text"]
    assert requests == [path.as_uri()]
    assert errors == []


def test_pdf_is_printed(tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    out = tmp_path / "report.html"
    assert main(["report", str(CORPUS), "--output", str(out), "--pdf", str(pdf)]) == 0
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.count(b"/Type /Page") >= 8


def test_a_request_leaving_the_page_would_be_seen(tmp_path: Path) -> None:
    """The checks above can fail: the same report with one external image
    slipped in shows the attempt among the page's requests, and the page's
    own Content Security Policy refusing it among the browser's errors."""
    path = write_report(tmp_path, str(CORPUS))
    html = path.read_text(encoding="utf-8")
    leaky = tmp_path / "leaky.html"
    leaky.write_text(html.replace("<main>", '<main><img src="http://203.0.113.1/x.png">', 1))
    _, requests, errors = load(leaky)
    assert requests[0] == leaky.as_uri()
    assert "http://203.0.113.1/x.png" in requests
    refused = [
        e["params"]["entry"]["text"]
        for e in errors
        if e["method"] == "Log.entryAdded" and e["params"]["entry"]["source"] == "security"
    ]
    assert any("http://203.0.113.1/x.png" in text for text in refused)
