{{/* Chart name. */}}
{{- define "kube-audit-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains it. */}}
{{- define "kube-audit-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. helm.sh/chart changes with every chart version,
so it is never part of a selector. */}}
{{- define "kube-audit-exporter.labels" -}}
helm.sh/chart: {{ include "kube-audit-exporter.chart" . }}
{{ include "kube-audit-exporter.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube-audit-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "kube-audit-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-audit-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-audit-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-audit-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Whether an auto|true|false integration is on: "true" or "".
Call with (list $value $auto), $auto being what "auto" means here. */}}
{{- define "kube-audit-exporter.switch" -}}
{{- $value := index . 0 }}
{{- $auto := index . 1 }}
{{- if eq (toString $value) "auto" }}
{{- if $auto }}true{{ end }}
{{- else if eq (toString $value) "true" }}true
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.serviceMonitorEnabled" -}}
{{- include "kube-audit-exporter.switch" (list .Values.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) }}
{{- end }}

{{/* `auto` also needs the generated files (a chart built without them skips
the integration; a forced `true` fails and says why). */}}
{{- define "kube-audit-exporter.prometheusRuleEnabled" -}}
{{- $auto := and (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") (.Files.Glob "files/prometheus/*.yaml") }}
{{- include "kube-audit-exporter.switch" (list .Values.prometheusRule.enabled $auto) }}
{{- end }}

{{- define "kube-audit-exporter.dashboardsEnabled" -}}
{{- $auto := and (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") (.Files.Glob "files/dashboards/*.json") }}
{{- include "kube-audit-exporter.switch" (list .Values.dashboards.enabled $auto) }}
{{- end }}

{{- define "kube-audit-exporter.lokiRulesEnabled" -}}
{{- $auto := and .Values.loki.url (.Files.Glob "files/loki/*.yaml") }}
{{- include "kube-audit-exporter.switch" (list .Values.lokiRules.enabled $auto) }}
{{- end }}

{{/* webhook mode (not logfile, not a provider). */}}
{{- define "kube-audit-exporter.webhook" -}}
{{- if eq .Values.mode "webhook" }}true{{ end }}
{{- end }}

{{/* The managed provider of the mode (eks, gke, aks), or "". */}}
{{- define "kube-audit-exporter.provider" -}}
{{- if has .Values.mode (list "eks" "gke" "aks") }}{{ .Values.mode }}{{ end }}
{{- end }}

{{/* A provider mode's intake (firehose, cloudwatch, push, pull, eventhub,
archive), or "". */}}
{{- define "kube-audit-exporter.intake" -}}
{{- $provider := include "kube-audit-exporter.provider" . }}
{{- if $provider }}{{ get (get .Values $provider) "intake" }}{{ end }}
{{- end }}

{{/* An intake that polls with a checkpoint file, which one pod owns: EKS
CloudWatch, the AKS archive. "true" or "". */}}
{{- define "kube-audit-exporter.singleton" -}}
{{- if has (include "kube-audit-exporter.intake" .) (list "cloudwatch" "archive") }}true{{ end }}
{{- end }}

{{/* The push receiver's port name (EKS Firehose, GKE Pub/Sub push), or "". */}}
{{- define "kube-audit-exporter.receiver" -}}
{{- $intake := include "kube-audit-exporter.intake" . }}
{{- if eq $intake "firehose" }}firehose
{{- else if and (eq .Values.mode "gke") (eq $intake "push") }}pubsub
{{- end }}
{{- end }}

{{/* The URL path of the push receiver. */}}
{{- define "kube-audit-exporter.receiverPath" -}}
{{- if eq .Values.mode "eks" }}{{ .Values.eks.firehose.path }}{{ else }}{{ .Values.gke.push.path }}{{ end }}
{{- end }}

{{/* The audience of the GKE push token: the value, else the public URL. */}}
{{- define "kube-audit-exporter.pushAudience" -}}
{{- if .Values.gke.push.audience }}{{ .Values.gke.push.audience }}
{{- else if .Values.receiver.ingress.host }}{{ printf "https://%s%s" .Values.receiver.ingress.host .Values.gke.push.path }}
{{- end }}
{{- end }}

{{/* Pods: explicit replicas, else 1 for a singleton intake, else 2. */}}
{{- define "kube-audit-exporter.replicas" -}}
{{- if not (kindIs "invalid" .Values.replicas) }}{{ .Values.replicas }}
{{- else if include "kube-audit-exporter.singleton" . }}1
{{- else }}2
{{- end }}
{{- end }}

{{/* The state volume's type once `auto` is resolved. */}}
{{- define "kube-audit-exporter.stateType" -}}
{{- if ne .Values.state.type "auto" }}{{ .Values.state.type }}
{{- else if eq .Values.mode "logfile" }}hostPath
{{- else if or (eq .Values.mode "webhook") (include "kube-audit-exporter.singleton" .) }}persistentVolumeClaim
{{- else }}emptyDir
{{- end }}
{{- end }}

{{/* Webhook mode with claims: one per replica, from the StatefulSet's
volume claim template. "true" or "". */}}
{{- define "kube-audit-exporter.claimTemplate" -}}
{{- if and (eq .Values.mode "webhook") (eq (include "kube-audit-exporter.stateType" .) "persistentVolumeClaim") (not .Values.state.persistentVolumeClaim.existingClaim) }}true{{ end }}
{{- end }}

{{/* The pods' environment: the Loki writer (each pod's own stream: the
pod, or the node for the logfile DaemonSet) and the shared state's URL,
which may carry a password and so is never in the ConfigMap. */}}
{{- define "kube-audit-exporter.env" -}}
{{- $s := .Values.state -}}
- name: KUBE_AUDIT_LOKI_WRITER
  valueFrom:
    fieldRef:
      fieldPath: {{ if eq .Values.mode "logfile" }}spec.nodeName{{ else }}metadata.name{{ end }}
{{- if $s.urlKey }}
- name: KUBE_AUDIT_STATE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ $s.urlKey }}
{{- else if $s.passwordKey }}
{{- /* Kubernetes expands $(STATE_URL_PASSWORD) from the variable above it */}}
- name: STATE_URL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ $s.passwordKey }}
- name: KUBE_AUDIT_STATE_URL
  value: {{ regexReplaceAll "^(rediss?)://(?:([^@/:]*)@)?(.+)$" $s.url "${1}://${2}:$$(STATE_URL_PASSWORD)@${3}" | quote }}
{{- else if $s.url }}
- name: KUBE_AUDIT_STATE_URL
  value: {{ $s.url | quote }}
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.webhookServiceName" -}}
{{- include "kube-audit-exporter.fullname" . }}
{{- end }}

