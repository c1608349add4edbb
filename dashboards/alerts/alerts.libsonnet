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
          alert(
            'KubeAuditExporterAbsent',
            'absent(up{%s} == 1)' % sel,
            'No exporter of audit events is up.',
            'No target matching {%s} has been up for %s{{ with $labels.job }} (job {{ . }}){{ end }}: API requests are not counted, not sent to Loki and not checked by the detection rules.' % [sel, a.KubeAuditExporterAbsent['for']],
          ) +
          alert(
            'KubeAuditNoEventsReceived',
            'time() - kube_audit_last_event_timestamp_seconds{%s} > %d' % [sel, a.KubeAuditNoEventsReceived.thresholdSeconds],
            'The exporter receives no audit events.',
            'The newest event of the {{ $labels.source }} source of {{ $labels.instance }}%s is {{ $value | humanizeDuration }} old: the API server stopped sending to the webhook, or stopped writing the log file the exporter reads.' % inCluster,
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
            'sum by (%s) (increase(kube_audit_series_overflow_total{%s}[%s])) > 0' % [by(['instance', 'metric', 'label']), sel, a.KubeAuditSeriesOverflow.window],
            'Label values fold into __other__ to keep the series bounded.',
            "{{ $labels.metric }} of {{ $labels.instance }}%s folded {{ $value | humanize }} increments of its {{ $labels.label }} label in the last %s; raise the label's bound (metrics.max_users, metrics.max_source_ips, metrics.max_extra_resources, metrics.max_namespaces, metrics.max_webhooks) if the series budget allows, or look for a client sending made-up values." % [inCluster, a.KubeAuditSeriesOverflow.window],
          ),
      },
      {
        name: 'kube-audit-exporter-outputs',
        rules:
          alert(
            'KubeAuditLokiPushFailing',
            |||
              sum by (%(by)s) (rate(kube_audit_loki_push_failures_total{%(sel)s}[%(w)s]))
              /
              sum by (%(by)s) (rate(kube_audit_loki_requests_total{%(sel)s}[%(w)s]))
              > %(t)g
            ||| % { by: by(['instance']), sel: sel, w: cfg.recordingWindow, t: a.KubeAuditLokiPushFailing.threshold },
            'Pushes to Loki fail.',
            '{{ $value | humanizePercentage }} of the pushes of {{ $labels.instance }}%s to Loki failed over the last %s. The events wait in the spool; kube_audit_loki_push_failures_total tells why.' % [inCluster, cfg.recordingWindow],
          ) +
          alert(
            'KubeAuditLokiSenderStopped',
            'max by (%s) (kube_audit_loki_sender_up{%s}) == 0' % [by(['instance']), sel],
            'Loki refused the credentials of the exporter.',
            'Loki answered 401 or 403 to {{ $labels.instance }}%s: its sender stopped until the credential files change, and the spool fills meanwhile.' % inCluster,
          ) +
          alert(
            'KubeAuditLokiEntriesRejected',
            'sum by (%s) (increase(kube_audit_loki_entries_rejected_total{%s}[%s])) > 0' % [by(['instance', 'reason']), sel, a.KubeAuditLokiEntriesRejected.window],
            'Loki rejected audit events.',
            'Loki refused {{ $value | humanize }} entries from {{ $labels.instance }}%s in the last %s ({{ $labels.reason }}); they are not retried and are missing from Loki.' % [inCluster, a.KubeAuditLokiEntriesRejected.window],
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
              > %(t)g
            ||| % { by: by(['instance']), sel: sel, t: a.KubeAuditSpoolFillingUp.threshold },
            'The Loki spool is filling up.',
            'The spool of {{ $labels.instance }}%s is {{ $value | humanizePercentage }} full: Loki takes events slower than they arrive. When it is full the webhook answers 503.' % inCluster,
          ) +
          alert(
            'KubeAuditSpoolFull',
            'sum by (%s) (increase(kube_audit_spool_full_total{%s}[%s])) > 0' % [by(['instance']), sel, a.KubeAuditSpoolFull.window],
            'The Loki spool is full and audit events are refused.',
            '{{ $labels.instance }}%s refused {{ $value | humanize }} batches in the last %s because its spool is full: the webhook answers 503 and the log tailer waits. The API server drops audit events once its own buffer is full.' % [inCluster, a.KubeAuditSpoolFull.window],
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
          alert(
            'KubeAuditCriticalDetection',
            'sum by (%s) (increase(kube_audit_rule_matches_total{%s, severity="critical"}[%s])) > 0' % [by(['rule']), sel, a.KubeAuditCriticalDetection.window],
            'A critical detection rule matched.',
            "Detection rule {{ $labels.rule }} matched%s in the last %s (count: {{ $value | humanize }}). The exporter's own notification for each match says who did what to which object from where; in Loki the events carry {{ $labels.rule }} in their rules metadata." % [inCluster, a.KubeAuditCriticalDetection.window],
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
            'KubeAuditAnonymousAccessAllowed',
            increaseOrNew('kube_audit_sensitive_operations_total', 'category="anonymous", code_class="2xx"', ['verb', 'resource'], a.KubeAuditAnonymousAccessAllowed.window, 0),
            'Anonymous requests succeed.',
            'system:anonymous did {{ $labels.verb }} on {{ with $labels.resource }}{{ . }}{{ else }}a non-resource URL{{ end }} {{ $value | humanize }} times in the last %s%s and was allowed: a role is bound to anonymous users.' % [a.KubeAuditAnonymousAccessAllowed.window, inCluster],
          ) +
          alert(
            'KubeAuditWebhookFailedOpen',
            increaseOrNew('kube_audit_webhook_failed_open_total', 'webhook!=""', ['webhook'], a.KubeAuditWebhookFailedOpen.window, 0),
            'An admission webhook failed open.',
            'Admission webhook {{ $labels.webhook }} failed {{ $value | humanize }} times in the last %s%s and the requests were admitted without it (failurePolicy: Ignore).' % [a.KubeAuditWebhookFailedOpen.window, inCluster],
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
