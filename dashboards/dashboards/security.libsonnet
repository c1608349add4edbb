// Security: who is refused, from where, what the detection rules found, and
// the sensitive operations an auditor reviews.
local rules = import '../alerts/recording-rules.libsonnet';
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,
  local S = g.promSelector(cfg),
  local R = g.recSelector(cfg),
  local rec = rules.names(cfg),
  local L = g.lokiSelector(cfg),
  local explore(title, params) = g.explorerLink(cfg, title, params),

  grafanaDashboards+:: {
    [cfg.dashboardFiles.security]: g.dashboard(
      cfg,
      'security',
      'Kubernetes audit / Security',
      'Failed authentications and refusals, detection rule matches, sensitive operations (secrets, exec, RBAC, impersonation, anonymous), Pod Security and failed-open admission webhooks, and the detections themselves from Loki.',
      g.commonVariables(cfg),
      [
        g.stat('Failed authentications (401)', g.q('sum(%s{%s, reason="unauthenticated"})' % [rec.authFailures, R]), 'reqps', decimals=2, thresholds=g.steps(0.1, 1)),
        g.stat('Refused by authorization (403)', g.q('sum(%s{%s, reason="forbidden"})' % [rec.authFailures, R]), 'reqps', decimals=2, thresholds=g.steps(0.1, 1)),
        g.stat('Critical detections', g.q('sum(increase(kube_audit_rule_matches_total{%s, severity="critical"}[$__range]))' % S), decimals=0, thresholds=g.steps(1, 1), description='Matches of critical rules in the time range.'),
        g.stat('Warning detections', g.q('sum(increase(kube_audit_rule_matches_total{%s, severity="warning"}[$__range]))' % S), decimals=0, thresholds=g.steps(1, 50), description='Matches of warning rules in the time range.'),
        g.stat('Pod Security violations', g.q('sum(increase(kube_audit_pod_security_violations_total{%s}[$__range]))' % S), decimals=0, thresholds=g.steps(1, 100), description='In the time range.'),
        g.stat('Failed-open webhook calls', g.q('sum(increase(kube_audit_webhook_failed_open_total{%s}[$__range]))' % S), decimals=0, thresholds=g.steps(1, 10), description='Admission webhook calls that failed and were ignored, in the time range.'),

        g.row('Authentication and authorization'),
        g.timeseries('401 and 403 over time', g.q('sum by (reason) (%s{%s})' % [rec.authFailures, R], '{{reason}}'), 'reqps', description='unauthenticated: 401, the credential was refused; forbidden: 403 from authorization.'),
        g.timeseries('Refusals by user kind and resource (top %d)' % cfg.topK, g.q('topk(%d, sum by (reason, user_kind, resource) (rate(kube_audit_auth_failures_total{%s}[$__rate_interval])))' % [cfg.topK, S], '{{reason}} {{user_kind}} {{resource}}'), 'reqps', links=[explore('Events on this resource', ['var-resource=${__field.labels.resource}'])]),
        g.table('Top users answered 4xx', g.qt('topk(%d, sum by (user) (increase(kube_audit_user_requests_total{%s, code_class="4xx"}[$__range])) > 0)' % [cfg.topK, S]), 'requests', description='4xx includes 403, 404 and 409: open the events for the codes.', links=[explore('Refused events of this user', ['var-user=${__data.fields.user}', 'var-code=4'])]),
        g.table('Top source addresses of auth failures', g.qt('topk(%d, sum by (source_ip, reason) (increase(kube_audit_source_auth_failures_total{%s}[$__range])) > 0)' % [cfg.topK, S]), 'failures', description='The last entry of sourceIPs, the peer the API server saw.', links=[explore('Events from this address', ['var-source_ip=${__data.fields.source_ip}'])]),

        g.row('Detections'),
        g.timeseries('Rule matches by severity', g.q('sum by (severity) (rate(kube_audit_rule_matches_total{%s}[$__rate_interval]))' % S, '{{severity}}'), 'ops', stack=true),
        g.table('Rule matches by rule', g.qt('sort_desc(sum by (rule, severity) (increase(kube_audit_rule_matches_total{%s}[$__range])) > 0)' % S), 'matches', description='`kube-audit-exporter rules list` describes each rule.', links=[explore('Events that matched this rule', ['var-rule=${__data.fields.rule}'])]),

        g.row('Sensitive operations'),
        g.timeseries('Sensitive operations by category', g.q('sum by (category) (rate(kube_audit_sensitive_operations_total{%s}[$__rate_interval]))' % S, '{{category}}'), 'reqps', stack=true, description='secrets: secrets and token requests; exec: exec, attach, port-forward; rbac: writes to RBAC objects; impersonation; anonymous: requests by system:anonymous.'),
        g.table('Sensitive operations in detail', g.qt('topk(20, sum by (category, verb, resource, user_kind, code_class) (increase(kube_audit_sensitive_operations_total{%s}[$__range])) > 0)' % S), 'requests', links=[explore('These events', ['var-verb=${__data.fields.verb}', 'var-resource=${__data.fields.resource}'])]),
        g.timeseries('Exec, attach and port-forward', g.q('sum by (resource, code_class, user_kind) (rate(kube_audit_sensitive_operations_total{%s, category="exec"}[$__rate_interval]))' % S, '{{resource}} {{code_class}} by {{user_kind}}'), 'reqps', w=8, links=[explore('These events', ['var-resource=pods'])]),
        g.timeseries('RBAC changes', g.q('sum by (verb, resource, code_class) (rate(kube_audit_sensitive_operations_total{%s, category="rbac"}[$__rate_interval]))' % S, '{{verb}} {{resource}} {{code_class}}'), 'reqps', w=8, links=[explore('These events', ['var-verb=${__field.labels.verb}', 'var-resource=${__field.labels.resource}'])]),
        g.timeseries('Impersonation and anonymous', g.q('sum by (category, resource, code_class) (rate(kube_audit_sensitive_operations_total{%s, category=~"impersonation|anonymous"}[$__rate_interval]))' % S, '{{category}} {{resource}} {{code_class}}'), 'reqps', w=8, description='Anonymous requests to non-resource URLs (resource empty: /healthz, /version) are public by default.'),

        g.row('Pod Security and admission'),
        g.timeseries('Pod Security violations by level', g.q('sum by (level) (rate(kube_audit_pod_security_violations_total{%s}[$__rate_interval]))' % S, '{{level}}'), 'ops', stack=true, description='Audit-mode violations and enforce-mode denials, by the Pod Security level violated.'),
        g.timeseries('Failed-open admission webhooks', g.q('sum by (webhook) (rate(kube_audit_webhook_failed_open_total{%s}[$__rate_interval]))' % S, '{{webhook}}'), 'ops', description='Webhook calls that failed and were ignored (failurePolicy: Ignore): requests admitted unchecked.'),

        g.row('Detections (Loki)'),
        g.logs('Critical and warning detections', g.lq(|||
          %s | severity=~"critical|warning" | json user_agent="userAgent"
            | line_format `{{.severity}} {{.rules}}: {{.user}} {{.verb}} {{.resource}}{{with .subresource}}/{{.}}{{end}} {{with .namespace}}{{.}}/{{end}}{{.name}} -> {{.code}} from {{.source_ip}} ({{.user_agent}})`
        ||| % L), description='Who did what to which object from where, for every event a critical or warning rule matched. Expand a line for the auditID and the whole event.'),
      ],
    ),
  },
}
