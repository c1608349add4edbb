// Exporter health: is every event taken in, on time, and delivered to Loki
// and Alertmanager?
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,
  local S = g.promSelector(cfg),
  local rate(metric, extra='') = 'rate(%s{%s%s}[$__rate_interval])' % [metric, S, extra],

  grafanaDashboards+:: {
    [cfg.dashboardFiles.health]: g.dashboard(
      cfg,
      'health',
      'Kubernetes audit / Exporter health',
      "kube-audit-exporter's own health: ingestion by source, refused and duplicate events, lag, webhook answers, the log file, Loki pushes, the spool and Alertmanager notifications.",
      g.commonVariables(cfg),
      [
        g.stat('Exporters up', g.q('sum(up{%s})' % S), description='Targets up, of those Prometheus scrapes.', thresholds=[{ color: 'red', value: null }, { color: 'green', value: 1 }]),
        g.stat('Version', g.q('count by (version) (kube_audit_build_info{%s})' % S, '{{version}}'), textMode='name'),
        g.stat('Events ingested', g.q('sum(%s)' % rate('kube_audit_events_total')), 'ops'),
        g.stat('Newest event age', g.q('time() - max(kube_audit_last_event_timestamp_seconds{%s})' % S), 's', thresholds=g.steps(300, 900)),
        g.stat('Spool use', g.q('max(kube_audit_spool_bytes{%s} / kube_audit_spool_max_bytes{%s})' % [S, S]), 'percentunit', thresholds=g.steps(0.5, 0.8)),
        g.stat('Loki sender up', g.q('min(kube_audit_loki_sender_up{%s})' % S), description='0 after Loki refused the credentials (401/403).', thresholds=[{ color: 'red', value: null }, { color: 'green', value: 1 }]),

        g.row('Ingestion'),
        g.timeseries('Events by source', g.q('sum by (instance, source) (%s)' % rate('kube_audit_events_total'), '{{instance}} {{source}}'), 'ops', w=8),
        g.timeseries('Refused inputs by reason', g.q('sum by (source, reason) (%s)' % rate('kube_audit_events_invalid_total'), '{{source}} {{reason}}'), 'ops', w=8),
        g.timeseries('Duplicate events dropped', g.q('sum by (source) (%s)' % rate('kube_audit_events_duplicate_total'), '{{source}}'), 'ops', w=8, description='Retries of events already taken (same auditID and stage).'),
        g.timeseries('Event lag', [
          g.q('histogram_quantile(0.5, sum by (source, le) (%s))' % rate('kube_audit_event_lag_seconds_bucket'), 'p50 {{source}}'),
          g.q('histogram_quantile(0.99, sum by (source, le) (%s))' % rate('kube_audit_event_lag_seconds_bucket'), 'p99 {{source}}'),
        ], 's', w=8, description='Ingestion time minus the stageTimestamp.'),
        g.timeseries('Newest event age by source', g.q('time() - max by (instance, source) (kube_audit_last_event_timestamp_seconds{%s})' % S, '{{instance}} {{source}}'), 's', w=8),
        g.timeseries('Values folded into __other__', g.q('sum by (metric, label) (%s)' % rate('kube_audit_series_overflow_total'), '{{metric}} {{label}}'), 'ops', w=8, description='Every label is bounded: users and addresses by metrics.max_users and metrics.max_source_ips, custom resources, namespaces and webhooks by metrics.max_extra_resources, metrics.max_namespaces and metrics.max_webhooks, made-up verbs and codes fold into other (README, Label bounds).'),

        g.row('Webhook and log file'),
        g.timeseries('Webhook answers by code', g.q('sum by (code) (%s)' % rate('kube_audit_webhook_requests_total'), '{{code}}'), 'reqps', w=8, description='400: undecodable body; 413: over webhook.max_body_bytes; 503: spool full.'),
        g.timeseries('Log file bytes not yet read', g.q('max by (instance) (kube_audit_logfile_size_bytes{%s}) - max by (instance) (kube_audit_logfile_offset_bytes{%s})' % [S, S], '{{instance}}'), 'bytes', w=8),
        g.timeseries('Log file rotations and errors', [
          g.q('sum by (kind) (%s)' % rate('kube_audit_logfile_rotations_total'), 'rotation {{kind}}'),
          g.q('sum by (operation) (%s)' % rate('kube_audit_logfile_errors_total'), 'error {{operation}}'),
        ], 'ops', w=8),

        g.row('Loki'),
        g.timeseries('Entries', [
          g.q('sum(%s)' % rate('kube_audit_loki_entries_sent_total'), 'sent'),
          g.q('sum by (reason) (%s)' % rate('kube_audit_loki_entries_rejected_total'), 'rejected {{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_loki_entries_shrunk_total'), 'sent without bodies'),
        ], 'ops', w=8),
        g.timeseries('Pushes by code', g.q('sum by (code) (%s)' % rate('kube_audit_loki_requests_total'), '{{code}}'), 'reqps', w=8),
        g.timeseries('Push failures and retries', [
          g.q('sum by (reason) (%s)' % rate('kube_audit_loki_push_failures_total'), '{{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_loki_retries_total'), 'retries'),
        ], 'reqps', w=8),
        g.timeseries('Push duration', [
          g.q('histogram_quantile(0.5, sum by (le) (%s))' % rate('kube_audit_loki_push_duration_seconds_bucket'), 'p50'),
          g.q('histogram_quantile(0.99, sum by (le) (%s))' % rate('kube_audit_loki_push_duration_seconds_bucket'), 'p99'),
        ], 's'),
        g.timeseries('Loki sender up by instance', g.q('kube_audit_loki_sender_up{%s}' % S, '{{instance}}')),

        g.row('Spool'),
        g.timeseries('Spool size', [
          g.q('max by (instance) (kube_audit_spool_bytes{%s})' % S, 'used {{instance}}'),
          g.q('max by (instance) (kube_audit_spool_max_bytes{%s})' % S, 'limit {{instance}}'),
        ], 'bytes', w=8),
        g.timeseries('Spool entries and oldest entry age', [
          g.q('max by (instance) (kube_audit_spool_entries{%s})' % S, 'entries {{instance}}'),
          g.q('max by (instance) (kube_audit_spool_oldest_entry_age_seconds{%s})' % S, 'oldest entry age (s) {{instance}}'),
        ], w=8),
        g.timeseries('Spool full and damaged records', [
          g.q('sum by (instance) (%s)' % rate('kube_audit_spool_full_total'), 'refused, spool full {{instance}}'),
          g.q('sum by (instance) (%s)' % rate('kube_audit_spool_corrupt_records_total'), 'damaged records {{instance}}'),
        ], 'ops', w=8),

        g.row('Alertmanager'),
        g.timeseries('Notifications sent', g.q('sum by (instance) (%s)' % rate('kube_audit_alertmanager_alerts_sent_total'), '{{instance}}'), 'ops', w=8),
        g.timeseries('Notification failures by reason', g.q('sum by (reason) (%s)' % rate('kube_audit_alertmanager_failures_total'), '{{reason}}'), 'ops', w=8),
        g.timeseries('Notifications queued', g.q('sum by (instance) (kube_audit_alertmanager_queue_length{%s})' % S, '{{instance}}'), w=8),
      ],
    ),
  },
}
