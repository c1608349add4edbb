"""The auditor's report: the subcommand, what each section says about real
and demo events, escaping of hostile values, bounded memory, the PDF's
missing-engine error, and the committed demo report (drift check)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from exporter.report.collect import MAX_PRINCIPALS
from exporter.report.html import SECTIONS
from exporter.report.timeline import Coverage, Timeline
from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "audit.log.gz"
DEMO_CONFIG = ROOT / "demo" / "config.yaml"
COMMITTED = ROOT / "docs" / "report" / "demo.html"
AUDIT2RBAC = CORPORA / "audit2rbac-demo" / "demo.log"


def report(tmp_path: Path, *args: str, name: str = "r.html") -> tuple[int, str]:
    out = tmp_path / name
    status = main(["report", *args, "--output", str(out)])
    return status, out.read_text(encoding="utf-8") if out.exists() else ""


class Page(HTMLParser):
    """Elements, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def ids(self) -> list[str]:
        return [a["id"] or "" for _, a in self.tags if a.get("id")]


def section_text(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}">')
    end = html.index("</section>", start)
    return "".join(Page(html[start:end]).text)


def test_demo_report_has_every_section_and_the_critical_detection(tmp_path: Path) -> None:
    status, html = report(tmp_path, "--config.file", str(DEMO_CONFIG), str(DEMO))
    assert status == 0
    page = Page(html)
    for sid, title in SECTIONS:
        assert sid in page.ids(), sid
        assert title in html
    det = section_text(html, "detections")
    # the critical detection names who, the verb and the object
    crit = det[det.index("Critical workload touched") :]
    assert "dave@example.com" in crit[:2000]
    assert "pods/exec payments/postgres-0" in crit[:2000]
    raw = html[html.index("Critical workload touched") :]
    row = raw[raw.index("<tbody>") : raw.index("</tr>", raw.index("<tbody>"))]
    assert ">get</" in row and "postgres-0" in row
    # the critical workload timeline marks dave's access as not allowed
    critical = section_text(html, "critical")
    assert "principal not allowed" in critical and "dave@example.com" in critical
    # impersonation as "A acting as B", and the evidence of a stateful rule
    who = section_text(html, "who")
    assert "frank@example.com acting as system:admin" in who
    assert "The events that made it fire" in det
    # the sensitive operations that matter start with a person
    sens = section_text(html, "sensitive")
    first_row = sens[sens.index("audit ID") :]
    assert "@example.com" in first_row[:400]
    # the scope names the input and its digest
    import hashlib

    assert hashlib.sha256(DEMO.read_bytes()).hexdigest() in html


def test_every_chart_has_its_table(tmp_path: Path) -> None:
    _, html = report(tmp_path, "--config.file", str(DEMO_CONFIG), str(DEMO))
    figures = re.findall(r"<figure>(.*?)</figure>", html, flags=re.S)
    assert len(figures) == 4  # requests, people, detections, auth failures
    for fig in figures:
        assert "<svg" in fig and "<table>" in fig


