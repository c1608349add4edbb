"""The noise report: how often each default rule fires on real audit logs and
on the simulator's traffic, benign and with its scripted attacks.

    python -m exporter.detect.noise > docs/noise-report.md

The corpora (../shared/corpora, real clusters) run with empty detection
settings, since their networks are unknown; the simulated cluster runs with
its own networks and a critical workload. A test regenerates the report and
fails when the committed one differs.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..event import AuditEvent, Decoder
from .engine import Detector, Match
from .rules import Rule, RuleSet, load_rules
from .settings import CriticalWorkload, DetectionSettings

SIM_EVENTS = 100_000
SIM_SEED = 1


def find_corpora() -> Path:
    """The shared corpora of real audit events: $KUBE_AUDIT_CORPORA, else
    ../shared/corpora beside the checkout, else the workplace's shared folder
    (for a clone made elsewhere, such as /tmp/fresh). The path is returned
    even when it does not exist; callers say so."""
    if "KUBE_AUDIT_CORPORA" in os.environ:
        return Path(os.environ["KUBE_AUDIT_CORPORA"])
    beside = Path(__file__).resolve().parents[3] / "shared" / "corpora"
    for candidate in (beside, Path("/work/shared/corpora")):
        if candidate.is_dir():
            return candidate
    return beside


CORPORA = find_corpora()


SHORT = {
    "audit2rbac-demo": "audit2rbac",
    "elastic-integrations": "elastic",
    "falco-k8s-audit-trace-files": "falco",
    "perfspec-kubernetes-event-dataset": "perfspec",
    "small-samples": "samples",
    "sysdig-stackdriver-webhook-bridge": "sysdig",
}


# What each corpus is: benign traffic of a real cluster, or test input made
# on purpose (attack scenarios, parser fixtures) that the noise bound does not
# apply to. A corpus missing here counts as benign.
CORPUS_KIND = {
    "audit2rbac-demo": (True, "real cluster (2017)"),
    "perfspec-kubernetes-event-dataset": (True, "real kubeadm cluster installing Helm charts"),
    "falco-k8s-audit-trace-files": (False, "attack traces: Falco's rule tests, made on purpose"),
    "sysdig-stackdriver-webhook-bridge": (
        False,
        "attack traces: the Falco test scenarios (wildcard roles, cluster-admin binding, "
        "hostNetwork pod...) played on a GKE cluster",
    ),
    "elastic-integrations": (
        False,
        "parser fixtures: sanitised ingest-pipeline test inputs from unrelated clusters "
        "and years, put in one stream",
    ),
    "small-samples": (
        False,
        "parser fixtures: single events picked by other projects' tests, some holding "
        "credentials on purpose",
    ),
}


@dataclass
class Source:
    name: str
    description: str
    benign: bool
    counts: Counter[str]
    events: int
    # matches at warning or critical per rule: without a notify_once group
    # already notified (those are info)
    loud: Counter[str] = field(default_factory=Counter)

    @property
    def warnings(self) -> int:
        return sum(self.loud.values())


def corpus_sources(root: Path) -> Iterator[tuple[str, list[Path]]]:
    """Each corpus folder with its files (SOURCE.md and README.md left out)."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".md", ".csv")
        )
        if files:
            yield folder.name, files


def _decoded(paths: Iterable[Path]) -> Iterator[AuditEvent]:
    decoder = Decoder()
    for path in paths:
        for item in decoder.decode_document(path.read_bytes()):
            if isinstance(item, AuditEvent):
                yield item


def run(
    ruleset: RuleSet, settings: DetectionSettings, events: Iterable[AuditEvent]
) -> tuple[Counter[str], int, Counter[str]]:
    """Matches per rule over ``events`` (in batches of 1000, as replay
    does), the number of events, and the matches per rule at warning or
    above."""
    loud: Counter[str] = Counter()

    def on_match(m: Match) -> None:
        if m.rule.severity != "info":
            loud[m.rule.id] += 1

    detector = Detector(ruleset, settings, on_match=on_match)
    counts: Counter[str] = Counter()
    n = 0
    batch: list[AuditEvent] = []

    def flush() -> None:
        detector(batch)
        for ev in batch:
            counts.update(ev.rules)
        batch.clear()

    for ev in events:
        batch.append(ev)
        n += 1
        if len(batch) == 1000:
            flush()
    flush()
    return counts, n, loud


