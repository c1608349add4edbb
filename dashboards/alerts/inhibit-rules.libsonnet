// Alertmanager inhibit rules, so that one event pages once: while the
// exporter's own notification for a detection rule (alertname
// <detectionAlertPrefix><RuleId>, label rule=<id>) is active, the mixin
// alert that says the same thing from the metrics or from Loki is muted.
// Rendered into alertmanager/inhibit-rules.yaml; merge its inhibit_rules
// into alertmanager.yml (or an AlertmanagerConfig's inhibitRules).
{
  local cfg = $._config,
  local names = std.objectFields(cfg.alerts) + std.objectFields(cfg.lokiAlerts),

  assert std.length([n for n in names if std.startsWith(n, cfg.detectionAlertPrefix)]) == 0 :
         'a mixin alert starts with detectionAlertPrefix: it would share a name with a detection notification',

  alertmanagerInhibitRules:: {
    inhibit_rules: [
      {
        source_matchers: [
          'alertname=~"%s.+"' % cfg.detectionAlertPrefix,
          'rule="%s"' % i.rule,
        ],
        target_matchers: ['alertname="%s"' % i.alert],
        equal: i.equal,
      }
      for i in cfg.inhibitions
      if (std.objectHas(cfg.alerts, i.alert) && cfg.alerts[i.alert].enabled)
         || (std.objectHas(cfg.lokiAlerts, i.alert) && cfg.lokiAlerts[i.alert].enabled)
    ],
  },
}