{{- define "kube-audit-exporter.metricsServiceName" -}}
{{- include "kube-audit-exporter.childName" (list . "metrics") }}
{{- end }}

{{/* The serving Secret: tls.crt, tls.key and (usually) ca.crt. */}}
{{- define "kube-audit-exporter.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.source "secret" }}
{{- .Values.webhook.tls.existingSecret }}
{{- else }}
{{- include "kube-audit-exporter.childName" (list . "tls") }}
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.clientCASecretName" -}}
{{- default (include "kube-audit-exporter.tlsSecretName" .) .Values.webhook.tls.clientAuth.caSecret }}
{{- end }}

{{/* Secret holding the API server's webhook kubeconfig. */}}
{{- define "kube-audit-exporter.apiServerSecretName" -}}
{{- include "kube-audit-exporter.childName" (list . "apiserver") }}
{{- end }}

{{/* Service DNS names for the serving certificate, shortest first. */}}
{{- define "kube-audit-exporter.serviceDNSNames" -}}
{{- $svc := include "kube-audit-exporter.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- /* the host the API server connects to, when it is a name */}}
{{- $host := include "kube-audit-exporter.apiServerHost" . }}
{{- if not (regexMatch "^[0-9.]+$|:" $host) }}{{ $names = append $names $host }}{{ end }}
{{- toJson (concat $names .Values.webhook.tls.extraDNSNames | uniq) }}
{{- end }}

{{/* IP addresses for the serving certificate. */}}
{{- define "kube-audit-exporter.serviceIPs" -}}
{{- $ips := list }}
{{- with .Values.webhook.service.clusterIP }}{{ $ips = append $ips . }}{{ end }}
{{- $host := include "kube-audit-exporter.apiServerHost" . }}
{{- if regexMatch "^[0-9.]+$|:" $host }}{{ $ips = append $ips (trimAll "[]" $host) }}{{ end }}
{{- toJson (concat $ips .Values.webhook.tls.extraIPAddresses | uniq) }}
{{- end }}

{{/* The host the API server connects to (see webhook.apiServer.host). */}}
{{- define "kube-audit-exporter.apiServerHost" -}}
{{- if .Values.webhook.apiServer.host }}{{ .Values.webhook.apiServer.host }}
{{- else if .Values.webhook.service.clusterIP }}{{ .Values.webhook.service.clusterIP }}
{{- else if eq .Values.webhook.service.type "NodePort" }}127.0.0.1
{{- else }}{{ printf "%s.%s.svc" (include "kube-audit-exporter.webhookServiceName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "kube-audit-exporter.apiServerURL" -}}
{{- $host := include "kube-audit-exporter.apiServerHost" . }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- $port := .Values.webhook.service.port }}
{{- if eq .Values.webhook.service.type "NodePort" }}{{ $port = .Values.webhook.service.nodePort }}{{ end }}
{{- printf "https://%s:%v%s" $host $port .Values.webhook.path }}
{{- end }}

{{/* Where things are mounted in the exporter container. */}}
{{- define "kube-audit-exporter.paths" -}}
config: /etc/kube-audit-exporter/config/config.yaml
tls: /etc/kube-audit-exporter/tls
firehose: /etc/kube-audit-exporter/firehose
rules: /etc/kube-audit-exporter/rules
loki: /etc/kube-audit-exporter/loki
state: /var/lib/kube-audit-exporter
{{- end }}

{{/* The name of an object derived from the full name: "<fullname>-<suffix>",
the full name shortened so that the suffix always survives the 63-character
limit (two objects never end up with the same name). */}}
{{- define "kube-audit-exporter.childName" -}}
{{- $top := index . 0 }}
{{- $suffix := index . 1 }}
{{- $full := include "kube-audit-exporter.fullname" $top }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* What the certgen Job makes (webhook.tls.source generate), as JSON: its
ConfigMap carries it, and the pods' checksum/tls annotation rolls them when it
changes, so that they load a serving certificate made for new names. */}}
{{- define "kube-audit-exporter.certgenSpec" -}}
{{- $tls := .Values.webhook.tls }}
{{- $dnsNames := include "kube-audit-exporter.serviceDNSNames" . | fromJsonArray }}
{{- toJson (dict
  "namespace" .Release.Namespace
  "secrets" (dict
    "ca" (include "kube-audit-exporter.childName" (list . "ca"))
    "serving" (include "kube-audit-exporter.tlsSecretName" .)
    "apiServer" (include "kube-audit-exporter.apiServerSecretName" .))
  "caName" (printf "%s-ca" (include "kube-audit-exporter.fullname" .))
  "commonName" (index $dnsNames 2)
  "dnsNames" $dnsNames
  "ipAddresses" (include "kube-audit-exporter.serviceIPs" . | fromJsonArray)
  "validityDays" (int $tls.validityDays)
  "renewBeforeDays" (int $tls.certgen.renewBeforeDays)
  "server" (include "kube-audit-exporter.apiServerURL" .)
  "clientAuth" $tls.clientAuth.enabled
  "labels" (include "kube-audit-exporter.labels" . | fromYaml)) }}
{{- end }}

{{/* With source certManager: the Secret of the API server's client certificate. */}}
{{- define "kube-audit-exporter.clientCertSecretName" -}}
{{- include "kube-audit-exporter.childName" (list . "apiserver-client") }}
{{- end }}

{{/* State on the node (logfile mode): one directory per release, so two
releases never share a checkpoint or a spool. */}}
{{- define "kube-audit-exporter.stateHostPath" -}}
{{- printf "%s/%s/%s" (trimSuffix "/" .Values.state.hostPath) .Release.Namespace .Release.Name }}
{{- end }}

{{/* A size in bytes (as a string; pipe it to float64). Call with (list $value
$quantity): $quantity true reads a Kubernetes quantity (2Gi, 500M; no
exponents), false the exporter's size syntax (1GiB, 512MiB, 1GB: units case
insensitive, an optional B). */}}
{{- define "kube-audit-exporter.bytes" -}}
{{- $value := toString (index . 0) | trim }}
{{- $quantity := index . 1 }}
{{- $m := regexFindAll "^([0-9]+(?:\\.[0-9]+)?)\\s*([a-zA-Z]*)$" $value -1 }}
{{- if not $m }}{{ fail (printf "%q is not a size" $value) }}{{ end }}
{{- $number := regexReplaceAll "^([0-9]+(?:\\.[0-9]+)?)\\s*([a-zA-Z]*)$" $value "${1}" | float64 }}
{{- $unit := regexReplaceAll "^([0-9]+(?:\\.[0-9]+)?)\\s*([a-zA-Z]*)$" $value "${2}" }}
{{- $k := 1000.0 }}{{ $ki := 1024.0 }}
{{- $units := dict "" 1.0 "k" $k "Ki" $ki "M" (mulf $k $k) "Mi" (mulf $ki $ki) "G" (mulf $k $k $k) "Gi" (mulf $ki $ki $ki) "T" (mulf $k $k $k $k) "Ti" (mulf $ki $ki $ki $ki) "P" (mulf $k $k $k $k $k) "Pi" (mulf $ki $ki $ki $ki $ki) "m" 0.001 }}
{{- if not $quantity }}
  {{- $u := lower $unit | trimSuffix "b" }}
  {{- $units = dict "" 1.0 "k" $k "ki" $ki "m" (mulf $k $k) "mi" (mulf $ki $ki) "g" (mulf $k $k $k) "gi" (mulf $ki $ki $ki) "t" (mulf $k $k $k $k) "ti" (mulf $ki $ki $ki $ki) }}
  {{- $unit = $u }}
{{- end }}
{{- if not (hasKey $units $unit) }}{{ fail (printf "%q: unknown unit %q" $value $unit) }}{{ end }}
{{- mulf $number (get $units $unit) }}
{{- end }}
