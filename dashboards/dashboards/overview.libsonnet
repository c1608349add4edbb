// Audit overview: what the API server is asked, how it answers, how fast,
// and by whom.
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
    [cfg.dashboardFiles.overview]: g.dashboard(
      cfg,
      'overview',
      'Kubernetes audit / Overview',
      'API requests as the audit log records them: rate by verb, resource and code, errors, latency, slow-request phases and who is asking. Click a series to open its events in the Audit explorer.',
      g.commonVariables(cfg) + [
        g.customVariable('quantile', 'latency quantile', std.reverse(cfg.latencyQuantiles)),
      ],
      [
        g.stat('Requests', g.q('sum(%s{%s})' % [rec.requests, R]), 'reqps'),
        g.stat('Error ratio (4xx and 5xx)', g.q('sum(%s{%s, code=~"[45].."}) / sum(%s{%s})' % [rec.requests, R, rec.requests, R]), 'percentunit', thresholds=g.steps(0.1, 0.25)),
        g.stat('5xx ratio', g.q('sum(%s{%s, code=~"5.."}) / sum(%s{%s})' % [rec.requests, R, rec.requests, R]), 'percentunit', thresholds=g.steps(0.01, 0.05)),
        g.stat('Latency p99', g.q('max(%s{%s, quantile="0.99"})' % [rec.quantile, R]), 's', thresholds=g.steps(1, 5)),
        g.stat('Auth failures', g.q('sum(%s{%s})' % [rec.authFailures, R]), 'reqps', description='401 and 403 answers per second.'),
        g.stat('Users seen', g.q('count(sum by (user) (increase(kube_audit_user_requests_total{%s}[$__range])) > 0)' % S), description='Authenticated users with requests in the time range (__other__ counts once).'),

        g.row('Requests'),
        g.timeseries('Requests by verb', g.q('sum by (verb) (%s{%s})' % [rec.requests, R], '{{verb}}'), 'reqps', w=8, stack=true, links=[explore('Events of this verb', ['var-verb=${__field.labels.verb}'])]),
        g.timeseries('Requests by resource (top %d)' % cfg.topK, g.q('topk(%d, sum by (resource) (%s{%s}))' % [cfg.topK, rec.requests, R], '{{resource}}'), 'reqps', w=8, stack=true, description='resource includes the subresource (pods/exec); empty for non-resource URLs such as /healthz.', links=[explore('Events on this resource', ['var-resource=${__field.labels.resource}'])]),
        g.timeseries('Requests by code', g.q('sum by (code) (%s{%s})' % [rec.requests, R], '{{code}}'), 'reqps', w=8, stack=true, links=[explore('Events with this code', ['var-code=${__field.labels.code}'])]),

        g.row('Errors'),
        g.timeseries('Error ratios', [
          g.q('%s{%s}' % [rec.errorRatio, R], '4xx and 5xx {{job}}'),
          g.q('%s{%s}' % [rec.serverErrorRatio, R], '5xx {{job}}'),
          g.q('%s{%s}' % [rec.forbiddenRatio, R], '403 (authorization) {{job}}'),
        ], 'percentunit'),
        g.timeseries('5xx by verb and resource (top %d)' % cfg.topK, g.q('topk(%d, sum by (verb, resource, code) (%s{%s, code=~"5.."}))' % [cfg.topK, rec.requests, R], '{{code}} {{verb}} {{resource}}'), 'reqps', links=[explore('Events with this answer', ['var-verb=${__field.labels.verb}', 'var-resource=${__field.labels.resource}', 'var-code=${__field.labels.code}'])]),

        g.row('Latency (long-running requests excluded)'),
        g.timeseries('Latency quantiles', g.q('%s{%s}' % [rec.quantile, R], 'p{{quantile}} {{job}}'), 's', w=8),
        g.timeseries('Latency by verb ($quantile)', g.q('%s{%s, quantile="$quantile"}' % [rec.verbQuantile, R], '{{verb}}'), 's', w=8),
        g.timeseries('Latency by resource ($quantile, top %d)' % cfg.topK, g.q('topk(%d, %s{%s, quantile="$quantile"})' % [cfg.topK, rec.resourceQuantile, R], '{{resource}}'), 's', w=8),

        g.row('Slow request phases'),
        g.timeseries('Time spent per phase of slow requests', g.q('sum by (phase) (rate(kube_audit_slow_request_phase_seconds_sum{%s, phase!="total"}[$__rate_interval]))' % S, '{{phase}}'), 's', stack=true, description='Seconds per second spent in each phase (etcd, admission webhooks, serialization...), from the apiserver.latency.k8s.io annotations the API server adds to slow requests.'),
        g.timeseries('Phase duration p99', g.q('histogram_quantile(0.99, sum by (phase, le) (rate(kube_audit_slow_request_phase_seconds_bucket{%s}[$__rate_interval])))' % S, '{{phase}}'), 's'),

        g.row('Who is asking'),
        g.table('Top users', g.qt('topk(%d, sum by (user) (increase(kube_audit_user_requests_total{%s}[$__range])))' % [cfg.topK, S]), 'requests', links=[explore('Events of this user', ['var-user=${__data.fields.user}'])]),
        g.timeseries('Requests by user kind', g.q('sum by (user_kind) (%s{%s})' % [rec.requestsByUserKind, R], '{{user_kind}}'), 'reqps', stack=true),

        g.row('Events (Loki)'),
        g.timeseries('Events by stage', g.lq('sum by (stage) (count_over_time(%s [$__interval]))' % L, '{{stage}}'), w=12, stack=true),
        g.timeseries('Events by audit level', g.lq('sum by (level) (count_over_time(%s | json level="level" [$__interval]))' % L, '{{level}}'), w=12, stack=true, description='The audit policy level (Metadata, Request, RequestResponse) read from each event.'),
      ],
    ),
  },
}