def test_page_is_self_contained(tmp_path: Path) -> None:
    _, html = report(tmp_path, "--config.file", str(DEMO_CONFIG), str(DEMO))
    page = Page(html)
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object")]
    for _, attrs in page.tags:
        for name in ("src", "href", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (name, value)
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in (csp[0] or "")


def test_hostile_values_are_escaped(tmp_path: Path) -> None:
    evil_user = '<script>alert("u")</script>'
    evil_agent = '"><img src=x onerror=alert(1)>'
    src = tmp_path / "evil.log"
    lines = []
    for i, stage in enumerate(["ResponseComplete"] * 3):
        lines.append(
            json.dumps(
                {
                    "kind": "Event",
                    "apiVersion": "audit.k8s.io/v1",
                    "level": "Metadata",
                    "auditID": f"a-{i}",
                    "stage": stage,
                    "requestURI": "/api/v1/namespaces/x/secrets/</td><b>n",
                    "verb": "get",
                    "user": {"username": evil_user},
                    "impersonatedUser": {"username": "'quoted' & <i>"},
                    "sourceIPs": ["203.0.113.9"],
                    "userAgent": evil_agent,
                    "objectRef": {"resource": "secrets", "namespace": "x", "name": "</td><b>n"},
                    "responseStatus": {"code": 200},
                    "requestReceivedTimestamp": f"2024-05-01T08:00:0{i}.000000Z",
                    "stageTimestamp": f"2024-05-01T08:00:0{i}.100000Z",
                }
            )
        )
    src.write_text("\n".join(lines) + "\n")
    status, html = report(tmp_path, str(src))
    assert status == 0
    assert evil_user not in html and evil_agent not in html and "<b>n" not in html
    page = Page(html)
    assert not [t for t, _ in page.tags if t in ("script", "img", "b", "i")]
    text = "".join(page.text)
    # the values are there, as text
    assert evil_user in text and evil_agent in text and "'quoted' & <i>" in text
    assert sum(1 for t, _ in page.tags if t == "section") == len(SECTIONS)


def test_secret_values_never_reach_the_report(tmp_path: Path) -> None:
    path = CORPORA / "falco-k8s-audit-trace-files" / "create_secret.json"
    body = json.loads(path.read_text())
    secret_values = [v for v in (body.get("requestObject", {}).get("data") or {}).values()]
    status, html = report(tmp_path, str(path))
    assert status == 0
    for value in secret_values:
        assert value not in html


def test_corpus_report_and_period(tmp_path: Path) -> None:
    status, whole = report(tmp_path, str(AUDIT2RBAC))
    assert status == 0
    assert "757" in section_text(whole, "scope")
    # --from/--to leave events out, counted
    status, part = report(
        tmp_path, str(AUDIT2RBAC), "--from", "2017-01-01T00:00:00Z", "--to",
        "2017-01-01T00:00:01Z", name="p.html",
    )  # fmt: skip
    assert status == 0
    scope = section_text(part, "scope")
    assert "events outside it (left out)" in scope and "757" in scope


def test_gaps_are_listed(tmp_path: Path) -> None:
    cov = Coverage(gap=60.0)
    cov.add([0.0, 10.0, 20.0])
    cov.add([500.0, 510.0])
    assert cov.gaps() == [(20.0, 500.0)]
    cov.add([30.0, 80.0])  # late events shrink the gap
    assert cov.gaps() == [(80.0, 500.0)]
    cov.add([130.0, 180.0, 230.0, 280.0, 330.0, 380.0, 430.0, 480.0])  # and fill it
    assert cov.gaps() == []


def test_timeline_widens_and_keeps_counts() -> None:
    tl = Timeline(1, max_buckets=10)
    for t in range(0, 3600, 7):
        tl.row(float(t))[0] += 1
    assert sum(v[0] for _, v in tl.series()) == len(range(0, 3600, 7))
    assert len(tl.series()) <= 10


def test_principals_are_capped(tmp_path: Path) -> None:
    src = tmp_path / "many.log"
    with src.open("w") as fh:
        for i in range(MAX_PRINCIPALS + 50):
            fh.write(
                json.dumps(
                    {
                        "kind": "Event",
                        "apiVersion": "audit.k8s.io/v1",
                        "level": "Metadata",
                        "auditID": f"id-{i}",
                        "stage": "ResponseComplete",
                        "verb": "get",
                        "requestURI": "/api/v1/pods",
                        "user": {"username": f"user{i}@example.com"},
                        "objectRef": {"resource": "pods"},
                        "responseStatus": {"code": 200},
                        "requestReceivedTimestamp": "2024-05-01T08:00:00.000000Z",
                        "stageTimestamp": "2024-05-01T08:00:00.100000Z",
                    }
                )
                + "\n"
            )
    status, html = report(tmp_path, str(src))
    assert status == 0
    assert "50 requests by principals past the first 300" in html


def test_missing_input_and_bad_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, html = report(tmp_path, str(tmp_path / "nope.log"), str(AUDIT2RBAC))
    assert status == 2
    assert "not read" in html and "757" in html
    with pytest.raises(SystemExit) as exc:
        main(["report", str(AUDIT2RBAC), "--output", "x.html", "--from", "yesterday"])
    assert exc.value.code == 2
    assert "bad timestamp" in capsys.readouterr().err


def test_missing_pdf_engine_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium anywhere
    status, html = report(tmp_path, str(AUDIT2RBAC), "--pdf", str(tmp_path / "r.pdf"))
    err = capsys.readouterr().err
    assert status == 2
    assert "no Chromium found" in err and "Traceback" not in err
    assert html  # the HTML is written all the same
    assert not (tmp_path / "r.pdf").exists()


def test_terminal_summary_names_verb_object_and_audit_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", "--config.file", str(DEMO_CONFIG), str(DEMO)]) == 0
    out = capsys.readouterr().out
    detections = out[out.index("Detections (") :]
    crit = next(line for line in detections.splitlines() if " critical " in line)
    assert "pods/exec payments/postgres-0" in crit and " get " in crit
    assert "6df430d5-c30c-4a2e-bfc3-d66b300fe2a9" in crit
    # the person's exec is among the sensitive operations shown, routine
    # controller traffic is one line per component
    sens = out[out.index("Sensitive operations that matter") : out.index("Routine controller")]
    assert "dave@example.com" in sens and "postgres-0" in sens
    assert "system:serviceaccount:cert-manager:cert-manager" not in sens
    routine = out[out.index("Routine controller") : out.index("Detections (")]
    assert "system:serviceaccount:cert-manager:cert-manager" in routine
    # impersonation shown; user agents not cut to look alike
    assert "system:admin" in sens
    agents = out[out.index("Top user agents") : out.index("Auth failures by user")]
    rows = [line.strip() for line in agents.splitlines()[2:] if line.strip()]
    assert len({r.split(None, 1)[1] for r in rows}) == len(rows)


def test_committed_demo_report_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make report-demo` regenerates docs/report/demo.html (and the
    screenshots beside it); this fails when the report of the committed demo
    input would change."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "demo.html"
    status = main(
        ["report", "--config.file", "demo/config.yaml", "demo/audit.log.gz",
         "--title", "Demo cluster: audit report", "--output", str(out)]
    )  # fmt: skip
    assert status == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8"), (
        "the demo report changed: run `make report-demo` and commit docs/report/"
    )


def test_stdin_is_read_and_not_hashed(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "stdin.html"
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "report", "-", "--output", str(out)],
        input=AUDIT2RBAC.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    scope = section_text(out.read_text(encoding="utf-8"), "scope")
    assert "(not hashed: a stream)" in scope and "757" in scope


def test_long_record_widens_buckets_without_losing_requests(tmp_path: Path) -> None:
    src = tmp_path / "long.log"
    with src.open("w") as fh:
        for i in range(600):
            t = f"2024-05-{1 + i // 24:02d}T{i % 24:02d}:00:00.000000Z"
            fh.write(
                json.dumps(
                    {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                     "auditID": f"id-{i}", "stage": "ResponseComplete", "verb": "get",
                     "requestURI": "/api/v1/pods", "user": {"username": "alice@example.com"},
                     "objectRef": {"resource": "pods"}, "responseStatus": {"code": 200},
                     "requestReceivedTimestamp": t, "stageTimestamp": t}
                ) + "\n"
            )  # fmt: skip
    status, html = report(tmp_path, str(src))
    assert status == 0
    requests = re.findall(r"<figure>.*?</figure>", html, flags=re.S)[0]
    # the chart's table: a row per bucket, 2xx first; together every request
    counts = re.findall(r"<tr><td>[^<]*</td><td class=n>([0-9,]+)</td>", requests)
    assert 1 < len(counts) <= 240
    assert sum(int(c.replace(",", "")) for c in counts) == 600


def test_report_does_not_depend_on_the_batching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests are counted a batch at a time (the timeline, the levels) and
    detections may widen the timeline in the middle of a batch: the page is
    the same whether the demo log comes in batches of 1000 lines or of 7."""
    import exporter.sources.replay as replay

    args = ("--config.file", str(DEMO_CONFIG), str(DEMO))
    status, whole = report(tmp_path, *args, name="1000.html")
    assert status == 0
    read = replay.read_batches
    monkeypatch.setattr(replay, "read_batches", lambda stream, decoder: read(stream, decoder, 7))
    status, small = report(tmp_path, *args, name="7.html")
    assert status == 0
    assert small == whole


def test_detections_link_to_the_configured_template(tmp_path: Path) -> None:
    """With alertmanager.link_template set, each detection row links to it
    (the placeholders filled and URL-encoded); the link is a plain anchor
    that the page's policy never follows by itself."""
    template = "https://grafana.example.com/explore?audit=${audit_id}&user=${user}"
    status, html = report(
        tmp_path, "--config.file", str(DEMO_CONFIG), "--alertmanager.link-template", template,
        str(DEMO),
    )  # fmt: skip
    assert status == 0
    detections = html[html.index('<section id="detections">') :]
    detections = detections[: detections.index("</section>")]
    assert (
        '<a href="https://grafana.example.com/explore?audit=6df430d5-c30c-4a2e-bfc3-d66b300fe2a9'
        '&amp;user=dave%40example.com" rel="noreferrer noopener">open</a>'
    ) in detections
    # without a template there is no link at all
    status, plain = report(tmp_path, "--config.file", str(DEMO_CONFIG), str(DEMO), name="p.html")
    assert status == 0 and "grafana.example.com" not in plain and '<a href="http' not in plain


def test_title_and_cluster_are_in_the_header(tmp_path: Path) -> None:
    status, html = report(
        tmp_path, "--title", "Q2 review <prod>", "--cluster", "prod-eu-1", str(AUDIT2RBAC)
    )
    assert status == 0
    assert "<title>Q2 review &lt;prod&gt;</title>" in html
    header = html[html.index("<header") : html.index("</header>")]
    assert "Q2 review &lt;prod&gt;" in header and "cluster <strong>prod-eu-1</strong>" in header


def test_critical_workload_accesses_get_their_verdicts(tmp_path: Path) -> None:
    """Each access to a critical workload is listed with its verdict: an
    allowed principal in its window, the same principal outside it, someone
    not allowed (even on an object seen before); other objects are not."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "detect:\n"
        "  critical_workloads:\n"
        "    - name: payments-db\n"
        "      namespaces: [payments]\n"
        "      resources: [pods/exec]\n"
        '      names: ["postgres-*"]\n'
        '      allowed_principals: ["group:dba"]\n'
        '      allowed_windows: ["Mon-Fri 09:00-17:00"]\n'
    )

    def exec_event(i: int, user: str, groups: list[str], when: str, pod: str) -> str:
        return json.dumps(
            {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
             "auditID": f"crit-{i}", "stage": "ResponseComplete", "verb": "get",
             "requestURI": f"/api/v1/namespaces/payments/pods/{pod}/exec?command=psql",
             "user": {"username": user, "groups": groups}, "sourceIPs": ["192.0.2.9"],
             "objectRef": {"resource": "pods", "subresource": "exec",
                           "namespace": "payments", "name": pod},
             "responseStatus": {"code": 101},
             "requestReceivedTimestamp": when, "stageTimestamp": when}
        )  # fmt: skip

    src = tmp_path / "crit.log"
    src.write_text(
        "\n".join(
            [
                # 2024-05-01 is a Wednesday, 2024-05-04 a Saturday
                exec_event(1, "bob@example.com", ["dba"], "2024-05-01T10:00:00Z", "postgres-0"),
                exec_event(2, "bob@example.com", ["dba"], "2024-05-04T10:00:00Z", "postgres-0"),
                exec_event(3, "mallory@example.com", [], "2024-05-04T11:00:00Z", "postgres-0"),
                exec_event(4, "mallory@example.com", [], "2024-05-04T12:00:00Z", "web-1"),
            ]
        )
        + "\n"
    )  # fmt: skip
    status, html = report(tmp_path, "--config.file", str(config), str(src))
    assert status == 0
    section = html[html.index('<section id="critical">') :]
    section = re.sub(r"</?span[^>]*>", "", section[: section.index("</section>")])
    # each row marked (allowed: green, the others: red) as well as named
    rows = re.findall(
        r'<tr class="(\w+)"><td>(2024-[^<]*)</td><td>payments-db</td>'
        r"<td>([^<]*)</td><td>([^<]*)</td>",
        section,
    )
    assert rows == [
        ("allowed", "2024-05-01T10:00:00.000000Z", "allowed", "bob@example.com"),
        ("denied", "2024-05-04T10:00:00.000000Z", "outside its window", "bob@example.com"),
        ("denied", "2024-05-04T11:00:00.000000Z", "principal not allowed", "mallory@example.com"),
    ]


def test_policy_findings_use_policy_lints_codes() -> None:
    """What the report finds from the evidence, policy lint finds in the
    policy that produced it, under the same codes."""
    from collections import Counter

    from exporter.policy.lint import lint_text
    from exporter.report.judge import SECRET_BODIES, judge

    # a policy that logs every body and keeps RequestReceived ...
    policy = lint_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
    )
    linted = {f.code for f in policy.warnings}
    # ... and the record it writes
    levels = Counter({(r, "RequestResponse"): 1 for r in SECRET_BODIES})
    findings, _, _ = judge(levels, Counter({"RequestReceived": 4, "ResponseComplete": 4}))
    problems = {f.code for f in findings if f.verdict == "problem"}
    assert problems == {"sensitive-body", "request-received"}
    assert problems <= linted


def test_gaps_inside_one_batch() -> None:
    """A batch that spans less than the gap is one period; one that spans
    more is cut where the silence is longer than the gap, in any order."""
    cov = Coverage(gap=60.0)
    cov.add([100.0, 40.0, 159.0])
    assert cov.spans == [[40.0, 159.0]] and cov.gaps() == []
    cov.add([400.0, 230.0, 300.0, 239.0])
    assert cov.gaps() == [(159.0, 230.0), (239.0, 300.0), (300.0, 400.0)]


def test_failing_pdf_engine_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A browser that runs but prints nothing (here: `false`) is named with
    its exit status; the HTML is written all the same."""
    status, html = report(
        tmp_path, str(AUDIT2RBAC), "--pdf", str(tmp_path / "r.pdf"), "--chromium", "false"
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Chromium failed to print (exit 1)" in err and "Traceback" not in err
    assert html and not (tmp_path / "r.pdf").exists()


def test_duplicates_and_invalid_inputs_are_counted(tmp_path: Path) -> None:
    """The report's pipeline counts no request metrics, yet drops a
    duplicate and refuses a bad line as replay does, and says so."""
    lines = AUDIT2RBAC.read_text().splitlines()
    src = tmp_path / "mixed.log"
    src.write_text("\n".join([lines[0], lines[0], "{not json", *lines[1:]]) + "\n")
    status, html = report(tmp_path, str(src))
    assert status == 0
    scope = re.sub(r"</?span[^>]*>", "", html[: html.index('<section id="who">')])
    assert "<td>events</td><td class=n>757</td>" in scope
    assert "<td>duplicates dropped</td><td class=n>1</td>" in scope
    assert "<td>invalid inputs</td><td class=n>1</td>" in scope


def test_inputs_are_hashed_whole_plain_document_and_compressed(tmp_path: Path) -> None:
    """A plain file is hashed from the blocks its reader reads, one JSON
    document likewise (read in one go), a .gz from its compressed bytes read
    again: each digest and size is the whole file's."""
    import hashlib

    document = tmp_path / "doc.json"
    lines = AUDIT2RBAC.read_bytes().splitlines()[:3]
    document.write_bytes(b'{"kind":"EventList","items":[' + b",".join(lines) + b"]}\n")
    inputs = (AUDIT2RBAC, document, DEMO)
    status, html = report(tmp_path, *map(str, inputs))
    assert status == 0
    scope = section_text(html, "scope")
    for path in inputs:
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() in html
        assert f"{len(data):,}" in scope


def test_digest_of_a_file_not_read_through_is_the_whole_files(tmp_path: Path) -> None:
    """When the reader stops early (or reads past the hashing stream), the
    file is read again whole: the digest never covers part of it."""
    import hashlib
    import io

    from exporter.report.digest import Hasher

    path = tmp_path / "a.log"
    path.write_bytes(b"x" * 300_000)
    hasher = Hasher()
    early = hasher.reading(io.FileIO(path))
    early.read(1000)
    hasher.done(str(path), early)
    early.close()
    other = tmp_path / "b.log"
    other.write_bytes(b"y" * 300_000)
    bypassed = hasher.reading(io.FileIO(other))
    bypassed.read(100)
    bypassed.raw.read()  # bytes that did not pass through the stream
    hasher.done(str(other), bypassed)
    bypassed.close()
    through = tmp_path / "c.log"
    through.write_bytes(b"z" * 300_000)
    whole = hasher.reading(io.FileIO(through))
    while whole.read(65536):
        pass
    hasher.done(str(through), whole)
    whole.close()
    digests = hasher.close()
    for p in (path, other, through):
        assert digests[str(p)] == (hashlib.sha256(p.read_bytes()).hexdigest(), 300_000)


def test_stateful_detections_past_those_kept_count_as_in_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sixty bursts of twenty 401s, each from its own address: the report
    counts sixty auth-failure-burst matches as replay does, keeps the first
    fifty (a warning's limit), each with the twenty events' latest ten as its
    evidence, all from the burst's address (the collector stops keeping
    evidence for a rule once its detections kept are complete)."""
    from datetime import UTC, datetime

    from exporter.report.collect import KEEP_PER_RULE, MAX_EVIDENCE

    src = tmp_path / "bursts.log"
    with src.open("w") as fh:
        for ip in range(60):
            for k in range(20):
                t = datetime.fromtimestamp(1714550400 + ip * 400 + k * 5, UTC)
                stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                fh.write(
                    json.dumps(
                        {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                         "auditID": f"id-{ip}-{k}", "stage": "ResponseStarted", "verb": "list",
                         "requestURI": "/api/v1/secrets", "user": {},
                         "sourceIPs": [f"203.0.113.{ip}"], "responseStatus": {"code": 401},
                         "requestReceivedTimestamp": stamp, "stageTimestamp": stamp}
                    ) + "\n"
                )  # fmt: skip
    assert main(["replay", str(src), "--output", "json"]) == 0
    counts = {d["rule"]: d["count"] for d in json.loads(capsys.readouterr().out)["detections"]}
    assert counts["auth-failure-burst"] == 60
    status, html = report(tmp_path, str(src))
    assert status == 0
    det = html[html.index('id="rule-auth-failure-burst"') :]
    det = det[: det.index('id="rule-', 10)]
    assert "(auth-failure-burst, 60 matches)" in det
    kept = det.split("events that made it fire")[1:]
    assert len(kept) == KEEP_PER_RULE["warning"] == 50
    for ip, part in enumerate(kept):
        body = part[part.index("<tbody>") : part.index("</tbody>")]
        assert body.count("<tr>") == MAX_EVIDENCE
        assert set(re.findall(r"203\.0\.113\.\d+", body)) == {f"203.0.113.{ip}"}


def test_timeline_counts_alike_whatever_the_order_of_a_batch() -> None:
    """A batch in time order is counted a bucket at a time (slices of it),
    any other one request by request, a batch within one bucket by code
    alone: the timeline is the same."""
    import gzip

    from exporter.detect.settings import DetectionSettings
    from exporter.event import Decoder
    from exporter.metrics import counts_as_request
    from exporter.report.collect import Collector

    decoder = Decoder(1 << 20)
    lines = gzip.decompress(DEMO.read_bytes()).splitlines()[:4000]
    events = [ev for ev in decoder.decode_document(b"\n".join(lines)) if hasattr(ev, "stage_ts")]
    requests = sorted((ev for ev in events if counts_as_request(ev)), key=lambda ev: ev.stage_ts)
    assert len({int(ev.stage_ts) for ev in requests}) > 100  # many one-second buckets

    def series(batches: list[list[Any]], span: bool = False) -> list[tuple[float, list[int]]]:
        c = Collector(DetectionSettings())
        for batch in batches:
            stamps = [ev.stage_ts for ev in batch]
            c._add_requests(batch, (min(stamps), max(stamps)) if span else None)
        return c.timeline.series()

    in_order = series([requests])
    assert sum(row[0] + row[2] for _, row in in_order) > 0
    assert series([requests[::-1]]) == in_order
    assert series([requests[i : i + 7] for i in range(0, len(requests), 7)], span=True) == in_order
