"""Detection: YAML rules over audit events, correlation over event time,
notifications for what matters.

Public API::

    ruleset = load_rules(paths)            # None: the default set; raises RuleError (located)
    settings = DetectionSettings.from_config(doc.get("detect"), doc.get("alertmanager"),
                                             cluster=cfg.cluster, source=config_file)
    notifier = Alertmanager(settings.alertmanager_urls, metrics)   # exporter.alertmanager
    notifier.start()
    detector = Detector(ruleset, settings, metrics, notifier)      # a pipeline Processor
    pipeline = Pipeline(metrics, processors=[..., detector], ...)
    ...
    notifier.close(timeout=5.0)

The configuration keys (YAML; ``rules.file`` and ``alertmanager.url`` are
repeatable flags too)::

    rules:
      file: [/etc/kube-audit/rules.yaml]   # instead of the defaults...
      include_defaults: false              # ...unless true: load_rules(files, with_defaults=True)
    detect:
      trusted_networks: [10.20.0.0/16]     # where administrators legitimately come from
      pod_cidrs: [10.244.0.0/16]           # the cluster's pod network(s)
      node_cidrs: [10.0.0.0/24]            # node (and control-plane) addresses
      critical_workloads:                  # objects only some principals may touch, at some times
        - name: payments-db                # used in alerts
          namespaces: [payments]           # globs; empty = any (at least one of the three)
          resources: [statefulsets, pods, pods/exec, secrets, persistentvolumeclaims]
          names: ["postgres-*"]
          allowed_principals: ["system:serviceaccount:payments:*", "group:dba"]
          allowed_windows: ["Mon-Fri 08:00-18:00"]   # empty = any time
          timezone: Europe/Berlin          # default UTC
      allowed_users: [alice, "group:sre"]  # site allow-lists, each inactive until set:
      allowed_images: [registry.example.com/]   # the "disallowed-*" rules
      allowed_namespaces: ["team-*"]
      allowed_nodes: ["worker-*"]
      disabled_rules: [workload-deleted]   # rule ids to switch off
      max_state_entries: 100000            # per stateful rule; the oldest are evicted, counted
      alert_min_severity: warning          # info, warning, critical
    alertmanager:
      url: [http://alertmanager-0:9093, http://alertmanager-1:9093]   # each gets every alert
      link_template: "https://grafana.example/explore?...${audit_id}..."  # alerts.render_link
      resolve_after: 15m                   # endsAt = event time (or now) + this
    cluster: prod-eu-1                     # top-level key; the alerts' cluster label

Rules whose settings are empty (no trusted networks, no pod/node CIDRs, no
critical workloads, no allow-list) are inactive; ``rules list`` says which settings each
rule needs, and ``kube_audit_detect_rule_active`` shows it at run time.
The rule format is documented in :mod:`exporter.detect.rules` and
:mod:`exporter.detect.matchers`.
"""

from __future__ import annotations

from .engine import Detector, Match
from .errors import RuleError
from .rules import Rule, RuleSet, default_rule_files, load_rules
from .settings import SEVERITIES, CriticalWorkload, DetectionSettings, TimeWindow

__all__ = [
    "SEVERITIES",
    "CriticalWorkload",
    "DetectionSettings",
    "Detector",
    "Match",
    "Rule",
    "RuleError",
    "RuleSet",
    "TimeWindow",
    "default_rule_files",
    "load_rules",
]
