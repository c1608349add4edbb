// Recording rules for what the dashboards and alerts query again and again:
// request rates, 5xx and 403 ratios (not 4xx as a whole: routine 404 and
// 409 answers would drown them) and latency quantiles. Every recorded series
// keeps the cluster label and job; the prefix of a name lists the other
// labels it keeps (level:metric:operations).
{
  // The recorded names, shared with the alerts and dashboards.
  names(cfg):: {
    local w = cfg.recordingWindow,
    requests: 'verb_resource_code:kube_audit_requests:rate' + w,
    requestsByUserKind: 'user_kind:kube_audit_requests:rate' + w,
    serverErrorRatio: 'job:kube_audit_requests_5xx:ratio_rate' + w,
    forbiddenRatio: 'job:kube_audit_requests_forbidden:ratio_rate' + w,
    authFailures: 'reason:kube_audit_auth_failures:rate' + w,
    verbBuckets: 'verb_le:kube_audit_request_duration_seconds_bucket:rate' + w,
    resourceBuckets: 'resource_le:kube_audit_request_duration_seconds_bucket:rate' + w,
    quantile: 'quantile:kube_audit_request_duration_seconds:histogram_quantile',
    verbQuantile: 'verb_quantile:kube_audit_request_duration_seconds:histogram_quantile',
    resourceQuantile: 'resource_quantile:kube_audit_request_duration_seconds:histogram_quantile',
  },

  local cfg = $._config,
  local sel = cfg.exporterSelector,
  local w = cfg.recordingWindow,
  local n = self.names(cfg),
  local by(labels=[]) = std.join(', ', [cfg.clusterLabel, 'job'] + labels),

  local quantiles(record, source, labels) = [
    {
      record: record,
      expr: 'histogram_quantile(%s, sum by (%s) (%s))' % [q, by(labels + ['le']), source],
      labels: { quantile: q },
    }
    for q in cfg.latencyQuantiles
  ],

  prometheusRules+:: {
    groups+: [
      {
        name: 'kube-audit.rules',
        rules: [
          {
            record: n.requests,
            expr: 'sum by (%s) (rate(kube_audit_requests_total{%s}[%s]))' % [by(['verb', 'resource', 'code']), sel, w],
          },
          {
            record: n.requestsByUserKind,
            expr: 'sum by (%s) (rate(kube_audit_requests_total{%s}[%s]))' % [by(['user_kind']), sel, w],
          },
          {
            record: n.serverErrorRatio,
            expr: 'sum by (%s) (%s{code=~"5.."})\n/\nsum by (%s) (%s)' % [by(), n.requests, by(), n.requests],
          },
          {
            record: n.authFailures,
            expr: 'sum by (%s) (rate(kube_audit_auth_failures_total{%s}[%s]))' % [by(['reason']), sel, w],
          },
          {
            record: n.forbiddenRatio,
            expr: 'sum by (%s) (%s{reason="forbidden"})\n/\nsum by (%s) (%s)' % [by(), n.authFailures, by(), n.requests],
          },
        ],
      },
      {
        name: 'kube-audit-latency.rules',
        rules: [
                 {
                   record: n.verbBuckets,
                   expr: 'sum by (%s) (rate(kube_audit_request_duration_seconds_bucket{%s}[%s]))' % [by(['verb', 'le']), sel, w],
                 },
                 {
                   record: n.resourceBuckets,
                   expr: 'sum by (%s) (rate(kube_audit_request_duration_seconds_bucket{%s}[%s]))' % [by(['resource', 'le']), sel, w],
                 },
               ] + quantiles(n.quantile, n.verbBuckets, [])
               + quantiles(n.verbQuantile, n.verbBuckets, ['verb'])
               + quantiles(n.resourceQuantile, n.resourceBuckets, ['resource']),
      },
    ],
  },
}
