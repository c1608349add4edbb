// The kube-audit-exporter monitoring mixin: Prometheus alerts and recording
// rules, Loki ruler alerts, Alertmanager inhibit rules and Grafana dashboards.
// Render with `make generate` (dashboards/generate.py), which writes dashboards/out/.
(import 'config.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'alerts/recording-rules.libsonnet') +
(import 'alerts/loki-rules.libsonnet') +
(import 'alerts/add-runbook-links.libsonnet') +
(import 'alerts/inhibit-rules.libsonnet') +
(import 'dashboards/dashboards.libsonnet')