def simulator_settings() -> DetectionSettings:
    from ..simulate import cluster as sim

    return DetectionSettings(
        trusted_networks=(sim.OFFICE_CIDR, sim.VPN_CIDR),
        pod_cidrs=(sim.POD_CIDR,),
        node_cidrs=(sim.NODE_CIDR,),
        critical_workloads=(
            CriticalWorkload(
                name="payments",
                namespaces=("payments",),
                allowed_principals=(
                    "system:serviceaccount:payments:*",
                    "system:serviceaccount:cert-manager:*",
                    "group:sre",
                ),
            ),
        ),
    )


def simulated(attacks: bool) -> Iterator[AuditEvent]:
    from ..simulate.traffic import Options, simulate_lines

    decoder = Decoder()
    for line in simulate_lines(Options(events=SIM_EVENTS, seed=SIM_SEED, attacks=attacks)):
        yield decoder.decode_line(line)


def collect(ruleset: RuleSet, corpora: Path = CORPORA) -> list[Source]:
    sources: list[Source] = []
    for name, files in corpus_sources(corpora):
        counts, n, loud = run(ruleset, DetectionSettings(), _decoded(files))
        benign, what = CORPUS_KIND.get(name, (True, ""))
        description = f"corpus `{name}`" + (f": {what}" if what else "")
        sources.append(Source(SHORT.get(name, name), description, benign, counts, n, loud))
    settings = simulator_settings()
    for attacks in (False, True):
        counts, n, loud = run(ruleset, settings, simulated(attacks))
        label = "sim+attacks" if attacks else "sim benign"
        what = "with the scripted attacks" if attacks else "benign traffic only (--no-attacks)"
        sources.append(
            Source(
                label,
                f"simulator, seed {SIM_SEED}, {n:,} events, {what}",
                not attacks,
                counts,
                n,
                loud,
            )
        )
    return sources


HEADER = """\
<!-- generated by `python -m exporter.detect.noise`; do not edit. -->
# Detection noise report

How often each default rule fires ({rules} rules) on real audit logs and on
the simulator's traffic. Regenerate with
`python -m exporter.detect.noise > docs/noise-report.md`; a test fails when
this file is out of date.

- **Corpora** (`../shared/corpora`, see its README): run with
  empty detection settings, as their networks are unknown, so the rules that
  need trusted networks, pod/node CIDRs or critical workloads stay inactive.
  Each corpus folder is one stream, files in name order.
- **Simulator** (`kube-audit-exporter simulate`, seed {seed}, {events:,}
  events): its networks configured (office {office} and VPN {vpn} trusted,
  pods {pods}, nodes {nodes}) and namespace `payments` as a critical workload
  that only its own service accounts, cert-manager and the `sre` group may
  touch. Once benign (`--no-attacks`), once with its scripted attacks.

Severity: **critical** pages someone, **warning** is notified (the default
`detect.alert_min_severity`), **info** is only counted
(`kube_audit_rule_matches_total`) and marked on the event in Loki.
"""

WARNINGS_HEAD = """
## Warnings per 10,000 benign events

What is notified (warning and critical, the default
`detect.alert_min_severity`) per source. The bound is fewer than one per
10,000 events on each benign source and on all of them together; a test
fails above it. The corpora marked "no" were made on purpose: the attack
traces replay attacks, and the fixtures are hand-picked or sanitised events
of unrelated clusters (a stream of a few events years apart, where a
first-seen rule meets the same admin at another address), so a rate per
10,000 events means nothing there; their warnings are listed below anyway.
"""

MATCHES_HEAD = """\
A cell `5 (4 grouped)`: five matches, four of which fell within the
`notify_once` window of a group already notified, so they count at info.
"""

