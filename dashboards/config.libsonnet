// Every tunable of the mixin. Override with
//   (import 'mixin.libsonnet') + { _config+:: { showMultiCluster: true } }
// Nothing outside this file hard-codes a selector, threshold, window or UID.
{
  _config+:: {
    // Selects the exporter's series. The Helm chart's ServiceMonitor sets the
    // job to serviceMonitor.jobName ("kube-audit-exporter"), whatever
    // nameOverride or fullnameOverride say; the regex also matches scrape
    // configs that name the job after a Service called "<release>-kube-audit-exporter".
    exporterSelector: 'job=~".*kube-audit-exporter.*"',

    // The label that tells clusters apart when one Prometheus (Thanos, Mimir)
    // holds several: an external label or a relabeling on the scrape. Alerts
    // and recording rules keep it; the Loki queries use the exporter's own
    // `cluster` stream label (--cluster), so give both the same value.
    clusterLabel: 'cluster',

    // Show the cluster variable. When false it is hidden and matches every
    // cluster (".*"), which is also right when there is no cluster label.
    showMultiCluster: false,

    // The service_name stream label the exporter writes (loki.service_name):
    // every LogQL query starts from it.
    lokiServiceName: 'kube-audit',

    // Datasources the variables preselect; any Prometheus or Loki datasource
    // can be chosen on the dashboard. "default" is Grafana's default one.
    prometheusDatasource: 'default',
    lokiDatasource: 'Loki',
    // Restricts the datasource pickers, e.g. "/^prod-/" (empty: all).
    datasourceFilterRegex: '',

    // Dashboard look: tags link the four dashboards to each other; UTC because
    // audit timestamps are UTC and auditors compare them with other logs.
    dashboardTags: ['kube-audit'],
    dashboardTimezone: 'utc',
    dashboardRefresh: '1m',
    dashboardFrom: 'now-6h',
    // Rows in "top N" tables and legends: enough to see the head of a
    // distribution without drowning the panel.
    topK: 10,

    // Dashboard UIDs from the file names, so links and bookmarks survive
    // regeneration and no two installs of the mixin disagree.
    dashboardFiles: {
      overview: 'kube-audit-overview.json',
      security: 'kube-audit-security.json',
      explorer: 'kube-audit-explorer.json',
      health: 'kube-audit-exporter-health.json',
    },
    // md5 of each file name: 32 characters, within Grafana's 40.
    dashboardUIDs: {
      [k]: std.md5($._config.dashboardFiles[k])
      for k in std.objectFields($._config.dashboardFiles)
    },

    // Window of the recording rules (and so of the dashboards' rates and
    // quantiles): 5m holds several scrapes at the usual 30s-1m interval.
    recordingWindow: '5m',
    // Quantiles recorded for request latency (dashboards and the latency alert).
    latencyQuantiles: ['0.5', '0.9', '0.99'],

    // Where each alert's runbook_url points; %s is the alert name in lower
    // case, which is the anchor GitHub gives the heading "## <AlertName>".
    runbookURLPattern: 'https://github.com/kube-audit-exporter/kube-audit-exporter/blob/main/dashboards/runbook.md#%s',

    // One entry per Prometheus alert: `enabled: false` drops it, `for` and
    // `severity` can be changed, and the remaining fields are its thresholds.
    // Severities: critical wakes someone, warning is for working hours, info
    // is context for other alerts.
    alerts: {
      // One target is down: it neither receives nor detects anything. 5m rides
      // out a rolling restart.
      KubeAuditExporterDown: { enabled: true, severity: 'warning', 'for': '5m' },
      // No target up at all: the cluster's audit trail is unwatched. 15m so a
      // re-install or a Prometheus restart does not page.
      KubeAuditExporterAbsent: { enabled: true, severity: 'critical', 'for': '15m' },
      // A source's newest event is older than this: an API server stopped
      // sending, or the log file is no longer the one written. Any cluster has
      // controllers renewing leases and kubelets reporting status every few
      // seconds, so 15m of silence is not quiet, it is broken.
      KubeAuditNoEventsReceived: { enabled: true, severity: 'warning', 'for': '5m', thresholdSeconds: 900 },
      // 99th percentile of the time from an event's stageTimestamp to its
      // ingestion. The API server's webhook batches wait up to 30s by default;
      // 5 minutes means a backlog or a skewed clock.
      KubeAuditEventLagHigh: { enabled: true, severity: 'warning', 'for': '10m', thresholdSeconds: 300 },
      // A TLS certificate of the webhook nears its end
      // (kube_audit_tls_certificate_expiry_timestamp_seconds): the exporter's
      // serving certificate, or the client certificate the API server
      // presents. 21 days leave three weeks of working hours to renew it and,
      // for a client certificate, to copy it to the control-plane nodes.
      KubeAuditTLSCertificateExpiring: { enabled: true, severity: 'warning', 'for': '1h', thresholdDays: 21 },
      // The same at 7 days: once it expires the API server's batches are
      // refused and the audit trail stops, so it wakes someone.
      KubeAuditTLSCertificateExpiryCritical: { enabled: true, severity: 'critical', 'for': '10m', thresholdDays: 7 },
      // Inputs the exporter refused (bad JSON, too large...): those events are
      // missing from metrics, Loki and detection.
      KubeAuditInvalidEvents: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // Share of Loki pushes failing (transport errors, 429, 5xx, auth). The
      // spool holds the data meanwhile; 10% over 10m is not a blip.
      KubeAuditLokiPushFailing: { enabled: true, severity: 'warning', 'for': '10m', threshold: 0.1 },
      // Loki refused the credentials: the sender waits for new ones.
      KubeAuditLokiSenderStopped: { enabled: true, severity: 'warning', 'for': '5m' },
      // Entries Loki refused for good (400: too old, too long, rate limits per
      // stream...): they are not in Loki and will not be.
      KubeAuditLokiEntriesRejected: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // Spool records skipped as damaged (torn writes after a crash).
      KubeAuditSpoolCorruptRecords: { enabled: true, severity: 'warning', 'for': '0m', window: '1h' },
      // Spool use above this share of spool.max_bytes: Loki is behind.
      KubeAuditSpoolFillingUp: { enabled: true, severity: 'warning', 'for': '5m', threshold: 0.8 },
      // The spool is full: the webhook answers 503 and the API server's own
      // buffer fills, then drops events. Audit records are being lost.
      KubeAuditSpoolFull: { enabled: true, severity: 'critical', 'for': '5m', window: '5m' },
      // Detection notifications given up (queue full, retries exhausted).
      KubeAuditAlertmanagerNotificationsFailing: { enabled: true, severity: 'warning', 'for': '0m', window: '15m' },
      // A rule of severity critical matched. Fires at once and resolves when no
      // critical match happened within the window.
      KubeAuditCriticalDetection: { enabled: true, severity: 'critical', 'for': '0m', window: '10m' },
      // One warning-severity rule matched more than `threshold` times in
      // `window`: individually they go to Alertmanager directly; many of them
      // is an incident or a rule that needs an exception.
      KubeAuditWarningDetectionsElevated: { enabled: true, severity: 'warning', 'for': '5m', window: '1h', threshold: 10 },
      // Failed authentications (401) from one source address in `window`:
      // password spraying, a stolen or expired token in a loop.
      KubeAuditAuthFailureBurst: { enabled: true, severity: 'warning', 'for': '1m', window: '5m', threshold: 20 },
      // Share of requests refused by authorization (403): enumeration with a
      // weak credential, or a broken deployment after an RBAC change.
      KubeAuditForbiddenRatioHigh: { enabled: true, severity: 'warning', 'for': '15m', threshold: 0.05 },
      // 99th percentile latency per verb, in seconds. LIST and
      // DELETECOLLECTION walk many objects, so they get their own bound, as in
      // the API server's own latency SLO.
      KubeAuditAPILatencyHigh: {
        enabled: true,
        severity: 'warning',
        'for': '10m',
        thresholdSeconds: 1,
        verbThresholdSeconds: { list: 5, deletecollection: 10 },
      },
      // Share of requests answered 5xx.
      KubeAuditAPIServerErrorsHigh: { enabled: true, severity: 'warning', 'for': '10m', threshold: 0.05 },
      // An admission webhook failed and the request went through unchecked
      // (failurePolicy: Ignore): a policy engine that can be knocked out.
      KubeAuditWebhookFailedOpen: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // An anonymous request succeeded. The exporter leaves the health and
      // version URLs, public by default, out of the anonymous category.
      KubeAuditAnonymousAccessAllowed: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // A capped family (users, source IPs) folds new values into __other__:
      // dashboards lose detail; raise metrics.max_users / max_source_ips.
      KubeAuditSeriesOverflow: { enabled: true, severity: 'info', 'for': '0m', window: '1h' },
    },

    // Loki ruler alerts (LogQL on the raw events), same fields as above.
    lokiAlerts: {
      // No audit event reached Loki: the exporter's path or Loki's ingestion
      // is broken even if the exporter's metrics look fine.
      KubeAuditLokiNoEvents: { enabled: true, severity: 'warning', 'for': '5m', window: '15m' },
      // A person ran a command, attached or forwarded a port into a pod of a
      // control-plane namespace.
      KubeAuditExecIntoSystemNamespace: {
        enabled: true,
        severity: 'warning',
        'for': '0m',
        window: '5m',
        namespaces: ['kube-system', 'kube-public', 'kube-node-lease'],
      },
      // One person's requests came from more than `threshold` addresses in
      // `window`: a shared or stolen credential. VPNs and NAT keep honest
      // users to a handful.
      KubeAuditUserFromManySourceIPs: { enabled: true, severity: 'warning', 'for': '0m', window: '1h', threshold: 5 },
      // One person deleted more than `threshold` objects in `window`.
      KubeAuditMassDeletionByUser: { enabled: true, severity: 'warning', 'for': '0m', window: '10m', threshold: 50 },
    },
  },
}
