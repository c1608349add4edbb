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
  // "0.99" -> "p99", "0.5" -> "p50"
  local pct(q) = local d = std.substr(q, 2, std.length(q) - 2); 'p' + (if std.length(d) == 1 then d + '0' else d),
  // Links that pass a metric's resource label, split into Loki's fields.
  local resourceParams(prefix) = [
    'var-resource=${%s.resource}' % prefix,
    'var-subresource=${%s.subresource}' % prefix,
  ],

  grafanaDashboards+:: {
    [cfg.dashboardFiles.overview]: g.dashboard(
      cfg,
      'overview',
      'Kubernetes audit / Overview',
      'API requests as the audit log records them: rate by verb, resource and code, server errors and refusals, latency, slow-request phases and who is asking. Click a series to open its events in the Audit explorer.',
      g.commonVariables(cfg) + [
        g.customVariable('quantile', 'latency quantile', std.reverse(cfg.latencyQuantiles)),
      ],
      [
        g.stat('Requests', g.q('sum(%s{%s})' % [rec.requests, R]), 'reqps', description='API requests per second over the last %s, each counted once. 0 or empty: no events arrive (see Exporter health).' % cfg.recordingWindow, links=[explore('All events', [])]),
        g.stat('5xx ratio', g.q('sum(%s{%s, code=~"5.."}) / sum(%s{%s})' % [rec.requests, R, rec.requests, R]), 'percentunit', thresholds=g.steps(0.01, 0.05), description='Share of requests answered 5xx: the API server, an aggregated API or a webhook failing. Over 1%: see 5xx by verb and resource.', links=[explore('Server errors', ['var-code_class=5..'])]),
        g.stat('403 ratio', g.q('%s{%s}' % [rec.forbiddenRatio, R]), 'percentunit', thresholds=g.steps(0.01, 0.05), description='Share of requests refused by authorization (403). Routine 404 and 409 answers are left out. Rising: see Refused by authorization, by user.', links=[explore('Refused events', ['var-code=403'])]),
        g.stat('Latency p99', g.q('max(%s{%s, quantile="0.99"})' % [rec.quantile, R]), 's', thresholds=g.steps(1, 5), links=[explore('All events in this time range', [])], description='99th percentile of request latency, long-running requests (watch, exec, logs -f) excluded. Over 1s: Latency by verb and Slow request phases say where.'),
        g.stat('Auth failures', g.q('sum(%s{%s})' % [rec.authFailures, R]), 'reqps', links=[explore('Failed authentications (401)', ['var-code=401']), explore('Refused by authorization (403)', ['var-code=403'])], description='401 and 403 answers per second. Rising: the Security dashboard says who and from where.'),
        g.stat('Users seen', g.q('count(sum by (user) (%s) > 0)' % g.countNew('kube_audit_user_requests_total', S, ['user'], '$__range')), decimals=0, links=[explore('Events of people', ['var-user_kind=human']), explore('Events of service accounts', ['var-user_kind=serviceaccount'])], description='Authenticated users with requests in the time range, a user seen once included (__other__ counts once). More than usual: see Top users.'),

        g.row('Requests'),
        g.timeseries('Requests by verb', g.q('sum by (verb) (%s{%s})' % [rec.requests, R], '{{verb}}'), 'reqps', w=8, stack=true, links=[explore('Events of this verb', ['var-verb=${__field.labels.verb}'])], description='Requests per second by verb. Click a series for its events. A jump in list or watch is often one client re-listing in a loop.'),
        g.timeseries('Requests by resource (top %d)' % cfg.topK, g.q(g.splitResource('topk(%d, sum by (resource) (%s{%s}))' % [cfg.topK, rec.requests, R]), '{{resource}} {{subresource}}'), 'reqps', w=8, stack=true, description='Requests per second by resource and subresource (pods exec); empty for non-resource URLs such as /healthz. Click a series for its events.', links=[explore('Events on this resource', resourceParams('__field.labels'))]),
        g.timeseries('Requests by code', g.q('sum by (code) (%s{%s})' % [rec.requests, R], '{{code}}'), 'reqps', w=8, stack=true, links=[explore('Events with this code', ['var-code=${__field.labels.code}'])], description='Requests per second by HTTP status. 404 and 409 are routine for controllers; 403, 429 and 5xx are worth a click.'),

        g.row('Errors'),
        g.timeseries('Server errors and refusals', [
          g.q('%s{%s}' % [rec.serverErrorRatio, R], '5xx {{job}}'),
          g.q('%s{%s}' % [rec.forbiddenRatio, R], '403 (authorization) {{job}}'),
        ], 'percentunit', links=[explore('Events answered 5xx', ['var-code_class=5..']), explore('Events refused by authorization (403)', ['var-code=403'])], description='Share of requests answered 5xx, and refused by authorization (403). Routine 404 and 409 are left out: they say nothing wrong.'),
        g.timeseries('5xx by verb and resource (top %d)' % cfg.topK, g.q(g.splitResource('topk(%d, sum by (verb, resource, code) (%s{%s, code=~"5.."}))' % [cfg.topK, rec.requests, R]), '{{code}} {{verb}} {{resource}} {{subresource}}'), 'reqps', links=[explore('Events with this answer', ['var-verb=${__field.labels.verb}', 'var-code=${__field.labels.code}'] + resourceParams('__field.labels'))], description='Which requests fail with 5xx. Click a series for the events and their error messages (responseStatus).'),
        g.table('Refused by authorization (403), by user', g.lqt('topk(%d, sum by (user) (count_over_time(%s | code="403" | stage="ResponseComplete" [$__range])))' % [cfg.topK, L]), 'refusals', w=24, h=6, description='Users refused most often by authorization in the time range, from Loki. A service account on every call: a Role missing after a change; a person trying many things: enumeration. Click for the events.', links=[explore('Refused events of this user', ['var-user=${__data.fields.user}', 'var-code=403'])]),

        g.row('Latency (long-running requests excluded)'),
        g.timeseries('Latency quantiles', [
          g.q('max(%s{%s, quantile="%s"})' % [rec.quantile, R, q], pct(q))
          for q in cfg.latencyQuantiles
        ], 's', w=8, links=[explore('All events in this time range', [])], description='Request latency quantiles over all verbs. A rising p99 with a flat p50 is a few slow requests: see Latency by verb.'),
        g.timeseries('Latency by verb ($quantile)', g.q('%s{%s, quantile="$quantile"}' % [rec.verbQuantile, R], '{{verb}}'), 's', w=8, links=[explore('Events of this verb', ['var-verb=${__field.labels.verb}'])], description='The chosen quantile by verb. list and deletecollection walk many objects and are slower by nature.'),
        g.timeseries('Latency by resource ($quantile, top %d)' % cfg.topK, g.q(g.splitResource('topk(%d, %s{%s, quantile="$quantile"})' % [cfg.topK, rec.resourceQuantile, R]), '{{resource}} {{subresource}}'), 's', w=8, description='The chosen quantile by resource. Click a series for its events (their latency annotations say where time went).', links=[explore('Events on this resource', resourceParams('__field.labels'))]),

        g.row('Slow request phases'),
        g.timeseries('Time spent per phase of slow requests', g.q('sum by (phase) (rate(kube_audit_slow_request_phase_seconds_sum{%s, phase!="total"}[$__rate_interval]))' % S, '{{phase}}'), 's', stack=true, links=[explore('All events in this time range', [])], description='Seconds per second spent in each phase (etcd, admission webhooks, serialization...), from the apiserver.latency.k8s.io annotations the API server adds to slow requests. A webhook phase on top: that webhook is slow.'),
        g.timeseries('Phase duration p99', g.q('histogram_quantile(0.99, sum by (phase, le) (rate(kube_audit_slow_request_phase_seconds_bucket{%s}[$__rate_interval])))' % S, '{{phase}}'), 's', links=[explore('All events in this time range', [])], description='99th percentile of each phase of slow requests. Empty: no request was slow enough for the API server to annotate it.'),

        g.row('Who is asking'),
        g.table('Top users', g.qt('topk(%d, %s)' % [cfg.topK, g.countNew('kube_audit_user_requests_total', S, ['user'], '$__range')]), 'requests', description='Users with the most requests in the time range, one request included. Click a user for the events.', links=[explore('Events of this user', ['var-user=${__data.fields.user}'])]),
        g.timeseries('Requests by user kind', g.q('sum by (user_kind) (%s{%s})' % [rec.requestsByUserKind, R], '{{user_kind}}'), 'reqps', stack=true, description='Requests per second by kind of user. Anonymous or unauthenticated traffic growing is worth a click.', links=[explore('Events of this user kind', ['var-user_kind=${__field.labels.user_kind}'])]),

        g.row('Events (Loki)'),
        g.timeseries('Events by stage', g.lq('sum by (stage) (count_over_time(%s [$__interval]))' % L, '{{stage}}'), w=12, stack=true, decimals=0, bars=true, links=[explore('Events of this stage', ['var-stage=${__field.labels.stage}'])], description='Events in Loki per interval by stage. RequestReceived only: the policy omits later stages (omitStages). Empty while Prometheus panels have data: the Loki path is broken (Exporter health).'),
        g.timeseries('Events by audit level', [
          g.lq('sum(count_over_time(%s |= `"level":"%s"` [$__interval]))' % [L, level], level)
          for level in ['Metadata', 'Request', 'RequestResponse']
        ], w=12, stack=true, decimals=0, bars=true, links=[explore('All events in this time range', [])], description='The audit policy level of each event (Metadata, Request, RequestResponse), found by a line filter rather than by parsing every event. Much RequestResponse: bodies make events large (Loki limits, spool).'),
      ],
      // The 403-by-user table is a Loki query over the whole range: refreshed
      // on demand (or at the interval picked), not every minute.
      refresh='',
    ),
  },
}