NOTES = """
## Reading it

Warnings and criticals on benign sources:

{benign_alerts}

Warnings and criticals on the corpora made on purpose (attack traces and
fixtures):

{made_alerts}

What the attack run adds at warning or above (one line per rule):

{attack_alerts}

## Tuning done on these sources

- Pod-spec rules (privileged, host namespaces, host paths, capabilities) skip
  refused requests: a pod refused by Pod Security or RBAC was never created,
  and `pod-security-denied`/`access-denied` already record the attempt. They
  also skip the pods the built-in controllers create in the cluster's own
  namespaces (kube-system, CNI namespaces) and the kubelet's mirror pods; the
  workload object itself is checked when it is written.
- `secret-enumeration` leaves service accounts listing all secrets with their
  own client or the way informers do (`resourceVersion=0`, watch bookmarks):
  kube-state-metrics, cert-manager, ingress controllers, Prometheus's operator.
  The same account with kubectl, curl or a script still fires. (perfspec's
  reconstruction lost user agents; the informer pattern still recognises its
  operators.)
- Helm's release records (`sh.helm.release.v1.*`, `owner=helm` selectors) are
  not "secrets read or changed by a person": perfspec's admin installs charts
  all day.
- `forbidden-burst` counts distinct refused requests (verb, resource,
  namespace), so a client retrying one refused call is not probing, and only
  service accounts raise a warning; people browsing with k9s or trying what
  their role allows are `forbidden-burst-person` (info).
- Refused attempts on critical workloads are not critical: RBAC held. Actual
  access is.
- Routine human operations are info: exec and shells (`exec-shell-or-tool`,
  `exec-into-system-pod`), port-forwards, `kubectl --as` a colleague. Acting
  as a control-plane identity or `system:masters` is
  `impersonation-of-privileged-identity` (warning).
- One failed-open webhook call is info; ten within five minutes is
  `admission-webhook-failing-open` (warning).
- exec, attach and port-forward over WebSocket (kubectl 1.30+) are logged
  with verb `get`, over SPDY with `create`: rules take both.
- `secret-burst` (five secrets in a minute) leaves operators reading the
  secrets they manage with their own client: cert-manager fetches dozens of
  certificates at once. People, and service accounts with kubectl or a
  generic HTTP client, still count. Requests without a user agent (perfspec's
  reconstruction) are not "scripted clients" for `refused-unusual-user-agent`.
- Rules with a `refused:` section split by outcome: a refused attempt is the
  `-refused` variant (info, or one step down), and only repeated refusals by
  one user (`-refused-repeated`) rise back to the rule's own severity.
- The site allow-list rules (`disallowed-*`) are inactive here: neither the
  corpora nor the simulator configure `detect.allowed_*`.
- `admission-webhook-changed` notifies once per principal an hour
  (`notify_once`): perfspec's admin installing three charts brings five
  webhook configurations within a minute, one notification; the other four
  are matched and counted at info.
- `anonymous-request-allowed` leaves kubeadm's anonymous get of
  kube-public/cluster-info, which every joining node makes.

Known limits: a failed authentication (401) names no user, so the
untrusted-then-trusted sequence correlates authorization refusals (403);
401 guessing is the per-address `auth-failure-burst`. State lives in memory:
after a restart `human-writer-new-source` learns for an hour before reporting.
"""


def render(sources: list[Source], ruleset: RuleSet) -> str:
    from ..simulate import cluster as sim

    rules = sorted(
        ruleset.rules, key=lambda r: ({"critical": 0, "warning": 1, "info": 2}[r.severity], r.id)
    )
    out = [
        HEADER.format(
            rules=len(rules),
            seed=SIM_SEED,
            events=SIM_EVENTS,
            office=sim.OFFICE_CIDR,
            vpn=sim.VPN_CIDR,
            pods=sim.POD_CIDR,
            nodes=sim.NODE_CIDR,
        )
    ]
    out.append("## Sources\n")
    out.append("| source | events | benign | what |\n|---|---:|---|---|")
    for s in sources:
        out.append(f"| {s.name} | {s.events:,} | {'yes' if s.benign else 'no'} | {s.description} |")
    out.append(WARNINGS_HEAD)
    out.append("| source | benign | events | warnings and criticals | per 10,000 events |")
    out.append("|---|---|---:|---:|---:|")
    for s in sources:
        out.append(
            f"| {s.name} | {'yes' if s.benign else 'no'} | {s.events:,} | {s.warnings:,} | "
            f"{per_10k(s.warnings, s.events)} |"
        )
    benign = [s for s in sources if s.benign]
    b_events = sum(s.events for s in benign)
    b_warnings = sum(s.warnings for s in benign)
    out.append(
        f"| **all benign** | | **{b_events:,}** | **{b_warnings:,}** | "
        f"**{per_10k(b_warnings, b_events)}** |"
    )
    out.append("\n## Matches per rule\n")
    out.append(MATCHES_HEAD)
    out.append("| rule | severity | kind | " + " | ".join(s.name for s in sources) + " |")
    out.append("|---|---|---|" + "---:|" * len(sources))
    for r in rules:
        cells = [_cell(s, r) for s in sources]
        out.append(f"| `{r.id}` | {r.severity} | {r.kind} | " + " | ".join(cells) + " |")
    totals = ["**" + str(sum(s.counts.values())) + "**" for s in sources]
    out.append("| **all matches** | | | " + " | ".join(totals) + " |")

    def alerts(chosen: list[Source], attack: bool) -> str:
        lines = []
        for r in rules:
            hits = [(s.name, s.loud[r.id]) for s in chosen if s.loud.get(r.id)]
            if hits:
                where = ", ".join(f"{n} ({c})" for n, c in hits)
                lines.append(f"- `{r.id}` ({r.severity}): {where}. {_why(r, not attack)}")
        return "\n".join(lines) or "- none"

    corpora_made = [s for s in sources if not s.benign and s.name != "sim+attacks"]
    attack_run = [s for s in sources if s.name == "sim+attacks"]
    out.append(
        NOTES.format(
            benign_alerts=alerts(benign, False),
            made_alerts=alerts(corpora_made, False),
            attack_alerts=alerts(attack_run, True),
        )
    )
    return "\n".join(out).rstrip() + "\n"


