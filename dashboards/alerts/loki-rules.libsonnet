// Loki ruler alerts: detections that need the raw events (a person's source
// addresses, exec into a given namespace, deletions per user), written in
// LogQL over the exporter's stream labels and structured metadata. They go
// into their own file, loaded by the Loki ruler (the loki_rule sidecar), never
// into a PrometheusRule, whose admission webhook rejects LogQL.
{
  local cfg = $._config,
  local a = cfg.lokiAlerts,
  local stream(extra='') = '{service_name="%s"%s}' % [cfg.lokiServiceName, extra],
  local inCluster = '{{ with $labels.cluster }} in cluster {{ . }}{{ end }}',

  local alert(name, expr, summary, description) =
    local c = a[name];
    assert std.endsWith(summary, '.') : name + ': a summary ends with a period';
    if c.enabled then [{
      alert: name,
      expr: expr,
      'for': c['for'],
      labels: { severity: c.severity },
      annotations: { summary: summary, description: description },
    }] else [],

  // The events of a cluster in `window`, by cluster: presence for the
  // absence alert.
  local perCluster(window) = 'sum by (cluster) (count_over_time(%s [%s]))' % [stream(), window],
  // Successful requests: the event with the response code, once per request.
  local completed = '| stage="ResponseComplete" | code=~"2.."',

  lokiRules+:: {
    groups+: [
      {
        name: 'kube-audit-loki',
        rules:
          alert(
            'KubeAuditLokiNoEvents',
            local c = a.KubeAuditLokiNoEvents;
            if c.clusters != [] then
              // one absence per known cluster: absent_over_time keeps the
              // equality matchers' labels, so each cluster's alert has it.
              std.join('\nor\n', [
                'absent_over_time(%s[%s])' % [stream(', cluster="%s"' % cl), c.window]
                for cl in c.clusters
              ])
            else
              |||
                %s
                unless
                %s
                or
                absent_over_time(%s[%s])
              ||| % [perCluster(c.lookback), perCluster(c.window), stream(), c.window],
            'No audit events reached Loki.',
            'Loki received no entry with service_name="%s"%s in the last %s: the exporter cannot push, or Loki drops what it receives.' % [cfg.lokiServiceName, inCluster, a.KubeAuditLokiNoEvents.window],
          ) +
          alert(
            'KubeAuditExecIntoSystemNamespace',
            |||
              sum by (cluster, namespace, name, user) (
                count_over_time(%s
                  | stage="ResponseStarted"
                  | subresource=~"exec|attach|portforward"
                  | namespace=~"%s"
                  | user_kind=~"%s"
                  | code=~"1..|2.."
                  [%s])
              ) > 0
            ||| % [
              stream(),
              std.join('|', a.KubeAuditExecIntoSystemNamespace.namespaces),
              std.join('|', a.KubeAuditExecIntoSystemNamespace.userKinds),
              a.KubeAuditExecIntoSystemNamespace.window,
            ],
            'A shell or a tunnel was opened into a system pod.',
            '{{ $labels.user }} ran exec, attach or port-forward into pod {{ $labels.namespace }}/{{ $labels.name }}%s ({{ $value }} sessions in the last %s).' % [inCluster, a.KubeAuditExecIntoSystemNamespace.window],
          ) +
          alert(
            'KubeAuditAnonymousAccessAllowed',
            |||
              sum by (cluster, verb, resource, subresource, namespace, name) (
                count_over_time(%s
                  | user_kind="anonymous"
                  %s
                  | resource!="" or verb!="get"
                  | namespace!="kube-public" or resource!="configmaps" or name!="cluster-info" or verb!="get"
                  [%s])
              ) > 0
              or
              sum by (cluster, verb, uri) (
                count_over_time(%s
                  | user_kind="anonymous"
                  %s
                  | resource=""
                  | json uri="requestURI"
                  | uri!~"/(healthz|livez|readyz|version)([/?].*)?"
                  [%s])
              ) > 0
            ||| % [
              stream(),
              completed,
              a.KubeAuditAnonymousAccessAllowed.window,
              stream(),
              completed,
              a.KubeAuditAnonymousAccessAllowed.window,
            ],
            'Anonymous requests succeed.',
            'system:anonymous did {{ $labels.verb }} on {{ with $labels.resource }}{{ . }}{{ with $labels.subresource }}/{{ . }}{{ end }} {{ with $labels.namespace }}{{ . }}/{{ end }}{{ $labels.name }}{{ else }}{{ $labels.uri }}{{ end }}%s {{ $value }} times in the last %s and was allowed: a role is bound to anonymous users.' % [inCluster, a.KubeAuditAnonymousAccessAllowed.window],
          ) +
          alert(
            'KubeAuditUserFromManySourceIPs',
            |||
              count by (cluster, user) (
                sum by (cluster, user, source_ip) (
                  count_over_time(%s | user_kind="human" | source_ip!="" [%s])
                )
              ) > %g
            ||| % [stream(), a.KubeAuditUserFromManySourceIPs.window, a.KubeAuditUserFromManySourceIPs.threshold],
            'A person used the API from many addresses.',
            '{{ $labels.user }} sent requests from {{ $value }} different addresses in the last %s%s: a shared or stolen credential.' % [a.KubeAuditUserFromManySourceIPs.window, inCluster],
          ) +
          alert(
            'KubeAuditMassDeletionByUser',
            |||
              count by (cluster, user) (
                sum by (cluster, user, namespace, resource, name) (
                  count_over_time(%s | user_kind="human" %s [%s])
                )
              ) > %g
              or
              sum by (cluster, user) (
                count_over_time(%s | user_kind="human" %s [%s])
              ) > 0
            ||| % [
              stream(', verb="delete"'),
              completed,
              a.KubeAuditMassDeletionByUser.window,
              a.KubeAuditMassDeletionByUser.threshold,
              stream(', verb="deletecollection"'),
              completed,
              a.KubeAuditMassDeletionByUser.window,
            ],
            'A person deleted many objects.',
            '{{ $labels.user }} deleted {{ $value }} distinct objects, or that many whole collections, in the last %s%s.' % [a.KubeAuditMassDeletionByUser.window, inCluster],
          ),
      },
    ],
  },
}
