// Prometheus alerts. Thresholds, `for`, severities and the switch that turns
// each one off are in config.libsonnet (_config.alerts); runbook_url is added
// by add-runbook-links.libsonnet.
local rules = import 'recording-rules.libsonnet';

{
  local cfg = $._config,
  local sel = cfg.exporterSelector,
  local by(labels=[]) = std.join(', ', [cfg.clusterLabel, 'job'] + labels),
  // " in cluster X" when the series has a cluster label, nothing otherwise.
  local inCluster = '{{ with $labels.%s }} in cluster {{ . }}{{ end }}' % cfg.clusterLabel,
  // seconds as a person reads them: 900 is "15 minutes"
  local readable(s) =
    if s % 3600 == 0 then '%d hour%s' % [s / 3600, if s == 3600 then '' else 's']
    else if s % 60 == 0 then '%d minutes' % (s / 60)
    else '%d seconds' % s,
  local rec = rules.names(cfg),

  // One alert from its config entry, or nothing when it is disabled.
  local alert(name, expr, summary, description) =
    local c = cfg.alerts[name];
    assert std.endsWith(summary, '.') : name + ': a summary ends with a period';
    if c.enabled then [{
      alert: name,
      expr: expr,
      'for': c['for'],
      labels: { severity: c.severity },
      annotations: { summary: summary, description: description },
    }] else [],

  local a = cfg.alerts,
  // Loki refusal reasons with an alert of their own.
  local ownRejectReasons = ['too_far_behind', 'blocked_ingestion'],

  // Events counted over `window` with more than `threshold`, where the
  // counter's series is created by the first event (webhook names, anonymous
  // verbs, source addresses cannot be created at zero ahead of time), which
  // increase() cannot see. A series that did not exist `window` ago counts
  // with its whole value, provided Prometheus was already scraping the
  // exporter then (so a fresh Prometheus does not fire on old events).
  local increaseOrNew(metric, matchers, labels, window, threshold) =
    local m = '%s{%s, %s}' % [metric, sel, matchers];
    |||
      sum by (%(by)s) (increase(%(m)s[%(w)s])) > %(t)g
      or
      (
        sum by (%(by)s) (%(m)s)
        unless
        sum by (%(by)s) (%(m)s offset %(w)s)
      ) > %(t)g
      and on (%(cluster)s, job)
      count by (%(cluster)s, job) (up{%(sel)s} offset %(w)s)
    ||| % { by: by(labels), m: m, w: window, t: threshold, sel: sel, cluster: cfg.clusterLabel },

  // The serving certificate, or the earliest client certificate the API
  // server presented recently, ends within the alert's thresholdDays.
  local certificateExpiry(name, summary) =
    alert(
      name,
      'min by (%s) (kube_audit_tls_certificate_expiry_timestamp_seconds{%s}) - time() < %d' % [by(['instance', 'certificate']), sel, a[name].thresholdDays * 86400],
      summary,
      'The {{ $labels.certificate }} certificate of {{ $labels.instance }}%s expires in {{ $value | humanizeDuration }}. {{ if eq $labels.certificate "client" }}It is the one the API server presents: renew it and copy the new kubeconfig or certificate files to every control-plane node{{ else }}It is the webhook\'s own: renew it (cert-manager, the chart\'s certgen Job at the next upgrade, or your Secret){{ end }}; once it expires the API server\'s batches are refused.' % inCluster,
    ),

  local latencyExpr =
    local verbs = std.objectFields(a.KubeAuditAPILatencyHigh.verbThresholdSeconds);
    local metric = rec.verbQuantile + '{quantile="0.99"%s}';
    std.join('\nor\n', [
      '%s > %g' % [
        metric % (if verbs == [] then '' else ', verb!~"%s"' % std.join('|', verbs)),
        a.KubeAuditAPILatencyHigh.thresholdSeconds,
      ],
    ] + [
      '%s > %g' % [metric % (', verb="%s"' % v), a.KubeAuditAPILatencyHigh.verbThresholdSeconds[v]]
      for v in verbs
    ]),

  assert std.member(cfg.latencyQuantiles, '0.99') : 'KubeAuditAPILatencyHigh needs the 0.99 quantile recorded',

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'kube-audit-exporter',
        rules:
          alert(
            'KubeAuditExporterDown',
            'up{%s} == 0' % sel,
            'An exporter of audit events is down.',
            'kube-audit-exporter {{ $labels.instance }} (job {{ $labels.job }})%s has been unreachable for %s: the audit events sent to its webhook wait in the API server, which drops them when its buffer is full, and nothing it would receive is counted or checked by the detection rules.' % [inCluster, a.KubeAuditExporterDown['for']],
          ) +
          // Per cluster: a cluster whose targets were seen within a day but
          // none is up now keeps its label, so one silent cluster is not
          // hidden by the others in a central Thanos or Mimir; no target at
          // all, anywhere, fires without one.
          alert(
            'KubeAuditExporterAbsent',
            |||
              count by (%(cluster)s) (max_over_time(up{%(sel)s}[1d]))
              unless
              count by (%(cluster)s) (up{%(sel)s} == 1)
              or
              absent(up{%(sel)s})
            ||| % { cluster: cfg.clusterLabel, sel: sel },
            'No exporter of audit events is up.',
            'No target matching {%s}%s has been up for %s: API requests are not counted, not sent to Loki and not checked by the detection rules.' % [sel, inCluster, a.KubeAuditExporterAbsent['for']],
          ) +
          // Per cluster, over every source and replica: an exporter that never
          // received an event (counters at 0 since it started) fires as well
          // as one whose events stopped, once it has been scraped for the
          // whole window (a fresh install gets that long to be wired).
          alert(
            'KubeAuditNoEventsReceived',
            |||
              sum by (%(cluster)s) (increase(kube_audit_events_total{%(sel)s}[%(t)ds])) == 0
              and on (%(cluster)s)
              count by (%(cluster)s) (kube_audit_events_total{%(sel)s} offset %(t)ds)
            ||| % { cluster: cfg.clusterLabel, sel: sel, t: a.KubeAuditNoEventsReceived.thresholdSeconds },
            'The exporter receives no audit events.',
            'No exporter%s took in an audit event in the last %s: the API server was never wired to the webhook or the log file (a fresh install), stopped sending, or writes another log file than the one read.' % [inCluster, readable(a.KubeAuditNoEventsReceived.thresholdSeconds)],
          ) +
          certificateExpiry('KubeAuditTLSCertificateExpiring', 'A TLS certificate of the audit webhook expires soon.') +
          certificateExpiry('KubeAuditTLSCertificateExpiryCritical', 'A TLS certificate of the audit webhook is about to expire.') +
          alert(
            'KubeAuditEventLagHigh',
            'histogram_quantile(0.99, sum by (%s) (rate(kube_audit_event_lag_seconds_bucket{%s}[%s]))) > %d' % [by(['instance', 'source', 'le']), sel, cfg.recordingWindow, a.KubeAuditEventLagHigh.thresholdSeconds],
            'Audit events arrive late.',
            'The 99th percentile delay between an event and its ingestion by {{ $labels.instance }} ({{ $labels.source }} source)%s is {{ $value | humanizeDuration }}: a backlog in the API server or in the log file, or a clock out of step.' % inCluster,
          ) +
          alert(
            'KubeAuditInvalidEvents',
            'sum by (%s) (increase(kube_audit_events_invalid_total{%s}[%s])) > 0' % [by(['instance', 'source', 'reason']), sel, a.KubeAuditInvalidEvents.window],
            'The exporter refuses audit inputs.',
            '{{ $value | humanize }} inputs to the {{ $labels.source }} source of {{ $labels.instance }}%s were refused as {{ $labels.reason }} in the last %s; the events in them are missing from the metrics, Loki and detection.' % [inCluster, a.KubeAuditInvalidEvents.window],
          ) +
          alert(
            'KubeAuditSeriesOverflow',
            |||
              sum by (%(by)s) (increase(kube_audit_series_overflow_total{%(sel)s}[%(w)s])) > 0
              unless
              sum by (%(by)s) (increase(kube_audit_series_overflow_total{%(sel)s}[%(w)s] offset %(w)s)) > 0
            ||| % { by: by(['instance', 'metric', 'label']), sel: sel, w: a.KubeAuditSeriesOverflow.window },
            'Label values fold into __other__ to keep the series bounded.',
            "{{ $labels.metric }} of {{ $labels.instance }}%s started folding its {{ $labels.label }} label ({{ $value | humanize }} increments in the last %s, none in the %s before); raise the label's bound (metrics.max_users, metrics.max_source_ips, metrics.max_extra_resources, metrics.max_namespaces, metrics.max_webhooks) if the series budget allows, or look for a client sending made-up values." % [inCluster, a.KubeAuditSeriesOverflow.window, a.KubeAuditSeriesOverflow.window],
          ) +
          alert(
            'KubeAuditWebhookRequestsFailing',
            increaseOrNew('kube_audit_webhook_requests_total', 'code=~"4..|5..", code!="503"', ['instance', 'code'], a.KubeAuditWebhookRequestsFailing.window, 0),
            'The audit webhook refuses batches.',
            '{{ $labels.instance }}%s answered {{ $value | humanize }} webhook requests with {{ $labels.code }} in the last %s. The API server does not send such a batch again: its events are lost. 400: undecodable body; 413: over webhook.max_body_bytes; 5xx: an error the exporter logged.' % [inCluster, a.KubeAuditWebhookRequestsFailing.window],
          ) +
          alert(
            'KubeAuditWebhookTLSHandshakeFailures',
            increaseOrNew('kube_audit_webhook_tls_handshake_failures_total', 'reason!=""', ['instance', 'reason'], a.KubeAuditWebhookTLSHandshakeFailures.window, a.KubeAuditWebhookTLSHandshakeFailures.threshold),
            'TLS handshakes to the audit webhook fail.',
            '{{ $value | humanize }} TLS handshakes to the webhook of {{ $labels.instance }}%s failed in the last %s ({{ $labels.reason }}). When the client is the API server, it cannot deliver audit events: check its client certificate against webhook.client_ca_file and its kubeconfig CA against the serving certificate.' % [inCluster, a.KubeAuditWebhookTLSHandshakeFailures.window],
          ) +
          alert(
            'KubeAuditLogFileErrors',
            increaseOrNew('kube_audit_logfile_errors_total', 'operation!=""', ['instance', 'operation'], a.KubeAuditLogFileErrors.window, 0),
            'The audit log file cannot be read.',
            '{{ $labels.instance }}%s had {{ $value | humanize }} {{ $labels.operation }} errors on the audit log file in the last %s: events are late, and lost if the file rotates away before the exporter reads it. Its log says which file and why.' % [inCluster, a.KubeAuditLogFileErrors.window],
          ),
      },
      {
        name: 'kube-audit-exporter-outputs',
        rules:
          alert(
            'KubeAuditLokiPushFailing',
            |||
              sum by (%(by)s) (increase(kube_audit_loki_push_failures_total{%(sel)s}[%(w)s]))
              /
              sum by (%(by)s) (increase(kube_audit_loki_requests_total{%(sel)s}[%(w)s]))
              > %(t)g
            ||| % { by: by(['instance']), sel: sel, w: a.KubeAuditLokiPushFailing.window, t: a.KubeAuditLokiPushFailing.threshold },
            'Pushes to Loki fail.',
            '{{ $value | humanizePercentage }} of the pushes of {{ $labels.instance }}%s to Loki failed over the last %s. The events wait in the spool; kube_audit_loki_push_failures_total tells why.' % [inCluster, a.KubeAuditLokiPushFailing.window],
          ) +
          alert(
            'KubeAuditLokiSenderStopped',
            'max by (%s) (kube_audit_loki_sender_up{%s}) == 0' % [by(['instance']), sel],
            'Loki refused the credentials of the exporter.',
            'Loki answered 401 or 403 to {{ $labels.instance }}%s: its sender stopped until the credential files change, and the spool fills meanwhile.' % inCluster,
          ) +
          alert(
            'KubeAuditLokiEntriesRejected',
            'sum by (%s) (increase(kube_audit_loki_entries_rejected_total{%s, reason!~"%s"}[%s])) > 0' % [by(['instance', 'reason']), sel, std.join('|', ownRejectReasons), a.KubeAuditLokiEntriesRejected.window],
            'Loki rejected audit events.',
            'Loki refused {{ $value | humanize }} entries from {{ $labels.instance }}%s in the last %s ({{ $labels.reason }}); they are not retried and are missing from Loki.' % [inCluster, a.KubeAuditLokiEntriesRejected.window],
          ) +
          alert(
            'KubeAuditLokiEntriesTooFarBehind',
            'sum by (%s) (increase(kube_audit_loki_entries_rejected_total{%s, reason="too_far_behind"}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditLokiEntriesTooFarBehind.window],
            'Loki refused audit events as too far behind their stream.',
            'Loki refused {{ $value | humanize }} entries from {{ $labels.instance }}%s in the last %s as too far behind the newest entry of their stream; they are not retried and are missing from Loki. Two writers share a stream (the same loki.writer), or old events were sent into live streams.' % [inCluster, a.KubeAuditLokiEntriesTooFarBehind.window],
          ) +
          alert(
            'KubeAuditLokiIngestionBlocked',
            'sum by (%s) (increase(kube_audit_loki_entries_rejected_total{%s, reason="blocked_ingestion"}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditLokiIngestionBlocked.window],
            'Loki blocks the ingestion of audit events.',
            "Loki answered that ingestion is blocked (status 260) for {{ $value | humanize }} entries from {{ $labels.instance }}%s in the last %s: Loki drops them and the exporter does not retry, so the Explorer and the Loki alerts see nothing new. Loki's operator set blocked_ingestion for the tenant (loki.tenant)." % [inCluster, a.KubeAuditLokiIngestionBlocked.window],
          ) +
          alert(
            'KubeAuditLokiStructuredMetadataRefused',
            |||
              max by (%(by)s) (kube_audit_loki_entries_resent_without_metadata_total{%(sel)s}) > 0
              and on (%(by)s)
              max by (%(by)s) (kube_audit_loki_structured_metadata{%(sel)s}) == 0
            ||| % { by: by(['instance']), sel: sel },
            'Loki refuses structured metadata.',
            "Loki refused the structured metadata of the entries of {{ $labels.instance }}%s, which sends them without it ({{ $value | humanize }} entries sent again): the Explorer's filters and the Loki alerts, which read user, namespace, resource and code from it, find nothing. Switch it on in Loki (allow_structured_metadata, schema v13), or set loki.structured_metadata: false to say it is meant." % inCluster,
          ) +
          alert(
            'KubeAuditSpoolCorruptRecords',
            'sum by (%s) (increase(kube_audit_spool_corrupt_records_total{%s}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditSpoolCorruptRecords.window],
            'The Loki spool held damaged records.',
            '{{ $labels.instance }}%s skipped {{ $value | humanize }} damaged spool records in the last %s, usually a write torn by a crash or a power loss; those events did not reach Loki.' % [inCluster, a.KubeAuditSpoolCorruptRecords.window],
          ) +
          alert(
            'KubeAuditSpoolFillingUp',
            |||
              max by (%(by)s) (kube_audit_spool_bytes{%(sel)s})
              /
              max by (%(by)s) (kube_audit_spool_max_bytes{%(sel)s})
              > %(min)g
              and
              max by (%(by)s) (predict_linear(kube_audit_spool_bytes{%(sel)s}[%(w)s], %(ahead)d))
              >=
              max by (%(by)s) (kube_audit_spool_max_bytes{%(sel)s})
            ||| % { by: by(['instance']), sel: sel, min: a.KubeAuditSpoolFillingUp.minUsedShare, w: a.KubeAuditSpoolFillingUp.trendWindow, ahead: a.KubeAuditSpoolFillingUp.hoursAhead * 3600 },
            'The Loki spool is filling up.',
            'The spool of {{ $labels.instance }}%s is {{ $value | humanizePercentage }} full and, at the growth of the last %s, full within %d hours: Loki takes events slower than they arrive. When it is full the webhook answers 503.' % [inCluster, a.KubeAuditSpoolFillingUp.trendWindow, a.KubeAuditSpoolFillingUp.hoursAhead],
          ) +
          alert(
            'KubeAuditSpoolEntriesOld',
            'max by (%s) (kube_audit_spool_oldest_entry_age_seconds{%s}) > %d' % [by(['instance']), sel, a.KubeAuditSpoolEntriesOld.thresholdSeconds],
            'Audit events wait long for Loki.',
            'The oldest entry in the spool of {{ $labels.instance }}%s has waited {{ $value | humanizeDuration }} for Loki: the Explorer and the Loki alerts miss everything since. kube_audit_loki_push_failures_total and the exporter log say why.' % inCluster,
          ) +
          alert(
            'KubeAuditSpoolFull',
            'sum by (%s) (increase(kube_audit_spool_full_total{%s}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditSpoolFull.window],
            'The Loki spool is full and audit events are refused.',
            '{{ $labels.instance }}%s refused {{ $value | humanize }} batches in the last %s because its spool is full: the webhook answers 503 and the log tailer waits. The API server drops audit events once its own buffer is full.' % [inCluster, a.KubeAuditSpoolFull.window],
          ) +
          alert(
            'KubeAuditOTLPPushFailing',
            |||
              sum by (%(by)s) (increase(kube_audit_otlp_push_failures_total{%(sel)s}[%(w)s]))
              /
              sum by (%(by)s) (increase(kube_audit_otlp_requests_total{%(sel)s}[%(w)s]))
              > %(t)g
            ||| % { by: by(['instance']), sel: sel, w: a.KubeAuditOTLPPushFailing.window, t: a.KubeAuditOTLPPushFailing.threshold },
            'Pushes to the OTLP receiver fail.',
            '{{ $value | humanizePercentage }} of the pushes of {{ $labels.instance }}%s to the OTLP receiver (otlp.url) failed over the last %s. The records wait in its spool; kube_audit_otlp_push_failures_total tells why.' % [inCluster, a.KubeAuditOTLPPushFailing.window],
          ) +
          alert(
            'KubeAuditOTLPSenderStopped',
            'max by (%s) (kube_audit_otlp_sender_up{%s}) == 0' % [by(['instance']), sel],
            'The OTLP receiver refused the credentials of the exporter.',
            'The OTLP receiver answered 401, 403, 404 or 405 to {{ $labels.instance }}%s: its sender waits until the credential files change or a push works again, and its spool fills meanwhile.' % inCluster,
          ) +
          alert(
            'KubeAuditOTLPEntriesRejected',
            'sum by (%s) (increase(kube_audit_otlp_entries_rejected_total{%s}[%s])) > 0' % [by(['instance', 'reason']), sel, a.KubeAuditOTLPEntriesRejected.window],
            'The OTLP receiver rejected audit events.',
            'The OTLP receiver refused {{ $value | humanize }} records from {{ $labels.instance }}%s in the last %s ({{ $labels.reason }}); they are not retried and are missing there.' % [inCluster, a.KubeAuditOTLPEntriesRejected.window],
          ) +
          alert(
            'KubeAuditOTLPSpoolFull',
            'sum by (%s) (increase(kube_audit_otlp_spool_full_total{%s}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditOTLPSpoolFull.window],
            'The OTLP spool is full and audit events are refused.',
            '{{ $labels.instance }}%s refused {{ $value | humanize }} batches in the last %s because its OTLP spool is full: the webhook answers 503 and the log tailer waits. The API server drops audit events once its own buffer is full.' % [inCluster, a.KubeAuditOTLPSpoolFull.window],
          ) +
          alert(
            'KubeAuditAlertmanagerNotificationsFailing',
            'sum by (%s) (increase(kube_audit_alertmanager_failures_total{%s, reason=~"queue_full|retries_exhausted|shutdown"}[%s])) > 0' % [by(['instance', 'reason']), sel, a.KubeAuditAlertmanagerNotificationsFailing.window],
            'Detection notifications are being dropped.',
            '{{ $labels.instance }}%s gave up {{ $value | humanize }} notifications to Alertmanager in the last %s ({{ $labels.reason }}); the matches are still counted in kube_audit_rule_matches_total and marked in Loki.' % [inCluster, a.KubeAuditAlertmanagerNotificationsFailing.window],
          ),
      },
      {
        name: 'kube-audit-detections',
        rules:
          // The fallback for the exporter's direct notifications: a critical
          // match on an instance that has no Alertmanager configured (its
          // kube_audit_alertmanager_* series are absent), or that delivered
          // nothing and gave notifications up within the window.
          alert(
            'KubeAuditCriticalDetectionUndelivered',
            |||
              sum by (%(by)s) (increase(kube_audit_rule_matches_total{%(sel)s, severity="critical"}[%(w)s])) > 0
              unless on (%(cluster)s, job, instance)
              (
                sum by (%(cluster)s, job, instance) (increase(kube_audit_alertmanager_alerts_sent_total{%(sel)s}[%(w)s])) > 0
                unless on (%(cluster)s, job, instance)
                sum by (%(cluster)s, job, instance) (increase(kube_audit_alertmanager_failures_total{%(sel)s, reason=~"queue_full|retries_exhausted|shutdown"}[%(w)s])) > 0
              )
            ||| % { by: by(['instance', 'rule']), sel: sel, w: a.KubeAuditCriticalDetectionUndelivered.window, cluster: cfg.clusterLabel },
            'A critical detection was not notified directly.',
            'Detection rule {{ $labels.rule }} matched {{ $value | humanize }} times on {{ $labels.instance }}%s in the last %s, and the exporter could not tell Alertmanager itself (no alertmanager.url, or notifications given up). The direct notification would say who did what to which object from where: find the events in the Explorer with rule {{ $labels.rule }}.' % [inCluster, a.KubeAuditCriticalDetectionUndelivered.window],
          ) +
          alert(
            'KubeAuditWarningDetectionsElevated',
            'sum by (%s) (increase(kube_audit_rule_matches_total{%s, severity="warning"}[%s])) > %g' % [by(['rule']), sel, a.KubeAuditWarningDetectionsElevated.window, a.KubeAuditWarningDetectionsElevated.threshold],
            'A warning-level detection rule matches often.',
            'Detection rule {{ $labels.rule }} matched {{ $value | humanize }} times%s in the last %s: an ongoing incident, or routine activity that needs an exception in the rule.' % [inCluster, a.KubeAuditWarningDetectionsElevated.window],
          ) +
          alert(
            'KubeAuditAuthFailureBurst',
            increaseOrNew('kube_audit_source_auth_failures_total', 'reason="unauthenticated"', ['source_ip'], a.KubeAuditAuthFailureBurst.window, a.KubeAuditAuthFailureBurst.threshold),
            'Many failed authentications from one address.',
            '{{ $labels.source_ip }} failed to authenticate {{ $value | humanize }} times in the last %s%s (__other__ gathers the addresses beyond metrics.max_source_ips).' % [a.KubeAuditAuthFailureBurst.window, inCluster],
          ) +
          alert(
            'KubeAuditForbiddenRatioHigh',
            '%s > %g' % [rec.forbiddenRatio, a.KubeAuditForbiddenRatioHigh.threshold],
            'Many requests are refused by authorization.',
            '{{ $value | humanizePercentage }} of the API requests%s were refused by authorization (403) over the last %s.' % [inCluster, cfg.recordingWindow],
          ) +
          alert(
            'KubeAuditWebhookFailedOpen',
            increaseOrNew('kube_audit_webhook_failed_open_total', 'webhook!=""', ['webhook'], a.KubeAuditWebhookFailedOpen.window, 0),
            'An admission webhook failed open.',
            'Admission webhook {{ $labels.webhook }} failed {{ $value | humanize }} times in the last %s%s and the requests were admitted without it (failurePolicy: Ignore).' % [a.KubeAuditWebhookFailedOpen.window, inCluster],
          ) +
          alert(
            'KubeAuditRuleErrors',
            increaseOrNew('kube_audit_detect_errors_total', 'rule!=""', ['instance', 'rule'], a.KubeAuditRuleErrors.window, 0),
            'A detection rule fails on events.',
            'Rule {{ $labels.rule }} of {{ $labels.instance }}%s failed {{ $value | humanize }} times in the last %s; those events went on unchecked by it. The exporter log names the rule and the error.' % [inCluster, a.KubeAuditRuleErrors.window],
          ) +
          alert(
            'KubeAuditRuleInactive',
            'max by (%s) (kube_audit_detect_rule_active{%s}) == 0' % [by(['rule']), sel],
            'A detection rule does not run.',
            'Rule {{ $labels.rule }}%s is loaded but inactive: disabled by detect.disabled_rules, or a setting it needs (detect.trusted_networks, detect.pod_cidrs, detect.critical_workloads...) is empty. `kube-audit-exporter rules list` says which.' % inCluster,
          ) +
          alert(
            'KubeAuditSharedStateUnreachable',
            'max by (%s) (kube_audit_state_backend_up{%s}) == 0' % [by(['instance']), sel],
            'The shared detection state (Redis/Valkey) does not answer.',
            '{{ $labels.instance }}%s cannot reach state.url: deduplication and stateful rules run on this replica alone, so a batch retried on another replica can be counted twice and an attack split across replicas can go unseen. The exporter log says why (never the password); it reconnects by itself.' % inCluster,
          ) +
          alert(
            'KubeAuditSharedStateFallbacks',
            |||
              sum by (%(by)s) (increase(kube_audit_state_fallbacks_total{%(sel)s}[%(w)s])) > 0
              unless on (%(inst)s)
              max by (%(inst)s) (kube_audit_state_backend_up{%(sel)s}) == 0
            ||| % { by: by(['instance', 'op']), inst: by(['instance']), sel: sel, w: a.KubeAuditSharedStateFallbacks.window },
            'Round trips to the shared detection state keep failing.',
            '{{ $labels.instance }}%s put the {{ $labels.op }} state of {{ $value | humanize }} batches in its own memory in the last %s because round trips to state.url failed, while the store is up: retried batches can count twice and split attacks go unseen. kube_audit_state_operations_failed_total and the exporter log say why (timeouts, error replies).' % [inCluster, a.KubeAuditSharedStateFallbacks.window],
          ) +
          alert(
            'KubeAuditRuleStateEvictions',
            'sum by (%s) (increase(kube_audit_detect_state_evictions_total{%s}[%s])) > 0' % [by(['instance', 'rule']), sel, a.KubeAuditRuleStateEvictions.window],
            'A stateful detection rule forgets state.',
            'Rule {{ $labels.rule }} of {{ $labels.instance }}%s evicted {{ $value | humanize }} state entries in the last %s at its bound (detect.max_state_entries): its thresholds and sequences can miss what they look for. Raise the bound, or narrow the rule.' % [inCluster, a.KubeAuditRuleStateEvictions.window],
          ),
      },
      {
        name: 'kube-audit-exporter-workers',
        rules:
          alert(
            'KubeAuditWorkerRestarts',
            'sum by (%s) (increase(kube_audit_worker_restarts_total{%s}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditWorkerRestarts.window],
            'A worker process of the exporter was restarted.',
            'Worker processes of {{ $labels.instance }}%s exited and were started again in the last %s (restarts: {{ $value | humanize }}; a crash or an OOM kill). The exporter log says how each exited; a pod memory limit too low for --workers is the usual cause.' % [inCluster, a.KubeAuditWorkerRestarts.window],
          ),
      },
      {
        name: 'kube-audit-apiserver',
        rules:
          alert(
            'KubeAuditAPILatencyHigh',
            latencyExpr,
            'API requests are slow.',
            'The 99th percentile latency of {{ $labels.verb }} requests%s is {{ $value | humanizeDuration }}.' % inCluster,
          ) +
          alert(
            'KubeAuditAPIServerErrorsHigh',
            '%s > %g' % [rec.serverErrorRatio, a.KubeAuditAPIServerErrorsHigh.threshold],
            'Many API requests fail with server errors.',
            '{{ $value | humanizePercentage }} of the API requests%s were answered 5xx over the last %s.' % [inCluster, cfg.recordingWindow],
          ),
      },
    ],
  },
}