# Why a rule fires, for the notes; rules not listed need no comment.
WHY_BENIGN = {
    "cluster-admin-binding": "Grants of cluster-admin created in the corpora on purpose.",
    "role-with-wildcard": "Wildcard roles created in the corpora on purpose.",
    "role-grants-exec": "A role granting exec, created on purpose.",
    "system-role-modified": "The corpora edit and delete system roles on purpose.",
    "admission-webhook-changed": (
        "kubernetes-admin installing three charts that bring five webhook configurations "
        "within a minute: real changes to admission, worth one notification (notify_once)."
    ),
    "anonymous-request-allowed": "The falco corpus's anonymous namespace creation, on purpose.",
    "configmap-with-credentials": "ConfigMaps with AWS keys and passwords, on purpose.",
    "nodeport-service": "A NodePort service created on purpose.",
    "privileged-container": "Privileged test pods created on purpose.",
    "sensitive-host-path-mount": "Test pods mounting /etc, on purpose.",
    "pod-host-network": "hostNetwork test pods, on purpose.",
    "secret-deleted-by-human": "A person deleting a secret: what the rule is for.",
    "serviceaccount-created-in-kube-namespace": (
        "Service accounts created in kube-system and kube-public on purpose."
    ),
    "pod-in-kube-system-by-non-system": (
        "An SRE starting a debug pod in kube-system: real, if routine for SREs."
    ),
    "human-writer-new-source": (
        "Captures taken months or years apart (2018 to 2020): the same admin from another "
        "address, after the rule's hour of learning."
    ),
    "secret-enumeration": "Listing every namespace's secrets.",
    "secret-burst": (
        "alice reading five of argocd's secrets within a minute with kubectl: what the rule "
        "is for, and once in 100,000 events."
    ),
}
WHY_ATTACK = {
    "critical-workload-principal-not-allowed": (
        "dave's psql shell in payments/postgres-0; carol, impersonating the garbage collector, "
        "listing payments' secrets and deleting its on-call binding."
    ),
    "anonymous-request-allowed": "Anonymous requests listing namespaces and kube-system's secrets.",
    "auth-failure-burst": "Forty 401s from one internet address (fires at 20 and at 40).",
    "cluster-admin-binding": "The CI service account binding cluster-admin to carol.",
    "impersonation-of-privileged-identity": (
        "frank trying `--as system:admin`; carol acting as the garbage collector, twice."
    ),
    "secret-enumeration": "carol, newly cluster-admin, listing all secrets.",
    "service-account-token-outside-cluster": "Prometheus's token used with curl from the internet.",
    "pod-in-kube-system-by-non-system": "As in the benign run: an SRE's debug pod.",
    "refused-unusual-user-agent": "Prometheus's stolen token tried with curl and refused.",
    "secret-read-by-scripted-client": "The anonymous curl reading kube-system's secrets.",
    "secret-burst": "As in the benign run: alice and argocd's secrets.",
}


def per_10k(warnings: int, events: int) -> str:
    return f"{warnings * 10_000 / events:.2f}" if events else "-"


def _cell(source: Source, rule: Rule) -> str:
    n = source.counts.get(rule.id, 0)
    if not n:
        return "·"
    quiet = n - source.loud.get(rule.id, 0) if rule.severity != "info" else 0
    return f"{n} ({quiet} grouped)" if quiet else str(n)


def _why(rule: Rule, benign: bool) -> str:
    return (WHY_BENIGN if benign else WHY_ATTACK).get(rule.id, "")


def main() -> int:
    ruleset = load_rules(None)
    sys.stdout.write(render(collect(ruleset), ruleset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
