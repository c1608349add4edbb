// Exporter health: is every event taken in, on time, checked by the rules,
// and delivered to Loki and Alertmanager?
local g = import '../lib/g.libsonnet';

{
  local cfg = $._config,
  local S = g.promSelector(cfg),
  local rate(metric, extra='') = 'rate(%s{%s%s}[$__rate_interval])' % [metric, S, extra],
  // Events per interval, a series' first event included.
  local counts(metric, by, extra='') = g.countNew(metric, S + extra, by, '$__interval'),

  grafanaDashboards+:: {
    [cfg.dashboardFiles.health]: g.dashboard(
      cfg,
      'health',
      'Kubernetes audit / Exporter health',
      "kube-audit-exporter's own health: ingestion by source, refused and duplicate events, lag, the webhook and its TLS, the log file, managed sources, detection rules and their state, Loki pushes, the spool and Alertmanager notifications. Every alert of the mixin points at a panel here.",
      g.commonVariables(cfg),
      [
        g.stat('Exporters up', g.q('sum(up{%s})' % S), decimals=0, description='Targets up, of those Prometheus scrapes. 0: KubeAuditExporterAbsent; check the pods and the ServiceMonitor.', thresholds=[{ color: 'red', value: null }, { color: 'green', value: 1 }]),
        g.stat('Version', g.q('count by (version) (kube_audit_build_info{%s})' % S, '{{version}}'), textMode='name', description='The running version(s). Two during a rollout; more for long is a stuck rollout.'),
        g.stat('Events ingested', g.q('sum(%s)' % rate('kube_audit_events_total')), 'ops', description='Events accepted per second, every source and stage. 0: KubeAuditNoEventsReceived; the API server is not sending.'),
        g.stat('Newest event age', g.q('time() - max(kube_audit_last_event_timestamp_seconds{%s})' % S), 's', thresholds=g.steps(300, 900), description='Age of the newest event of any source. Over a few minutes: a source stopped (see Newest event age by source).'),
        g.stat('Spool use', g.q('max(kube_audit_spool_bytes{%s} / kube_audit_spool_max_bytes{%s})' % [S, S]), 'percentunit', thresholds=g.steps(0.5, 0.8), description='Share of spool.max_bytes waiting for Loki on the fullest instance. Growing: Loki is behind (see the Loki row).'),
        g.stat('Loki sender up', g.q('min(kube_audit_loki_sender_up{%s})' % S), decimals=0, description='0 after Loki refused the credentials (401/403): fix the credential files; the sender resumes when they change.', thresholds=[{ color: 'red', value: null }, { color: 'green', value: 1 }]),

        g.row('Ingestion'),
        g.timeseries('Events by source', g.q('sum by (instance, source) (%s)' % rate('kube_audit_events_total'), '{{instance}} {{source}}'), 'ops', w=8, description='Events accepted per second by instance and source. A source at 0 while the others run has lost its input.'),
        g.timeseries('Refused inputs by reason', g.q(counts('kube_audit_events_invalid_total', ['source', 'reason']), '{{source}} {{reason}}'), w=8, decimals=0, bars=true, description='Inputs refused per interval (the exporter logs each with its location, never the content); their events are missing everywhere. See KubeAuditInvalidEvents.'),
        g.timeseries('Duplicate and future events', [
          g.q('sum by (source) (%s)' % rate('kube_audit_events_duplicate_total'), 'duplicate {{source}}'),
          g.q('sum by (source) (%s)' % rate('kube_audit_events_future_total'), 'future {{source}}'),
        ], 'ops', w=8, description='Duplicates: retries of events already taken (same auditID and stage), dropped. Future: events stamped ahead of the clock by more than events.max_future_skew; a steady rate is a clock out of step.'),
        g.timeseries('Event lag', [
          g.q('histogram_quantile(0.5, sum by (source, le) (%s))' % rate('kube_audit_event_lag_seconds_bucket'), 'p50 {{source}}'),
          g.q('histogram_quantile(0.99, sum by (source, le) (%s))' % rate('kube_audit_event_lag_seconds_bucket'), 'p99 {{source}}'),
        ], 's', w=8, description='Ingestion time minus the stageTimestamp. The webhook batches for up to 30s; minutes mean a backlog or a clock out of step (KubeAuditEventLagHigh).'),
        g.timeseries('Newest event age by source', g.q('time() - max by (instance, source) (kube_audit_last_event_timestamp_seconds{%s})' % S, '{{instance}} {{source}}'), 's', w=8, description='Age of the newest event per instance and source: a sawtooth is healthy, a rising line a stopped source.'),
        g.timeseries('Values folded into __other__', g.q(counts('kube_audit_series_overflow_total', ['metric', 'label']), '{{metric}} {{label}}'), w=8, decimals=0, bars=true, description='Every label is bounded: users and addresses by metrics.max_users and metrics.max_source_ips, custom resources, namespaces and webhooks by metrics.max_extra_resources, metrics.max_namespaces and metrics.max_webhooks, made-up verbs and codes fold into other (README, Label bounds).'),

        g.row('Webhook and log file'),
        g.timeseries('Webhook answers by code', g.q('sum by (code) (%s)' % rate('kube_audit_webhook_requests_total'), '{{code}}'), 'reqps', w=8, description='400: undecodable body; 413: over webhook.max_body_bytes; 503: spool full. Anything but 200 loses or delays events (KubeAuditWebhookRequestsFailing, KubeAuditSpoolFull).'),
        g.timeseries('Webhook TLS handshake failures', g.q(counts('kube_audit_webhook_tls_handshake_failures_total', ['reason']), '{{reason}}'), w=8, decimals=0, bars=true, description='Failed TLS handshakes by OpenSSL reason, a single one included. From the API server: its client certificate or CA is wrong and it cannot deliver (KubeAuditWebhookTLSHandshakeFailures).'),
        g.timeseries('Connections', [
          g.q('sum by (listener) (kube_audit_http_connections{%s})' % S, 'open {{listener}}'),
        ], w=8, decimals=0, description='Connections open now per listener (webhook, web), silent ones included. Hundreds on the webhook: a client leaking connections.'),
        g.timeseries('Connections cut', g.q(counts('kube_audit_http_connections_closed_total', ['listener', 'reason']), '{{listener}} {{reason}}'), w=8, decimals=0, bars=true, description='Connections the HTTP server cut, by listener and reason (handshake_timeout, tls_error, client_cert, header_timeout...). On the webhook: a client that is not the API server, or the API server failing TLS.'),
        g.timeseries('Log file bytes not yet read', g.q('max by (instance) (kube_audit_logfile_size_bytes{%s}) - max by (instance) (kube_audit_logfile_offset_bytes{%s})' % [S, S], '{{instance}}'), 'bytes', w=8, description='Bytes of the audit log behind the reader. Growing: the tailer cannot keep up, or its errors stop it (KubeAuditLogFileErrors).'),
        g.timeseries('Log file rotations and errors', [
          g.q(counts('kube_audit_logfile_rotations_total', ['kind']), 'rotation {{kind}}'),
          g.q(counts('kube_audit_logfile_errors_total', ['operation']), 'error {{operation}}'),
        ], w=8, decimals=0, bars=true, description='Rotations followed, and errors by operation (open, read, checkpoint, process), per interval. Errors: the exporter log says which file and why.'),
        g.timeseries('Log file checkpoint age', g.q('time() - max by (instance) (kube_audit_logfile_checkpoint_timestamp_seconds{%s} > 0)' % S, '{{instance}}'), 's', w=8, description='Time since each tailer last wrote its checkpoint. Growing while events arrive: checkpoint errors; a restart would read events again.'),

        g.row('Managed sources (EKS, GKE, AKS)'),
        g.timeseries('Managed source answers and messages', [
          g.q('sum by (code) (%s)' % rate('kube_audit_eks_firehose_requests_total'), 'EKS Firehose {{code}}'),
          g.q('sum by (code) (%s)' % rate('kube_audit_gke_push_requests_total'), 'GKE push {{code}}'),
          g.q('sum by (outcome) (%s)' % rate('kube_audit_gke_pull_messages_total'), 'GKE pull {{outcome}}'),
          g.q('max(kube_audit_aks_archive_streams{%s})' % S, 'AKS archive streams'),
        ], w=8, description='Deliveries answered by the EKS Firehose endpoint and the GKE push endpoint by code, GKE messages pulled by outcome, and AKS archive streams followed. Empty: no managed source is configured. 401/403: tokens; 503: spool full.'),
        g.timeseries('Managed source errors', [
          g.q(counts('kube_audit_eks_cloudwatch_errors_total', ['operation', 'kind']), 'EKS CloudWatch {{operation}} {{kind}}'),
          g.q(counts('kube_audit_aks_archive_errors_total', ['operation']), 'AKS archive {{operation}}'),
          g.q(counts('kube_audit_aks_eventhub_errors_total', ['operation']), 'AKS Event Hubs {{operation}}'),
        ], w=8, decimals=0, bars=true, description='Cloud API errors per interval after the SDK retries; the source backs off and calls again. Steady errors: credentials or permissions (README, Managed clusters).'),
        g.timeseries('AKS archive checkpoint age', g.q('time() - max by (instance) (kube_audit_aks_archive_checkpoint_timestamp_seconds{%s} > 0)' % S, '{{instance}}'), 's', w=8, description='Time since the AKS archive checkpoint was written. Growing: the archive source is stuck (its errors, left).'),

        g.row('Detection'),
        g.timeseries('Rules inactive', g.q('count by (instance) (kube_audit_detect_rule_active{%s} == 0)' % S, '{{instance}}'), w=8, decimals=0, description='Loaded rules that do not run: disabled, or a setting they need is empty (KubeAuditRuleInactive; `rules list` says which).'),
        g.timeseries('Detection state', g.q('topk(%d, sum by (rule) (kube_audit_detect_state_entries{%s}))' % [cfg.topK, S], '{{rule}}'), w=8, decimals=0, description='State held by stateful rules (groups, sequences, values seen), bounded by detect.max_state_entries per rule. At the bound: evictions (right).'),
        g.timeseries('Detection errors and state evictions', [
          g.q(counts('kube_audit_detect_errors_total', ['rule']), 'errors {{rule}}'),
          g.q(counts('kube_audit_detect_state_evictions_total', ['rule']), 'evicted {{rule}}'),
        ], w=8, decimals=0, bars=true, description='Rule evaluations that failed (the event went on unchecked by that rule), and state evicted at the bound, per interval (KubeAuditRuleErrors, KubeAuditRuleStateEvictions).'),

        g.row('Loki'),
        g.timeseries('Entries', [
          g.q('sum(%s)' % rate('kube_audit_loki_entries_sent_total'), 'sent'),
          g.q('sum by (reason) (%s)' % rate('kube_audit_loki_entries_rejected_total'), 'rejected {{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_loki_entries_shrunk_total'), 'sent without bodies'),
          g.q('sum(%s)' % rate('kube_audit_loki_entries_resent_without_metadata_total'), 'resent without metadata'),
        ], 'ops', w=8, description='Entries Loki accepted, refused for good (by reason: KubeAuditLokiEntriesRejected, too_far_behind KubeAuditLokiEntriesTooFarBehind, blocked_ingestion KubeAuditLokiIngestionBlocked), sent without their bodies (over loki.line_limit), and sent again without structured metadata after Loki refused it (KubeAuditLokiStructuredMetadataRefused).'),
        g.timeseries('Pushes by code', [
          g.q('sum by (code) (%s)' % rate('kube_audit_loki_requests_total'), '{{code}}'),
          g.q('sum(%s)' % rate('kube_audit_loki_batches_sent_total'), 'answered 2xx'),
        ], 'reqps', w=8, description='Pushes by HTTP status or transport error, and those answered 2xx. 429 and 5xx are retried with backoff; 401/403 stop the sender; 260 is a blocked tenant (KubeAuditLokiIngestionBlocked).'),
        g.timeseries('Push failures and retries', [
          g.q('sum by (reason) (%s)' % rate('kube_audit_loki_push_failures_total'), '{{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_loki_retries_total'), 'retries'),
        ], 'reqps', w=8, description='Failed pushes by reason, and pushes sent again. Sparse points are normal during an outage: retries back off up to 5 minutes (KubeAuditLokiPushFailing).'),
        g.timeseries('Push duration', [
          g.q('histogram_quantile(0.5, sum by (le) (%s))' % rate('kube_audit_loki_push_duration_seconds_bucket'), 'p50'),
          g.q('histogram_quantile(0.99, sum by (le) (%s))' % rate('kube_audit_loki_push_duration_seconds_bucket'), 'p99'),
        ], 's', w=8, description='Duration of one push. Seconds: Loki is slow to ingest, and the spool grows.'),
        g.timeseries('Entry latency', [
          g.q('histogram_quantile(0.5, sum by (le) (%s))' % rate('kube_audit_loki_entry_latency_seconds_bucket'), 'p50'),
          g.q('histogram_quantile(0.99, sum by (le) (%s))' % rate('kube_audit_loki_entry_latency_seconds_bucket'), 'p99'),
        ], 's', w=8, description="From an entry's spooling to Loki's answer for it: how late events show in the Explorer and the Loki alerts. Minutes: Loki is failing or slow (KubeAuditLokiPushFailing, KubeAuditSpoolEntriesOld)."),
        g.timeseries('Bytes pushed', [
          g.q('sum(%s)' % rate('kube_audit_loki_sent_bytes_total'), 'accepted, uncompressed'),
          g.q('sum(%s)' % rate('kube_audit_loki_request_bytes_total'), 'sent, compressed, retries included'),
        ], 'Bps', w=8, description="Uncompressed bytes of the pushes Loki accepted (what its ingestion_rate_mb limit counts), and request bodies as sent. Near the tenant's limit: 429s follow."),
        g.timeseries('Loki sender up by instance', g.q('kube_audit_loki_sender_up{%s}' % S, '{{instance}}'), w=12, decimals=0, description='1 while the sender runs; 0 after Loki refused the credentials (KubeAuditLokiSenderStopped).'),
        g.timeseries('Structured metadata by instance', g.q('kube_audit_loki_structured_metadata{%s}' % S, '{{instance}}'), w=12, decimals=0, description="1 while entries carry structured metadata; 0 when loki.structured_metadata is false or Loki refused it (KubeAuditLokiStructuredMetadataRefused): the Explorer's filters and the Loki alerts then find nothing."),

        g.row('Spool'),
        g.timeseries('Spool size', [
          g.q('max by (instance) (kube_audit_spool_bytes{%s})' % S, 'used {{instance}}'),
          g.q('max by (instance) (kube_audit_spool_max_bytes{%s})' % S, 'limit {{instance}}'),
        ], 'bytes', w=8, description='Bytes waiting for Loki against spool.max_bytes. A steady climb fills it (KubeAuditSpoolFillingUp); at the limit the webhook answers 503.'),
        g.timeseries('Spool entries', g.q('max by (instance) (kube_audit_spool_entries{%s})' % S, '{{instance}}'), w=8, decimals=0, description='Entries waiting for Loki. Near 0 is healthy.'),
        g.timeseries('Oldest spool entry age', g.q('max by (instance) (kube_audit_spool_oldest_entry_age_seconds{%s})' % S, '{{instance}}'), 's', w=8, description='How long the oldest entry has waited for Loki: the delay of everything in the Explorer and the Loki alerts (KubeAuditSpoolEntriesOld).'),
        g.timeseries('Spool full and damaged records', [
          g.q(counts('kube_audit_spool_full_total', ['instance']), 'refused, spool full {{instance}}'),
          g.q(counts('kube_audit_spool_corrupt_records_total', ['instance']), 'damaged records {{instance}}'),
        ], w=8, decimals=0, bars=true, description='Batches refused because the spool was full (events lost once the API server buffer fills: KubeAuditSpoolFull), and damaged records skipped after a crash, per interval.'),

        g.row('OTLP output'),
        g.timeseries('OTLP entries', [
          g.q('sum(%s)' % rate('kube_audit_otlp_entries_sent_total'), 'sent'),
          g.q('sum by (reason) (%s)' % rate('kube_audit_otlp_entries_rejected_total'), 'rejected {{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_otlp_entries_shrunk_total'), 'sent without bodies'),
        ], 'ops', w=8, description='With otlp.url: log records the OTLP receiver accepted, refused for good (by reason), and sent without their bodies. Empty: no OTLP output.'),
        g.timeseries('OTLP pushes', [
          g.q('sum by (code) (%s)' % rate('kube_audit_otlp_requests_total'), '{{code}}'),
          g.q('sum(%s)' % rate('kube_audit_otlp_batches_sent_total'), 'answered 2xx'),
          g.q('sum by (reason) (%s)' % rate('kube_audit_otlp_push_failures_total'), 'failed {{reason}}'),
          g.q('sum(%s)' % rate('kube_audit_otlp_retries_total'), 'retries'),
        ], 'reqps', w=8, description='OTLP pushes by HTTP status or transport error, those answered 2xx, failures by reason and retries; retried with backoff as for Loki.'),
        g.timeseries('OTLP push duration and entry latency', [
          g.q('histogram_quantile(0.99, sum by (le) (%s))' % rate('kube_audit_otlp_push_duration_seconds_bucket'), 'push p99'),
          g.q('histogram_quantile(0.99, sum by (le) (%s))' % rate('kube_audit_otlp_entry_latency_seconds_bucket'), 'entry latency p99'),
        ], 's', w=8, description="Duration of one push, and from a record's spooling to the receiver's answer for it."),
        g.timeseries('OTLP bytes pushed', [
          g.q('sum(%s)' % rate('kube_audit_otlp_sent_bytes_total'), 'accepted, uncompressed'),
          g.q('sum(%s)' % rate('kube_audit_otlp_request_bytes_total'), 'sent, compressed, retries included'),
        ], 'Bps', w=8, description='Uncompressed bytes of the pushes the receiver accepted, and request bodies as sent.'),
        g.timeseries('OTLP sender up by instance', g.q('kube_audit_otlp_sender_up{%s}' % S, '{{instance}}'), w=8, decimals=0, description='1 while the OTLP sender runs; 0 after the receiver refused the credentials (401/403): fix them; it resumes when the files change.'),
        g.timeseries('OTLP spool size', [
          g.q('max by (instance) (kube_audit_otlp_spool_bytes{%s})' % S, 'used {{instance}}'),
          g.q('max by (instance) (kube_audit_otlp_spool_max_bytes{%s})' % S, 'limit {{instance}}'),
        ], 'bytes', w=8, description='Bytes waiting for the OTLP receiver against its spool limit; at the limit the webhook answers 503.'),
        g.timeseries('OTLP spool entries', g.q('max by (instance) (kube_audit_otlp_spool_entries{%s})' % S, '{{instance}}'), w=8, decimals=0, description='Records waiting for the OTLP receiver. Near 0 is healthy.'),
        g.timeseries('OTLP oldest spool entry age', g.q('max by (instance) (kube_audit_otlp_spool_oldest_entry_age_seconds{%s})' % S, '{{instance}}'), 's', w=8, description='How long the oldest record has waited for the OTLP receiver.'),
        g.timeseries('OTLP spool full and damaged records', [
          g.q(counts('kube_audit_otlp_spool_full_total', ['instance']), 'refused, spool full {{instance}}'),
          g.q(counts('kube_audit_otlp_spool_corrupt_records_total', ['instance']), 'damaged records {{instance}}'),
        ], w=8, decimals=0, bars=true, description='Batches refused because the OTLP spool was full, and damaged records skipped after a crash, per interval.'),

        g.row('Workers and shared state'),
        g.timeseries('Workers serving', g.q('max by (instance) (kube_audit_workers{%s})' % S, '{{instance}}'), w=8, decimals=0, description='With run --workers N: worker processes running and serving, per pod. Below N: a worker is starting again (KubeAuditWorkerRestarts). Empty: one process per pod.'),
        g.timeseries('Worker restarts', g.q(counts('kube_audit_worker_restarts_total', ['instance']), '{{instance}}'), w=8, decimals=0, bars=true, description='Workers that exited and were started again, per interval (KubeAuditWorkerRestarts): the supervisor logs how each exited.'),
        g.timeseries('Shared state up by instance', g.q('max by (instance) (kube_audit_state_backend_up{%s})' % S, '{{instance}}'), w=8, decimals=0, description="With state.url: 1 while the shared store (Redis/Valkey) answers; 0 while dedupe and stateful rules run on the replica's memory (KubeAuditSharedStateUnreachable). Empty: no state.url."),
        g.timeseries('Shared state round trips', g.q('sum by (op) (%s)' % rate('kube_audit_state_round_trips_total'), '{{op}}'), 'ops', w=12, description='Successful round trips to the shared store per second, by operation (connect, dedupe_check, detect, dedupe_mark).'),
        g.timeseries('Shared state failures and fallbacks', [
          g.q(counts('kube_audit_state_operations_failed_total', ['op']), 'failed {{op}}'),
          g.q(counts('kube_audit_state_fallbacks_total', ['op']), 'fell back {{op}}'),
        ], w=12, decimals=0, bars=true, description="Round trips that failed (refused, timed out, error reply), and batches whose state went to the replica's memory instead, per interval (KubeAuditSharedStateFallbacks). The exporter log says why."),

        g.row('Alertmanager'),
        g.timeseries('Notifications sent', g.q('sum by (instance) (%s)' % rate('kube_audit_alertmanager_alerts_sent_total'), '{{instance}}'), 'ops', w=8, description='Detection notifications Alertmanager accepted, per second (one per alert and Alertmanager).'),
        g.timeseries('Notification failures by reason', g.q(counts('kube_audit_alertmanager_failures_total', ['reason']), '{{reason}}'), w=8, decimals=0, bars=true, description='Failed attempts (connection, timeout, http_4xx, http_5xx, retried) and notifications given up (queue_full, retries_exhausted, shutdown: KubeAuditAlertmanagerNotificationsFailing).'),
        g.timeseries('Notifications queued', g.q('sum by (instance) (kube_audit_alertmanager_queue_length{%s})' % S, '{{instance}}'), w=8, decimals=0, description='Notifications waiting to be sent. Growing: Alertmanager is unreachable or slow.'),
      ],
    ),
  },
}
