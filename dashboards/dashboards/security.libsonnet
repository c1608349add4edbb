// Security: who is refused, from where, what the detection rules found, and
// the sensitive operations an auditor reviews: who read secrets, who exec'd
// where, who changed RBAC, each event with its user, object and time.
local rules = import '../alerts/recording-rules.libsonnet';
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,
  local S = g.promSelector(cfg),
  local R = g.recSelector(cfg),
  local rec = rules.names(cfg),
  local L = g.lokiSelector(cfg),
  local explore(title, params) = g.explorerLink(cfg, title, params),
  local resourceParams(prefix) = [
    'var-resource=${%s.resource}' % prefix,
    'var-subresource=${%s.subresource}' % prefix,
  ],
  // Events per interval, a series' first event included.
  local counts(metric, by, extra='') = g.countNew(metric, S + extra, by, '$__interval'),
  local total(metric, extra='') = 'sum(%s)' % g.countNew(metric, S + extra, [cfg.clusterLabel], '$__range'),
  // One event into the Explorer: its audit ID.
  local eventLink = explore('This event', ['var-audit_id=${__data.fields.audit_id}']),
  local columns = ['user', 'verb', 'namespace', 'resource', 'subresource', 'name', 'code', 'source_ip', 'audit_id'],
  // One request once: its ResponseComplete event (exec: ResponseStarted).
  local completed = '| stage="ResponseComplete"',

  grafanaDashboards+:: {
    [cfg.dashboardFiles.security]: g.dashboard(
      cfg,
      'security',
      'Kubernetes audit / Security',
      "Failed authentications and refusals, detection rule matches, sensitive operations (secrets, exec, RBAC, impersonation, anonymous), Pod Security and failed-open admission webhooks, and the auditor's tables of who read secrets, who exec'd where and who changed RBAC. Detections are marked on every timeline.",
      g.commonVariables(cfg),
      [
        g.stat('Failed authentications (401)', g.q('sum(%s{%s, reason="unauthenticated"})' % [rec.authFailures, R]), 'reqps', decimals=2, thresholds=g.steps(0.1, 1), description='401 answers per second: a credential refused. Rising: see Top source addresses of auth failures.', links=[explore('Failed authentications', ['var-code=401'])]),
        g.stat('Refused by authorization (403)', g.q('sum(%s{%s, reason="forbidden"})' % [rec.authFailures, R]), 'reqps', decimals=2, thresholds=g.steps(0.1, 1), description='403 answers per second from authorization. Rising: see Refusals by user kind and resource.', links=[explore('Refused events', ['var-code=403'])]),
        g.stat('Critical detections', g.q(total('kube_audit_rule_matches_total', ', severity="critical"')), decimals=0, thresholds=g.steps(1, 1), links=[explore('Events whose highest match is critical', ['var-rule_severity=critical'])], description='Matches of critical rules in the time range, a single one included. Not 0: open Rule matches by rule and the events; each match was also notified to Alertmanager.'),
        g.stat('Warning detections', g.q(total('kube_audit_rule_matches_total', ', severity="warning"')), decimals=0, thresholds=g.steps(1, 50), links=[explore('Events whose highest match is warning', ['var-rule_severity=warning'])], description='Matches of warning rules in the time range. Many of one rule: an incident, or routine work that needs an exception in the rule.'),
        g.stat('Pod Security violations', g.q(total('kube_audit_pod_security_violations_total')), decimals=0, thresholds=g.steps(1, 100), links=[explore('Pod creations', ['var-resource=pods', 'var-verb=create'])], description='Pod Security audit violations and enforce denials in the time range. See Pod Security violations by level.'),
        g.stat('Failed-open webhook calls', g.q(total('kube_audit_webhook_failed_open_total')), decimals=0, thresholds=g.steps(1, 10), links=[explore('Requests let through by a failed webhook', ['var-rule=admission-webhook-failed-open'])], description='Admission webhook calls that failed and were ignored in the time range, a single one included: requests admitted unchecked.'),

        g.row('Authentication and authorization'),
        g.timeseries('401 and 403 over time', g.q('sum by (reason) (%s{%s})' % [rec.authFailures, R], '{{reason}}'), 'reqps', links=[explore('Failed authentications (401)', ['var-code=401']), explore('Refused by authorization (403)', ['var-code=403'])], description='unauthenticated: 401, the credential was refused; forbidden: 403 from authorization. A step up after a deployment is a broken credential or Role; a spike from nowhere, someone trying.'),
        g.timeseries('Refusals by user kind and resource (top %d)' % cfg.topK, g.q(g.splitResource('topk(%d, sum by (reason, user_kind, resource) (rate(kube_audit_auth_failures_total{%s}[$__rate_interval])))' % [cfg.topK, S]), '{{reason}} {{user_kind}} {{resource}} {{subresource}}'), 'reqps', links=[explore('Refused events on this resource', ['var-user_kind=${__field.labels.user_kind}', 'var-code_class=4..'] + resourceParams('__field.labels'))], description='Who is refused what, by kind of user. Click a series for the events and the users behind it.'),
        g.table('Top users answered 4xx', g.qt('topk(%d, %s > 0)' % [cfg.topK, g.countNew('kube_audit_user_requests_total', S + ', code_class="4xx"', ['user'], '$__range')]), 'requests', description='4xx includes 403, 404 and 409: open the events for the codes. A user refused once is listed too.', links=[explore('Refused events of this user', ['var-user=${__data.fields.user}', 'var-code_class=4..'])]),
        g.table('Top source addresses of auth failures', g.qt('topk(%d, %s > 0)' % [cfg.topK, g.countNew('kube_audit_source_auth_failures_total', S, ['source_ip', 'reason'], '$__range')]), 'failures', description='The last entry of sourceIPs, the peer the API server saw. One address with many 401s: a token in a retry loop, or guessing. Click for the events.', links=[explore('Events from this address', ['var-source_ip=${__data.fields.source_ip}'])]),

        g.row('Detections'),
        g.timeseries('Rule matches by severity', g.q(counts('kube_audit_rule_matches_total', ['severity']), '{{severity}}'), stack=true, decimals=0, bars=true, links=[explore('Events whose highest match has this severity', ['var-rule_severity=${__field.labels.severity}'])], description='Matches per interval by rule severity, a single match included. Critical ones are marked on every timeline of this dashboard (annotations).'),
        g.table('Rule matches by rule', g.qt('sort_desc(%s > 0)' % g.countNew('kube_audit_rule_matches_total', S, ['rule', 'severity'], '$__range')), 'matches', description='`kube-audit-exporter rules list` describes each rule. Click a rule for the events it matched.', links=[explore('Events that matched this rule', ['var-rule=${__data.fields.rule}'])]),

        g.row('Sensitive operations'),
        g.timeseries('Sensitive operations by category', g.q(counts('kube_audit_sensitive_operations_total', ['category']), '{{category}}'), stack=true, decimals=0, bars=true, links=[explore('Secret events', ['var-resource=secrets']), explore('Exec sessions', ['var-resource=pods', 'var-subresource=exec']), explore('Anonymous events', ['var-user_kind=anonymous'])], description='Requests per interval, a single one included. secrets: secrets and token requests; exec: exec, attach, port-forward; rbac: writes to RBAC objects; impersonation; anonymous: requests by system:anonymous. The tables below say who.'),
        g.table('Sensitive operations in detail', g.qt(g.splitResource('topk(20, %s > 0)' % g.countNew('kube_audit_sensitive_operations_total', S, ['category', 'verb', 'resource', 'user_kind', 'code_class'], '$__range'))), 'requests', description='Sensitive requests in the time range by category, verb, resource and kind of user. Click a row for those events.', links=[explore('These events', ['var-verb=${__data.fields.verb}', 'var-user_kind=${__data.fields.user_kind}'] + resourceParams('__data.fields'))]),
        g.timeseries('Exec, attach and port-forward', g.q(g.splitResource(counts('kube_audit_sensitive_operations_total', ['resource', 'code_class', 'user_kind'], ', category="exec"')), '{{subresource}} {{code_class}} by {{user_kind}}'), w=8, decimals=0, bars=true, links=[explore('These events', ['var-user_kind=${__field.labels.user_kind}'] + resourceParams('__field.labels'))], description="Sessions into containers per interval, a single one included. Who and where: Who exec'd where, below."),
        g.timeseries('RBAC changes', g.q(g.splitResource(counts('kube_audit_sensitive_operations_total', ['verb', 'resource', 'code_class'], ', category="rbac"')), '{{verb}} {{resource}} {{code_class}}'), w=8, decimals=0, bars=true, links=[explore('These events', ['var-verb=${__field.labels.verb}'] + resourceParams('__field.labels'))], description='Writes to Roles, ClusterRoles and their bindings per interval. Who and what: Who changed RBAC, below.'),
        g.timeseries('Impersonation and anonymous', g.q(g.splitResource(counts('kube_audit_sensitive_operations_total', ['category', 'resource', 'code_class'], ', category=~"impersonation|anonymous"')), '{{category}} {{resource}} {{code_class}}'), w=8, decimals=0, bars=true, description='Anonymous requests to the health and version URLs are public by default and left out; anything else anonymous and 2xx is a role bound to anonymous users.', links=[explore('These events', resourceParams('__field.labels'))]),

        g.row("Auditor's tables (Loki)"),
        g.eventTable('Who read secrets', g.lq('%s | resource="secrets" | verb=~"get|list|watch" %s | code=~"2.."' % [g.lokiSelector(cfg, 'verb=~"get|list|watch"'), completed]), columns, description='Every successful read of Secrets in the time range, newest first: who, which secret, from where. A person reading secrets, or a service account reading those of another namespace, deserves a question. Click a row for the whole event.', links=[eventLink]),
        g.eventTable("Who exec'd where", g.lq('%s | subresource=~"exec|attach|portforward" | stage="ResponseStarted" | code=~"1..|2.."' % L), columns, description='Every exec, attach and port-forward session opened in the time range (counted at its start), with the pod and the user. The whole event (click) carries the command in its requestURI.', links=[eventLink]),
        g.eventTable('Who changed RBAC', g.lq('%s | resource=~"roles|clusterroles|rolebindings|clusterrolebindings" %s | code=~"2.."' % [g.lokiSelector(cfg, 'verb=~"create|update|patch|delete|deletecollection"'), completed]), columns, description='Every successful write to Roles, ClusterRoles and bindings in the time range. A binding to cluster-admin, or a change by a person outside a deployment, deserves a question. Click a row for the whole event (at Request level, the new rules).', links=[eventLink]),

        g.row('Pod Security and admission'),
        g.timeseries('Pod Security violations by level', g.q(counts('kube_audit_pod_security_violations_total', ['level']), '{{level}}'), stack=true, decimals=0, bars=true, description='Audit-mode violations and enforce-mode denials per interval, by the Pod Security level violated. Find the pods with the Explorer (pods, create).', links=[explore('Pod creations', ['var-resource=pods', 'var-verb=create'])]),
        g.timeseries('Failed-open admission webhooks', g.q(counts('kube_audit_webhook_failed_open_total', ['webhook']), '{{webhook}}'), decimals=0, bars=true, links=[explore('Requests let through by a failed webhook', ['var-rule=admission-webhook-failed-open'])], description='Webhook calls that failed and were ignored (failurePolicy: Ignore) per interval, a single one included: requests admitted unchecked. Check the webhook pods.'),

        g.row('Detections (Loki)'),
        g.logs('Critical and warning detections', g.lq('%s | rule_severity=~"critical|warning"' % L), description='The whole event for every event a critical or warning rule matched, newest first. Expand a line for its rules, user, object and auditID metadata.'),
      ],
      annotations=[
        g.lokiAnnotation('Critical detections', '%s | rule_severity="critical"' % L, 'red', ['rules'], '{{user}} {{verb}} {{resource}} {{namespace}}/{{name}}'),
        g.lokiAnnotation('Warning detections', '%s | rule_severity="warning"' % L, 'orange', ['rules'], '{{user}} {{verb}} {{resource}} {{namespace}}/{{name}}'),
      ],
    ),
  },
}
