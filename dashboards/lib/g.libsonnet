// Panel, variable and layout helpers, so that a panel is one line.
// grafonnet cannot be vendored here, and the dashboards need only these few
// panel types. Every panel's datasource is a template variable: ${datasource}
// for Prometheus, ${loki_datasource} for Loki.
{
  local g = self,

  prometheus:: { type: 'prometheus', uid: '${datasource}' },
  loki:: { type: 'loki', uid: '${loki_datasource}' },

  // ---- selectors -----------------------------------------------------------

  // Raw exporter series: the configured selector, narrowed by the variables.
  promSelector(cfg)::
    '%s, %s=~"$cluster", job=~"$job"' % [cfg.exporterSelector, cfg.clusterLabel],
  // Recorded series already passed the exporter selector.
  recSelector(cfg):: '%s=~"$cluster", job=~"$job"' % cfg.clusterLabel,
  // The exporter's streams in Loki (stream labels only).
  lokiSelector(cfg, extra=''):: '{service_name="%s", cluster=~"$cluster"%s}' % [
    cfg.lokiServiceName,
    if extra == '' then '' else ', ' + extra,
  ],

  // ---- counts that see one-off events ------------------------------------------

  // Events counted per `window` (Grafana's $__interval for a timeseries,
  // $__range for a stat or a table), grouped by `by`, where the counter's
  // series may be created by its first event (a sensitive operation, a
  // failed-open webhook, a user): increase() and rate() need two samples and
  // cannot see that first event, so a single exec or secret read would not
  // show. A series that existed `window` ago counts its growth (0 at a
  // counter reset); one that did not counts its whole value, as the alerts
  // do (alerts.libsonnet, increaseOrNew).
  countNew(metric, selector, by, window)::
    local m = '%s{%s}' % [metric, selector];
    'sum by (%(by)s) (clamp_min(%(m)s - %(m)s offset %(w)s, 0) or (%(m)s unless %(m)s offset %(w)s))' % {
      by: std.join(', ', by),
      m: m,
      w: window,
    },

  // Splits the metrics' `resource` label ("pods/exec") into Loki's two
  // fields, `resource` ("pods") and `subresource` ("exec", absent when there
  // is none), so that a data link can pass each to the Explorer exactly.
  splitResource(expr)::
    'label_replace(label_replace(%s, "subresource", "$2", "resource", "([^/]*)/(.+)"), "resource", "$1", "resource", "([^/]*)/.+")' % expr,

  // ---- targets -------------------------------------------------------------

  // A PromQL range query; legend uses Grafana's {{label}} syntax.
  q(expr, legend=''):: {
    datasource: g.prometheus,
    expr: expr,
    legendFormat: legend,
    range: true,
    instant: false,
  },
  // A PromQL instant query as a table (for "top N" tables).
  qt(expr):: g.q(expr) + { range: false, instant: true, format: 'table' },
  // A LogQL query (logs or a metric query over time).
  lq(expr, legend=''):: {
    datasource: g.loki,
    expr: expr,
    legendFormat: legend,
    queryType: 'range',
  },
  // A LogQL metric query evaluated once over the dashboard range, as a table.
  lqt(expr):: g.lq(expr) + { queryType: 'instant' },

  local asList(t) = if std.isArray(t) then t else [t],
  local withRefIds(ts) = [
    ts[i] { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(ts) - 1)
  ],

  // ---- panels --------------------------------------------------------------

  panel(type, title, targets, w, h, description='')::
    local ts = asList(targets);
    assert description != '' : title + ': every panel says what it shows and what to do when it looks wrong';
    {
      type: type,
      title: title,
      description: description,
      datasource: ts[0].datasource,
      targets: withRefIds(ts),
      gridPos: { w: w, h: h },
    },

  // Data links: shown when a series or cell is clicked.
  link(title, url):: { title: title, url: url },

  // `decimals=0` for counts (no "0.5 events"); `bars` for counts per interval.
  timeseries(title, targets, unit='short', w=12, h=8, stack=false, description='', links=[], min=0, decimals=null, bars=false)::
    g.panel('timeseries', title, targets, w, h, description) {
      fieldConfig: {
        defaults: {
          unit: unit,
          [if decimals != null then 'decimals']: decimals,
          min: min,
          links: links,
          custom: {
            drawStyle: if bars then 'bars' else 'line',
            lineWidth: 1,
            fillOpacity: if stack then 40 else 10,
            showPoints: 'never',
            spanNulls: false,
            stacking: { mode: if stack then 'normal' else 'none', group: 'A' },
          },
        },
        overrides: [],
      },
      options: {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  // A single number: the last value of the first series.
  // Its queries are instant: one value at the end of the range, not a series.
  stat(title, targets, unit='short', w=4, h=4, description='', decimals=null, thresholds=null, textMode='value', links=[])::
    local instant = [t { range: false, instant: true } for t in asList(targets)];
    g.panel('stat', title, instant, w, h, description) {
      fieldConfig: {
        defaults: {
          unit: unit,
          links: links,
          [if decimals != null then 'decimals']: decimals,
          thresholds: {
            mode: 'absolute',
            steps: if thresholds == null then [{ color: 'green', value: null }] else thresholds,
          },
        },
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'value',
        graphMode: 'none',
        justifyMode: 'auto',
        textMode: textMode,
        orientation: 'auto',
      },
    },

  // Thresholds for a stat: green below `warn`, orange from it, red from `crit`.
  steps(warn, crit):: [
    { color: 'green', value: null },
    { color: 'orange', value: warn },
    { color: 'red', value: crit },
  ],

  // A table of instant results, largest value first, without the Time column.
  // `value` names the value column; `links` apply to every cell.
  table(title, targets, value='Value', unit='short', w=12, h=8, description='', links=[], decimals=0)::
    g.panel('table', title, targets, w, h, description) {
      fieldConfig: {
        defaults: { unit: unit, decimals: decimals, links: links, custom: { align: 'auto' } },
        overrides: [],
      },
      options: {
        showHeader: true,
        sortBy: [{ displayName: value, desc: true }],
        footer: { show: false, reducer: ['sum'], fields: '' },
      },
      transformations: [{
        id: 'organize',
        options: { excludeByName: { Time: true }, renameByName: { Value: value } },
      }],
    },

  // Raw log lines, newest first, with the details (all labels and
  // structured metadata) one click away.
  logs(title, targets, w=24, h=14, description='')::
    g.panel('logs', title, targets, w, h, description) {
      options: {
        showTime: true,
        showLabels: false,
        showCommonLabels: false,
        wrapLogMessage: true,
        prettifyLogMessage: false,
        enableLogDetails: true,
        dedupStrategy: 'none',
        sortOrder: 'Descending',
      },
    },

  // Log lines as a table, one row per event: its time and the structured
  // metadata named in `columns` (user, object...), newest first; `links`
  // apply to every cell (the audit ID into the Explorer).
  eventTable(title, targets, columns, w=24, h=8, description='', links=[])::
    g.panel('table', title, targets, w, h, description) {
      fieldConfig: {
        defaults: { links: links, custom: { align: 'auto' } },
        overrides: [],
      },
      options: {
        showHeader: true,
        sortBy: [{ displayName: 'Time', desc: true }],
        footer: { show: false, reducer: ['count'], fields: '' },
      },
      transformations: [
        { id: 'extractFields', options: { source: 'labels', replace: false, keepTime: true } },
        {
          id: 'organize',
          options: {
            includeByName: { [c]: true for c in ['Time'] + columns },
            indexByName: { [(['Time'] + columns)[i]]: i for i in std.range(0, std.length(columns)) },
          },
        },
      ],
    },

  // A Loki annotation: every matching event a marker on the time axis, its
  // text the line's who/what, tags from the given metadata fields.
  lokiAnnotation(name, expr, color, tagKeys, text):: {
    name: name,
    datasource: g.loki,
    enable: true,
    hide: false,
    iconColor: color,
    expr: expr,
    instant: false,
    tagKeys: std.join(',', tagKeys),
    titleFormat: name,
    textFormat: text,
  },

  row(title):: { type: 'row', title: title, collapsed: false, panels: [] },

  // ---- layout --------------------------------------------------------------

  // Places panels left to right in a 24-column grid, wrapping to a new line
  // when a panel does not fit; a row always starts a new line. Ids follow the
  // order, so they are unique and stable.
  layout(items)::
    local step(acc, p) =
      if p.type == 'row' then
        local y = acc.y + acc.lineH;
        acc {
          x: 0,
          y: y + 1,
          lineH: 0,
          id: acc.id + 1,
          out+: [p { id: acc.id, gridPos: { x: 0, y: y, w: 24, h: 1 } }],
        }
      else
        local wrap = acc.x + p.gridPos.w > 24;
        local x = if wrap then 0 else acc.x;
        local y = if wrap then acc.y + acc.lineH else acc.y;
        acc {
          x: x + p.gridPos.w,
          y: y,
          lineH: if wrap then p.gridPos.h else std.max(acc.lineH, p.gridPos.h),
          id: acc.id + 1,
          out+: [p { id: acc.id, gridPos+: { x: x, y: y } }],
        };
    std.foldl(step, items, { x: 0, y: 0, lineH: 0, id: 1, out: [] }).out,

  // ---- variables -----------------------------------------------------------

  datasourceVariable(name, label, type, current, regex=''):: {
    name: name,
    label: label,
    type: 'datasource',
    query: type,
    regex: regex,
    current: { selected: true, text: current, value: current },
    hide: 0,
    refresh: 1,
    includeAll: false,
    multi: false,
    options: [],
  },

  // A variable filled from a query (label_values(...)) on `datasource`.
  // With includeAll, "All" is `allValue` when given, else the alternation of
  // every value.
  queryVariable(name, label, datasource, query, includeAll=false, allValue=null, multi=false, hide=0):: {
    name: name,
    label: label,
    type: 'query',
    datasource: datasource,
    query: query,
    definition: query,
    regex: '',
    refresh: 2,
    sort: 1,
    includeAll: includeAll,
    [if allValue != null then 'allValue']: allValue,
    multi: multi,
    hide: hide,
    current: if includeAll then { selected: true, text: 'All', value: '$__all' } else {},
    options: [],
  },

  // Fixed choices, the first one selected.
  customVariable(name, label, values):: {
    name: name,
    label: label,
    type: 'custom',
    query: std.join(',', values),
    current: { selected: true, text: values[0], value: values[0] },
    options: [
      { selected: i == 0, text: values[i], value: values[i] }
      for i in std.range(0, std.length(values) - 1)
    ],
    hide: 0,
    includeAll: false,
    multi: false,
  },

  // An exact filter: "All" (the default) matches every value, the empty one
  // too; any value typed, or passed by a link (var-user=alice), matches only
  // itself. Queries use ${name:regex}: Grafana escapes a typed value, and
  // leaves the custom all value (.*) as it is.
  filterVariable(name, label, description, values=[], multi=false):: {
    name: name,
    label: label,
    description: description,
    type: 'custom',
    query: std.join(',', values),
    includeAll: true,
    allValue: '.*',
    allowCustomValue: true,
    multi: multi,
    current: { selected: true, text: 'All', value: '$__all' },
    options: [],
    hide: 0,
  },

  // Free text, empty by default; queries use it inside a regular expression.
  textVariable(name, label, description=''):: {
    name: name,
    label: label,
    description: description,
    type: 'textbox',
    query: '',
    current: { selected: false, text: '', value: '' },
    options: [{ selected: true, text: '', value: '' }],
    hide: 0,
  },

  // Datasources, cluster and job: every dashboard starts with these.
  commonVariables(cfg):: [
    g.datasourceVariable('datasource', 'Prometheus', 'prometheus', cfg.prometheusDatasource, cfg.datasourceFilterRegex),
    g.datasourceVariable('loki_datasource', 'Loki', 'loki', cfg.lokiDatasource, cfg.datasourceFilterRegex),
    g.queryVariable(
      'cluster',
      'cluster',
      g.prometheus,
      'label_values(kube_audit_build_info{%s}, %s)' % [cfg.exporterSelector, cfg.clusterLabel],
      includeAll=true,
      allValue='.*',
      hide=if cfg.showMultiCluster then 0 else 2,
    ),
    g.queryVariable(
      'job',
      'job',
      g.prometheus,
      'label_values(kube_audit_build_info{%s, %s=~"$cluster"}, job)' % [cfg.exporterSelector, cfg.clusterLabel],
      includeAll=true,
      multi=true,
    ),
  ],

  // ---- dashboard -----------------------------------------------------------

  dashboard(cfg, key, title, description, variables, panels, annotations=[], refresh=null):: {
    uid: cfg.dashboardUIDs[key],
    title: title,
    description: description,
    tags: cfg.dashboardTags,
    timezone: cfg.dashboardTimezone,
    refresh: if refresh == null then cfg.dashboardRefresh else refresh,
    time: { from: cfg.dashboardFrom, to: 'now' },
    editable: false,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    annotations: { list: annotations },
    // The other kube-audit dashboards, keeping the time range and variables.
    links: [{
      title: 'kube-audit',
      type: 'dashboards',
      tags: cfg.dashboardTags,
      asDropdown: true,
      includeVars: true,
      keepTime: true,
      targetBlank: false,
    }],
    templating: { list: variables },
    panels: g.layout(panels),
  },

  // A data link into the Audit explorer over the same time range, cluster and
  // datasources, with `params` ("var-user=${__field.labels.user}") added.
  explorerLink(cfg, title, params=[])::
    g.link(title, '/d/%s/kube-audit-explorer?%s' % [
      cfg.dashboardUIDs.explorer,
      std.join('&', [
        '${__url_time_range}',
        '${datasource:queryparam}',
        '${loki_datasource:queryparam}',
        '${cluster:queryparam}',
      ] + params),
    ]),
}
