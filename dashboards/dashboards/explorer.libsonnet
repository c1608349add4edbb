// Audit explorer (Loki): from a number on another dashboard to the raw
// events behind it. Every filter is exact: "All" matches everything, a value
// typed or passed by a data link (var-user=alice) matches only itself, never
// alice-admin. The volume panels show where to look, dragging over a spike
// narrows the time range, and the logs panel shows each whole event.
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,

  // The exporter's structured metadata, one exact filter each (rules is a
  // comma-separated list: the rule matches one of its items).
  local filters = std.join('\n  ', [
    '| user=~"${user:regex}"',
    '| user_kind=~"${user_kind:regex}"',
    '| resource=~"${resource:regex}"',
    '| subresource=~"${subresource:regex}"',
    '| namespace=~"${namespace:regex}"',
    '| name=~"${name:regex}"',
    '| code=~"${code:regex}"',
    '| code=~"${code_class}"',
    '| source_ip=~"${source_ip:regex}"',
    '| rules=~"(.*,)?${rule:regex}(,.*)?"',
    '| audit_id=~"${audit_id:regex}"',
    '| stage=~"${stage:regex}"',
    '| rule_severity=~"${rule_severity:regex}"',
  ]),
  local events = '%s\n  %s' % [g.lokiSelector(cfg, 'verb=~"${verb:regex}"'), filters],
  local filter(name, label, description) = g.filterVariable(name, label, description),

  grafanaDashboards+:: {
    [cfg.dashboardFiles.explorer]: g.dashboard(
      cfg,
      'explorer',
      'Kubernetes audit / Explorer',
      'The raw audit events in Loki. Every filter is exact (type a value, or pick All); the other dashboards open this one with the filters of the number clicked. Drag over a spike to zoom in, and expand a line for the whole event.',
      // No job variable: Loki has no job label, only cluster.
      std.filter(function(v) v.name != 'job', g.commonVariables(cfg)) + [
        g.queryVariable('verb', 'verb', g.loki, 'label_values({service_name="%s"}, verb)' % cfg.lokiServiceName, includeAll=true, allValue='.*', multi=true),
        filter('user', 'user', 'The user name exactly (system:serviceaccount:ns:name for a service account).'),
        g.filterVariable('user_kind', 'user kind', 'human, serviceaccount, node, system, anonymous or unauthenticated.', ['human', 'serviceaccount', 'node', 'system', 'anonymous', 'unauthenticated'], multi=true),
        filter('resource', 'resource', 'The resource exactly, without subresource: pods, secrets...'),
        filter('subresource', 'subresource', 'exec, log, status, token...; empty for requests on the object itself.'),
        filter('namespace', 'namespace', 'The namespace exactly.'),
        filter('name', 'name', "The object's name exactly."),
        filter('code', 'code', 'The HTTP status code exactly: 403.'),
        g.customVariable('code_class', 'code class', ['All : .*', '1xx : 1..', '2xx : 2..', '3xx : 3..', '4xx : 4..', '5xx : 5..']) {
          current: { selected: true, text: 'All', value: '.*' },
          options: [],
        },
        filter('source_ip', 'source address', 'The source IP address exactly (the last of sourceIPs).'),
        filter('rule', 'detection rule', 'A detection rule id exactly: events it matched.'),
        filter('audit_id', 'audit ID', 'One request: its auditID, from a notification or a table.'),
        g.filterVariable('rule_severity', 'detection severity', 'The highest severity among the rules an event matched: critical, warning or info.', ['critical', 'warning', 'info'], multi=true),
        g.filterVariable('stage', 'stage', 'RequestReceived, ResponseStarted (the start of exec, attach, watch; the only one of a 401), ResponseComplete or Panic. One request logs up to three stages; ResponseComplete alone counts requests once.', ['RequestReceived', 'ResponseStarted', 'ResponseComplete', 'Panic'], multi=true),
      ],
      [
        g.row('Event volume'),
        g.timeseries('Events by verb', g.lq('sum by (verb) (count_over_time(%s\n  [$__interval]))' % events, '{{verb}}'), stack=true, decimals=0, bars=true, description='Events per interval, every stage counted (a request logs up to three). Drag over a spike to zoom in: every panel follows the time range. Empty: widen the time range or set a filter back to All.'),
        g.timeseries('Events by status code', g.lq('sum by (code) (count_over_time(%s\n  | code!=""\n  [$__interval]))' % events, '{{code}}'), stack=true, decimals=0, bars=true, description='Only the events that carry a code (ResponseStarted, ResponseComplete, Panic). Click a code in the legend to see it alone; set the code filter to list its events.'),

        g.row('Who, what, where (time range)'),
        g.table('Top users', g.lqt('topk(%d, sum by (user) (count_over_time(%s\n  | user!=""\n  [$__range])))' % [cfg.topK, events]), 'events', w=8, description='Users with the most events under the filters. Click a user to filter by it.', links=[g.explorerLink(cfg, 'Events of this user', ['var-user=${__data.fields.user}'])]),
        g.table('Top objects', g.lqt('topk(%d, sum by (namespace, resource, subresource, name) (count_over_time(%s\n  | resource!=""\n  [$__range])))' % [cfg.topK, events]), 'events', w=8, description='Objects with the most events under the filters. Click one to filter by it.', links=[g.explorerLink(cfg, 'Events on this object', ['var-namespace=${__data.fields.namespace}', 'var-resource=${__data.fields.resource}', 'var-subresource=${__data.fields.subresource}', 'var-name=${__data.fields.name}'])]),
        g.table('Top source addresses', g.lqt('topk(%d, sum by (source_ip) (count_over_time(%s\n  | source_ip!=""\n  [$__range])))' % [cfg.topK, events]), 'events', w=8, description='Source addresses (the last of sourceIPs, the peer the API server saw) with the most events. Click one to filter by it.', links=[g.explorerLink(cfg, 'Events from this address', ['var-source_ip=${__data.fields.source_ip}'])]),

        g.row('Events'),
        g.logs('Audit events', g.lq(events), h=18, description='Each whole event, as the API server wrote it (Secret data and tokens redacted), newest first: requestURI, user agent, objectRef, responseStatus and, at Request level and above, the bodies. Expand a line for its structured metadata (user, resource, subresource, name, code, audit_id, rules).'),
      ],
      // Loki tables scan the whole range: refreshed on demand, not every minute.
      refresh='',
    ),
  },
}
