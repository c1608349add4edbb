{{/* The exporter's configuration file (exporter/config.py: YAML keys as in
the README's configuration reference), from the values. */}}
{{- define "kube-audit-exporter.config" -}}
{{- $v := .Values }}
{{- $paths := include "kube-audit-exporter.paths" . | fromYaml }}
{{- $cfg := dict "web" (dict "listen_address" (printf ":%v" $v.metrics.port)) }}
{{- with $v.cluster }}{{ $_ := set $cfg "cluster" . }}{{ end }}
{{- if eq $v.mode "webhook" }}
  {{- $wh := dict
    "listen_address" (printf ":%v" $v.webhook.port)
    "path" $v.webhook.path
    "tls_cert_file" (printf "%s/tls.crt" $paths.tls)
    "tls_key_file" (printf "%s/tls.key" $paths.tls)
  }}
  {{- if $v.webhook.tls.clientAuth.enabled }}
    {{- $_ := set $wh "client_ca_file" (printf "%s/client-ca.crt" $paths.tls) }}
  {{- end }}
  {{- $_ := set $cfg "webhook" $wh }}
{{- else if eq $v.mode "eks" }}
  {{- $eks := dict }}
  {{- with $v.eks.region }}{{ $_ := set $eks "region" . }}{{ end }}
  {{- if eq $v.eks.intake "cloudwatch" }}
    {{- $cw := $v.eks.cloudwatch }}
    {{- $_ := set $eks "log_group" $cw.logGroup }}
    {{- $_ := set $eks "stream_prefix" $cw.streamPrefix }}
    {{- $_ := set $eks "start_at" $cw.startAt }}
    {{- $_ := set $eks "checkpoint_file" (printf "%s/cloudwatch.json" $paths.state) }}
    {{- with $cw.endpointUrl }}{{ $_ := set $eks "endpoint_url" . }}{{ end }}
  {{- else }}
    {{- $_ := set $eks "firehose_listen_address" (printf ":%v" $v.receiver.port) }}
    {{- $_ := set $eks "firehose_path" $v.eks.firehose.path }}
    {{- $_ := set $eks "firehose_access_key_file" (printf "%s/%s" $paths.firehose $v.eks.firehose.accessKeySecret.key) }}
    {{- if $v.receiver.tls.existingSecret }}
      {{- $_ := set $eks "firehose_tls_cert_file" (printf "%s/tls.crt" $paths.tls) }}
      {{- $_ := set $eks "firehose_tls_key_file" (printf "%s/tls.key" $paths.tls) }}
    {{- else }}
      {{- $_ := set $eks "firehose_insecure" true }}
    {{- end }}
  {{- end }}
  {{- $_ := set $cfg "eks" $eks }}
{{- else if eq $v.mode "gke" }}
  {{- $gke := dict }}
  {{- if eq $v.gke.intake "pull" }}
    {{- $_ := set $gke "subscription" $v.gke.pull.subscription }}
  {{- else }}
    {{- $_ := set $gke "push_listen_address" (printf ":%v" $v.receiver.port) }}
    {{- $_ := set $gke "push_path" $v.gke.push.path }}
    {{- $_ := set $gke "push_audience" (include "kube-audit-exporter.pushAudience" .) }}
    {{- with $v.gke.push.serviceAccount }}{{ $_ := set $gke "push_service_account" . }}{{ end }}
    {{- if $v.receiver.tls.existingSecret }}
      {{- $_ := set $gke "push_tls_cert_file" (printf "%s/tls.crt" $paths.tls) }}
      {{- $_ := set $gke "push_tls_key_file" (printf "%s/tls.key" $paths.tls) }}
    {{- else }}
      {{- $_ := set $gke "push_insecure_http" true }}
    {{- end }}
  {{- end }}
  {{- $_ := set $cfg "gke" $gke }}
{{- else if eq $v.mode "aks" }}
  {{- $aks := dict }}
  {{- if eq $v.aks.intake "archive" }}
    {{- $ar := $v.aks.archive }}
    {{- $_ := set $aks "storage_account_url" $ar.storageAccountUrl }}
    {{- $_ := set $aks "categories" $ar.categories }}
    {{- with $ar.prefix }}{{ $_ := set $aks "prefix" . }}{{ end }}
    {{- $_ := set $aks "checkpoint_file" (printf "%s/aks-archive.json" $paths.state) }}
    {{- $_ := set $aks "start_at" $ar.startAt }}
  {{- else }}
    {{- $eh := $v.aks.eventhub }}
    {{- $_ := set $aks "eventhub_namespace" $eh.namespace }}
    {{- $_ := set $aks "eventhub_name" $eh.name }}
    {{- $_ := set $aks "eventhub_consumer_group" $eh.consumerGroup }}
    {{- $_ := set $aks "eventhub_checkpoint_account_url" $eh.checkpointAccountUrl }}
    {{- $_ := set $aks "eventhub_checkpoint_container" $eh.checkpointContainer }}
    {{- $_ := set $aks "eventhub_start_at" $eh.startAt }}
  {{- end }}
  {{- $_ := set $cfg "aks" $aks }}
{{- else }}
  {{- $_ := set $cfg "logfile" (dict
    "path" (printf "%s/%s" (trimSuffix "/" $v.logfile.hostPath) $v.logfile.fileName)
    "checkpoint_file" (printf "%s/checkpoint.json" $paths.state)
    "start_at" $v.logfile.startAt
  ) }}
{{- end }}
{{- if $v.loki.url }}
  {{- $loki := dict "url" $v.loki.url }}
  {{- with $v.loki.tenant }}{{ $_ := set $loki "tenant" . }}{{ end }}
  {{- with $v.loki.basicAuthUser }}{{ $_ := set $loki "basic_auth_user" . }}{{ end }}
  {{- with $v.loki.passwordKey }}{{ $_ := set $loki "basic_auth_password_file" (printf "%s/%s" $paths.loki .) }}{{ end }}
  {{- with $v.loki.bearerTokenKey }}{{ $_ := set $loki "bearer_token_file" (printf "%s/%s" $paths.loki .) }}{{ end }}
  {{- with $v.loki.caKey }}{{ $_ := set $loki "ca_file" (printf "%s/%s" $paths.loki .) }}{{ end }}
  {{- with $v.loki.certKey }}{{ $_ := set $loki "cert_file" (printf "%s/%s" $paths.loki .) }}{{ end }}
  {{- with $v.loki.keyKey }}{{ $_ := set $loki "key_file" (printf "%s/%s" $paths.loki .) }}{{ end }}
  {{- with $v.loki.labels }}{{ $_ := set $loki "labels" . }}{{ end }}
  {{- $_ := set $cfg "loki" $loki }}
  {{- $_ := set $cfg "spool" (dict "dir" (printf "%s/spool" $paths.state) "max_bytes" $v.spool.maxBytes "fsync" $v.spool.fsync) }}
{{- end }}
{{- if $v.rules.custom }}
  {{- $files := list }}
  {{- range $name, $_ := $v.rules.custom }}
    {{- $files = append $files (printf "%s/%s" $paths.rules $name) }}
  {{- end }}
  {{- $_ := set $cfg "rules" (dict "file" $files "include_defaults" $v.rules.includeDefaults) }}
{{- end }}
{{- $d := $v.detection }}
{{- $detect := dict "alert_min_severity" $d.alertMinSeverity }}
{{- with $d.trustedNetworks }}{{ $_ := set $detect "trusted_networks" . }}{{ end }}
{{- with $d.podCIDRs }}{{ $_ := set $detect "pod_cidrs" . }}{{ end }}
{{- with $d.nodeCIDRs }}{{ $_ := set $detect "node_cidrs" . }}{{ end }}
{{- with $d.criticalWorkloads }}{{ $_ := set $detect "critical_workloads" . }}{{ end }}
{{- with $d.disabledRules }}{{ $_ := set $detect "disabled_rules" . }}{{ end }}
{{- with $d.allowedUsers }}{{ $_ := set $detect "allowed_users" . }}{{ end }}
{{- with $d.allowedImages }}{{ $_ := set $detect "allowed_images" . }}{{ end }}
{{- with $d.allowedNamespaces }}{{ $_ := set $detect "allowed_namespaces" . }}{{ end }}
{{- with $d.allowedNodes }}{{ $_ := set $detect "allowed_nodes" . }}{{ end }}
{{- $_ := set $cfg "detect" $detect }}
{{- if $v.alertmanager.urls }}
  {{- $am := dict "url" $v.alertmanager.urls }}
  {{- with $v.alertmanager.linkTemplate }}{{ $_ := set $am "link_template" . }}{{ end }}
  {{- $_ := set $cfg "alertmanager" $am }}
{{- end }}
{{- /* `config` adds what the chart does not set (_validate.tpl refuses overlaps) */}}
{{- $cfg = mustMergeOverwrite (deepCopy $v.config) $cfg }}
{{- toYaml $cfg }}
{{- end }}
