// The one post-processor that gives every alert (Prometheus and Loki ruler)
// its runbook_url, from _config.runbookURLPattern and the alert's name.
local addRunbook(cfg, groups) = [
  group {
    rules: [
      rule + (
        if std.objectHas(rule, 'alert') then
          { annotations+: { runbook_url: cfg.runbookURLPattern % std.asciiLower(rule.alert) } }
        else {}
      )
      for rule in super.rules
    ],
  }
  for group in groups
];

{
  prometheusAlerts+:: {
    groups: addRunbook($._config, super.groups),
  },
  lokiRules+:: {
    groups: addRunbook($._config, super.groups),
  },
}
