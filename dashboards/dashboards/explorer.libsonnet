// Audit explorer (Loki): from a spike to the raw events that caused it.
// Filters are variables; the volume panels show where to look, dragging over
// a spike narrows the time range, and the logs panel lists those events as
// "user verb object -> code from address (user agent)".
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,

  // Text filters match anywhere in the value; empty matches everything
  // (events without the field too).
  local filters = std.join(' ', [
    '| user=~"(?i).*${user}.*"',
    '| namespace=~".*${namespace}.*"',
    '| resource=~".*${resource}.*"',
    '| code=~"${code}.*"',
    '| source_ip=~".*${source_ip}.*"',
    '| rules=~".*${rule}.*"',
  ]),
  local events = '%s %s' % [g.lokiSelector(cfg, 'verb=~"$verb"'), filters],

  grafanaDashboards+:: {
    [cfg.dashboardFiles.explorer]: g.dashboard(
      cfg,
      'explorer',
      'Kubernetes audit / Explorer',
      'The raw audit events in Loki. Narrow with the filters (user, namespace, resource, code and source address match anywhere in the value; code by prefix, so 4 is every 4xx), drag over a spike to zoom in, and expand a line for the whole event and its auditID.',
      g.commonVariables(cfg) + [
        g.queryVariable('verb', 'verb', g.loki, 'label_values({service_name="%s"}, verb)' % cfg.lokiServiceName, includeAll=true, allValue='.+', multi=true),
        g.textVariable('user', 'user', 'Part of the user name, case-insensitive.'),
        g.textVariable('namespace', 'namespace', 'Part of the namespace.'),
        g.textVariable('resource', 'resource', 'Part of the resource (pods, secrets...).'),
        g.textVariable('code', 'code', 'Start of the HTTP status code: 403, or 4 for every 4xx.'),
        g.textVariable('source_ip', 'source address', 'Part of the source IP address.'),
        g.textVariable('rule', 'detection rule', 'Part of a detection rule id.'),
      ],
      [
        g.row('Event volume'),
        g.timeseries('Events by verb', g.lq('sum by (verb) (count_over_time(%s [$__interval]))' % events, '{{verb}}'), stack=true, description='Drag over a spike to zoom in: every panel follows the time range.'),
        g.timeseries('Events by status code', g.lq('sum by (code) (count_over_time(%s | code!="" [$__interval]))' % events, '{{code}}'), stack=true, description='Only the events that carry a code (ResponseStarted, ResponseComplete, Panic).'),

        g.row('Who, what, where (time range)'),
        g.table('Top users', g.lqt('topk(%d, sum by (user) (count_over_time(%s | user!="" [$__range])))' % [cfg.topK, events]), 'events', w=8),
        g.table('Top objects', g.lqt('topk(%d, sum by (namespace, resource, name) (count_over_time(%s | resource!="" [$__range])))' % [cfg.topK, events]), 'events', w=8),
        g.table('Top source addresses', g.lqt('topk(%d, sum by (source_ip) (count_over_time(%s | source_ip!="" [$__range])))' % [cfg.topK, events]), 'events', w=8),

        g.row('Events'),
        g.logs('Audit events', g.lq(|||
          %s | json user_agent="userAgent"
            | line_format `{{.user}} {{.verb}} {{.resource}}{{with .subresource}}/{{.}}{{end}} {{with .namespace}}{{.}}/{{end}}{{.name}} -> {{.code}} from {{.source_ip}} ({{.user_agent}}) {{.stage}}{{with .rules}} rules={{.}}{{end}}`
        ||| % events), h=18, description='time, user, verb, object, code, source address, user agent. Expand a line for the whole event, its auditID and stage.'),
      ],
    ),
  },
}
