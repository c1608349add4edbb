// The four dashboards, keyed by file name (grafanaDashboards).
(import 'overview.libsonnet') +
(import 'security.libsonnet') +
(import 'explorer.libsonnet') +
(import 'health.libsonnet')
