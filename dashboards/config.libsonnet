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
    // Auto-refresh of the Security and Exporter health dashboards. The
    // Overview and the Explorer, whose Loki tables scan the whole time range,
    // refresh on demand.
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
      // No exporter of a cluster took in one event within this many seconds:
      // an API server stopped sending, the log file is no longer the one
      // written, or (the common mistake) the exporter was installed and the
      // API server never wired to it. Per cluster, not per instance, so an
      // idle replica behind a kept-alive connection does not page. Any
      // cluster has controllers renewing leases and kubelets reporting status
      // every few seconds, so 15m of silence is not quiet, it is broken.
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
      // spool holds the data meanwhile; 10% is not a blip. Retries back off up
      // to 5 minutes (150-300s with jitter), so the window holds at least
      // three attempts: a window shorter than the backoff sees none, and the
      // alert would never fire or keep resolving between attempts.
      KubeAuditLokiPushFailing: { enabled: true, severity: 'warning', 'for': '10m', threshold: 0.1, window: '15m' },
      // Loki refused the credentials: the sender waits for new ones.
      KubeAuditLokiSenderStopped: { enabled: true, severity: 'warning', 'for': '5m' },
      // Entries Loki refused for good (400: too old, too long, rate limits per
      // stream...): they are not in Loki and will not be.
      // Not the reasons below, which have alerts of their own.
      KubeAuditLokiEntriesRejected: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // Loki refused entries as "too far behind": older than its
      // out-of-order window allows behind the newest entry of their stream.
      // Two writers share a stream (the same loki.writer), or a backfill was
      // sent into live streams; the entries are not retried.
      KubeAuditLokiEntriesTooFarBehind: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // Loki's operator blocked the tenant's ingestion (Loki 3.2+, status
      // 260 by default): every entry is dropped by Loki and not retried, so
      // the Explorer and the Loki alerts see nothing new.
      KubeAuditLokiIngestionBlocked: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // Loki refused structured metadata (Loki 2.9, or a schema before v13)
      // and the exporter sends entries without it: every Explorer filter and
      // Loki alert that reads user, namespace, resource, code... finds
      // nothing. Quiet when loki.structured_metadata is false on purpose.
      KubeAuditLokiStructuredMetadataRefused: { enabled: true, severity: 'warning', 'for': '5m' },
      // Spool records skipped as damaged (torn writes after a crash).
      KubeAuditSpoolCorruptRecords: { enabled: true, severity: 'warning', 'for': '0m', window: '1h' },
      // The spool, at the growth of the last `trendWindow`, is full within
      // `hoursAhead` hours, and already holds `minUsedShare` of
      // spool.max_bytes (so a near-empty spool's noise does not page), as
      // node-mixin's filesystem alerts predict rather than compare.
      KubeAuditSpoolFillingUp: { enabled: true, severity: 'warning', 'for': '15m', trendWindow: '1h', hoursAhead: 4, minUsedShare: 0.2 },
      // The oldest entry waiting for Loki is older than this: Loki has been
      // behind for that long, and Loki alerts and Explorer panels miss it.
      KubeAuditSpoolEntriesOld: { enabled: true, severity: 'warning', 'for': '10m', thresholdSeconds: 1800 },
      // The spool is full: the webhook answers 503 and the API server's own
      // buffer fills, then drops events. Audit records are being lost.
      KubeAuditSpoolFull: { enabled: true, severity: 'critical', 'for': '5m', window: '5m' },
      // The OTLP output (otlp.url), as the Loki output's alerts above: pushes
      // failing over a window that holds through backoff, the sender stopped
      // by 401/403, records refused for good, and its spool full (the webhook
      // answers 503: audit records are being lost).
      KubeAuditOTLPPushFailing: { enabled: true, severity: 'warning', 'for': '10m', threshold: 0.1, window: '15m' },
      KubeAuditOTLPSenderStopped: { enabled: true, severity: 'warning', 'for': '5m' },
      KubeAuditOTLPEntriesRejected: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      KubeAuditOTLPSpoolFull: { enabled: true, severity: 'critical', 'for': '5m', window: '5m' },
      // Detection notifications given up (queue full, retries exhausted).
      KubeAuditAlertmanagerNotificationsFailing: { enabled: true, severity: 'warning', 'for': '0m', window: '15m' },
      // A rule of severity critical matched and the exporter could not notify
      // Alertmanager of it directly (no alertmanager.url, or nothing delivered
      // and notifications given up within the window): the fallback for the
      // exporter's own KubeAuditDetection* notifications, which otherwise
      // page once per match. `for` gives the direct notification time to
      // arrive (retries back off up to 30s each).
      KubeAuditCriticalDetectionUndelivered: { enabled: true, severity: 'critical', 'for': '5m', window: '15m' },
      // One warning-severity rule matched more than `threshold` times in
      // `window`: individually they go to Alertmanager directly; many of them
      // is an incident or a rule that needs an exception.
      KubeAuditWarningDetectionsElevated: { enabled: true, severity: 'warning', 'for': '5m', window: '1h', threshold: 10 },
      // Failed authentications (401) from one source address in `window`:
      // password spraying, a stolen or expired token in a loop. The rule
      // auth-failure-burst says the same per match; the inhibit rules mute
      // this alert while that notification is active.
      KubeAuditAuthFailureBurst: { enabled: true, severity: 'warning', 'for': '1m', window: '5m', threshold: 20 },
      // Share of requests refused by authorization (403): enumeration with a
      // weak credential, or a broken deployment after an RBAC change.
      KubeAuditForbiddenRatioHigh: { enabled: true, severity: 'warning', 'for': '15m', threshold: 0.05 },
      // 99th percentile latency per verb, in seconds. LIST and
      // DELETECOLLECTION walk many objects, so they get their own bound, as in
      // the API server's own latency SLO. Off by default: kubernetes-mixin's
      // KubeAPIErrorBudgetBurn already pages on API latency and errors from
      // the API server's own metrics; turn on where that mixin is not used.
      KubeAuditAPILatencyHigh: {
        enabled: false,
        severity: 'warning',
        'for': '10m',
        thresholdSeconds: 1,
        verbThresholdSeconds: { list: 5, deletecollection: 10 },
      },
      // Share of requests answered 5xx. Off by default, as above.
      KubeAuditAPIServerErrorsHigh: { enabled: false, severity: 'warning', 'for': '10m', threshold: 0.05 },
      // An admission webhook failed and the request went through unchecked
      // (failurePolicy: Ignore): a policy engine that can be knocked out.
      KubeAuditWebhookFailedOpen: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // A bounded label started folding values into __other__ within `window`
      // after none in the `window` before: dashboards lose detail; raise
      // metrics.max_users / max_source_ips... Once a cap is reached every
      // new value folds for the life of the process, so "any fold" would
      // never resolve; this fires when folding begins and resolves after.
      KubeAuditSeriesOverflow: { enabled: true, severity: 'info', 'for': '0m', window: '1h' },
      // The webhook answered 4xx or 5xx (503, a full spool, is
      // KubeAuditSpoolFull's): the API server does not resend such a batch,
      // so every event in it is lost.
      KubeAuditWebhookRequestsFailing: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // TLS handshakes to the webhook failed more than `threshold` times in
      // `window`: a client certificate that is missing, expired or signed by
      // another CA (the API server cannot deliver), or a scanner.
      KubeAuditWebhookTLSHandshakeFailures: { enabled: true, severity: 'warning', 'for': '0m', window: '10m', threshold: 0 },
      // The log file source failed to open, read or checkpoint, or to process
      // what it read: events are late, or lost if the file rotates away.
      KubeAuditLogFileErrors: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // A detection rule failed on events (the events went on, unchecked by
      // that rule).
      KubeAuditRuleErrors: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // A loaded rule does not run: disabled by detect.disabled_rules, or a
      // setting it needs is empty (`rules list` says which). Info, for a day's
      // working hours: context, not a page; turn it off once intended.
      KubeAuditRuleInactive: { enabled: true, severity: 'info', 'for': '1h' },
      // A stateful rule reached detect.max_state_entries and forgot state:
      // thresholds and sequences can miss what they look for.
      KubeAuditRuleStateEvictions: { enabled: true, severity: 'warning', 'for': '0m', window: '1h' },
      // The shared state store (state.url: Redis or Valkey) does not answer:
      // dedupe and stateful rules run per replica, so a retried batch can
      // count twice and an attack split across replicas can go unseen.
      KubeAuditSharedStateUnreachable: { enabled: true, severity: 'warning', 'for': '5m' },
      // Round trips to the shared state store keep failing now and then
      // while it is up (timeouts, error replies): each failed batch's dedupe
      // and rule state went to this replica's memory. `window` without a
      // fallback resolves it; `for` keeps a single blip from paging.
      KubeAuditSharedStateFallbacks: { enabled: true, severity: 'warning', 'for': '15m', window: '10m' },
      // A worker process of `run --workers N` exited and was started again
      // (a crash or an OOM kill): the batches it held were answered with an
      // error and the API server retried them elsewhere, or were lost with
      // the process. Any restart in `window`.
      KubeAuditWorkerRestarts: { enabled: true, severity: 'warning', 'for': '0m', window: '1h' },
    },

    // The exporter's own notifications for detection rule matches (POST to
    // Alertmanager) are named this prefix + the rule id in CamelCase
    // (KubeAuditDetectionSecretDeletedByHuman) and carry the label `rule`. No
    // mixin alert starts with it, so the two sources of pages never share a
    // name (exporter/detect/alerts.py holds the same prefix).
    detectionAlertPrefix: 'KubeAuditDetection',

    // Alertmanager inhibit rules (alertmanager/inhibit-rules.yaml): while the
    // exporter's notification for `rule` is active, the mixin alert `alert`
    // that says the same thing is muted, where the `equal` labels match (the
    // cluster label of both: give --cluster and Prometheus's cluster label
    // the same value). The notification stays active for the exporter's
    // alertmanager.resolve_after (15m), longer than each alert's window.
    inhibitions: [
      { rule: 'auth-failure-burst', alert: 'KubeAuditAuthFailureBurst', equal: ['cluster'] },
      { rule: 'anonymous-request-allowed', alert: 'KubeAuditAnonymousAccessAllowed', equal: ['cluster', 'namespace'] },
      { rule: 'exec-into-system-pod', alert: 'KubeAuditExecIntoSystemNamespace', equal: ['cluster', 'namespace', 'user'] },
      // info-level rules notify only with detect.alert_min_severity info;
      // then they say the same as well
      { rule: 'pod-exec-or-attach', alert: 'KubeAuditExecIntoSystemNamespace', equal: ['cluster', 'namespace', 'user'] },
      { rule: 'admission-webhook-failing-open', alert: 'KubeAuditWebhookFailedOpen', equal: ['cluster'] },
      { rule: 'admission-webhook-failed-open', alert: 'KubeAuditWebhookFailedOpen', equal: ['cluster'] },
    ],

    // Loki ruler alerts (LogQL on the raw events), same fields as above.
    lokiAlerts: {
      // No audit event of a cluster reached Loki within `window`: the
      // exporter's path or Loki's ingestion is broken even if the exporter's
      // metrics look fine. A cluster is known from `clusters` when listed
      // (exact, and it stays known), else from its events within `lookback`
      // (it fires for lookback - window after the last event, then only the
      // cluster's Prometheus alerts remain); total silence fires as well.
      KubeAuditLokiNoEvents: { enabled: true, severity: 'warning', 'for': '5m', window: '15m', lookback: '1h', clusters: [] },
      // A person or a service account ran a command, attached or forwarded a
      // port into a pod of a control-plane namespace. Counted once per exec
      // (its ResponseStarted event: the end of a long session is not a new
      // one), per pod.
      KubeAuditExecIntoSystemNamespace: {
        enabled: true,
        severity: 'warning',
        'for': '0m',
        window: '5m',
        namespaces: ['kube-system', 'kube-public', 'kube-node-lease'],
        userKinds: ['human', 'serviceaccount'],
      },
      // An anonymous request succeeded. Leaves out what default RBAC lets
      // anyone read: the health and version URLs, and the cluster-info
      // ConfigMap in kube-public that kubeadm reads anonymously at every
      // node join. In LogQL because the exclusions need the object's name.
      KubeAuditAnonymousAccessAllowed: { enabled: true, severity: 'warning', 'for': '0m', window: '10m' },
      // One person's requests came from more than `threshold` addresses in
      // `window`: a shared or stolen credential. VPNs and NAT keep honest
      // users to a handful.
      KubeAuditUserFromManySourceIPs: { enabled: true, severity: 'warning', 'for': '0m', window: '1h', threshold: 5 },
      // One person deleted more than `threshold` distinct objects in `window`
      // (a retried delete counts once), or deleted a whole collection
      // (deletecollection: one request, many objects).
      KubeAuditMassDeletionByUser: { enabled: true, severity: 'warning', 'for': '0m', window: '10m', threshold: 50 },
    },
  },
}
