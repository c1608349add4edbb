"""Alertmanager alerts for rule matches: who did what to which object, from
where and when.

Names: every notification is called ``KubeAuditDetection`` + the rule id in
CamelCase (``secret-deleted-by-human`` -> ``KubeAuditDetectionSecretDeletedByHuman``)
and carries the label ``rule``. The monitoring mixin's alerts never start
with that prefix (dashboards/alerts/inhibit-rules.libsonnet checks it, as
``detectionAlertPrefix``), so the two sources of pages never share a name,
and its Alertmanager inhibit rules mute a mixin alert while the notification
for the same detection is active.

Only the parsed attributes of the event go into an alert (user, verb,
resource, namespace, name, source address, user agent, response code, time,
auditID); never request or response bodies, the request URI or an exec
command line, which can carry secret values.
"""

from __future__ import annotations

from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .settings import DetectionSettings, utc_text

if TYPE_CHECKING:
    from .engine import Match


# The prefix of every detection notification's alertname; the mixin's
# _config.detectionAlertPrefix is the same string.
ALERTNAME_PREFIX = "KubeAuditDetection"


def alertname(rule_id: str) -> str:
    """``KubeAuditDetection`` + the rule id in CamelCase."""
    return ALERTNAME_PREFIX + "".join(p[:1].upper() + p[1:] for p in rule_id.split("-"))


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def who(m: Match) -> str:
    ev = m.event
    if not ev.username:
        return "an unauthenticated client"
    text = f"{ev.username} ({ev.user_kind})"
    if ev.impersonated_user:
        text += f" acting as {ev.impersonated_user}"
    return text


def target(m: Match) -> str:
    ev = m.event
    if not ev.resource:
        path = ev.request_uri.split("?", 1)[0]
        # non-resource URLs (/healthz, /version, /apis) carry no values
        return f"the URL {path}" if path else "the API server"
    kind = ev.resource_label
    if ev.name and ev.namespace:
        return f"{kind} {ev.namespace}/{ev.name}"
    if ev.name:
        return f"{kind} {ev.name}"
    if ev.namespace:
        return f"{kind} in namespace {ev.namespace}"
    return f"{kind} (all namespaces)"


def context_line(m: Match) -> str:
    """What made a stateful rule fire."""
    r = m.rule
    group = ", ".join(f"{p}={v or '(none)'}" for p, v in zip(r.group_by, m.group, strict=False))
    group = group or "the cluster"
    if r.kind == "threshold":
        what = (
            f"{r.count} distinct {'/'.join(r.distinct)} values"
            if r.distinct
            else f"{r.count} matching requests"
        )
        return (
            f"{what} for {group} within {_duration_text(r.window)}; "
            "this request completed the count."
        )
    if r.kind == "sequence":
        steps = " -> ".join(s.name for s in r.steps)
        return f"The steps {steps} happened in order for {group} within {_duration_text(r.window)}."
    if r.kind == "first_seen":
        return f"{r.value}={m.value} is new for {group} (not seen within {_duration_text(r.ttl)})."
    return ""


def build_alert(m: Match, settings: DetectionSettings, now: float) -> dict[str, Any]:
    """One alert in Alertmanager's API v2 format."""
    ev = m.event
    rule = m.rule
    labels = {
        "alertname": alertname(rule.id),
        "rule": rule.id,
        "severity": rule.severity,
        "cluster": settings.cluster,
        "namespace": ev.namespace,
        "resource": ev.resource_label,
        "user": ev.username,
    }
    labels = {k: v for k, v in labels.items() if v}
    when = utc_text(ev.stage_ts)
    where = ev.source_ip or "an unknown address"
    status = f"answered {ev.code}" if ev.code else "no response code"
    summary = f"{rule.title}: {who(m)} did {ev.verb} on {target(m)}."
    description = (
        f"{who(m)} did {ev.verb} on {target(m)} from {where} at {when} ({status}"
        + (f", user agent {ev.user_agent[:120]}" if ev.user_agent else "")
        + f"). {rule.description}"
    )
    extra = context_line(m)
    if extra:
        description += " " + extra
    if rule.notify_window:
        description += (
            f" Further matches for the same {', '.join(rule.notify_per)} within "
            f"{_duration_text(rule.notify_window)} are counted at info, not notified."
        )
    annotations = {
        "summary": summary,
        "description": description,
        "audit_id": ev.audit_id,
        "source_ip": ev.source_ip,
        "time": when,
    }
    if rule.mitre:
        annotations["mitre"] = ", ".join(rule.mitre)
    link = render_link(settings.alert_link_template, m, settings)
    if link:
        annotations["link"] = link
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": when,
        "endsAt": utc_text(max(ev.stage_ts, now) + settings.alert_resolve_after),
    }
    if link:
        alert["generatorURL"] = link
    return alert


def render_link(template: str, m: Match, settings: DetectionSettings) -> str:
    """Fill the link template. Placeholders (``$name`` or ``${name}``):
    audit_id, cluster, rule, namespace, resource, name, user, source_ip,
    time (RFC 3339), from_ms/to_ms (five minutes either side, epoch ms).
    Values are URL-encoded."""
    if not template:
        return ""
    ev = m.event
    ms = int(ev.stage_ts * 1000)
    values = {
        "audit_id": ev.audit_id,
        "cluster": settings.cluster,
        "rule": m.rule.id,
        "namespace": ev.namespace,
        "resource": ev.resource_label,
        "name": ev.name,
        "user": ev.username,
        "source_ip": ev.source_ip,
        "time": utc_text(ev.stage_ts),
        "from_ms": str(ms - 300_000),
        "to_ms": str(ms + 300_000),
    }
    return Template(template).safe_substitute({k: quote(v, safe="") for k, v in values.items()})
