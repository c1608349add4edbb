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

  lokiRules+:: {
    groups+: [
      {
        name: 'kube-audit-loki',
        rules:
          alert(
            'KubeAuditLokiNoEvents',
            'absent_over_time(%s[%s])' % [stream(), a.KubeAuditLokiNoEvents.window],
            'No audit events reached Loki.',
            'Loki received no entry with service_name="{{ $labels.service_name }}" in the last %s: the exporter cannot push, or Loki drops what it receives.' % a.KubeAuditLokiNoEvents.window,
          ) +
          alert(
            'KubeAuditExecIntoSystemNamespace',
            |||
              sum by (cluster, namespace, user) (
                count_over_time(%s
                  | user_kind="human"
                  | subresource=~"exec|attach|portforward"
                  | namespace=~"%s"
                  | code=~"1..|2.."
                  [%s])
              ) > 0
            ||| % [stream(), std.join('|', a.KubeAuditExecIntoSystemNamespace.namespaces), a.KubeAuditExecIntoSystemNamespace.window],
            'A person opened a shell or a tunnel into a system pod.',
            '{{ $labels.user }} ran exec, attach or port-forward in namespace {{ $labels.namespace }}%s ({{ $value }} events in the last %s).' % [inCluster, a.KubeAuditExecIntoSystemNamespace.window],
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
              sum by (cluster, user) (
                count_over_time(%s | user_kind="human" | stage="ResponseComplete" | code=~"2.." [%s])
              ) > %g
            ||| % [stream(', verb=~"delete|deletecollection"'), a.KubeAuditMassDeletionByUser.window, a.KubeAuditMassDeletionByUser.threshold],
            'A person deleted many objects.',
            '{{ $labels.user }} made {{ $value }} successful delete requests in the last %s%s.' % [a.KubeAuditMassDeletionByUser.window, inCluster],
          ),
      },
    ],
  },
}
