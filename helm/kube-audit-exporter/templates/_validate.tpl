{{/* Contradictory values fail the render with a message that names them. */}}
{{- define "kube-audit-exporter.validate" -}}
{{- $v := .Values }}
{{- $replicas := int (include "kube-audit-exporter.replicas" .) }}
{{- $explicitReplicas := int (default 1 $v.replicas) }}
{{- $state := include "kube-audit-exporter.stateType" . }}
{{- if ge (int $v.preStopSleepSeconds) (int $v.terminationGracePeriodSeconds) }}
  {{- fail (printf "preStopSleepSeconds: %v is not below terminationGracePeriodSeconds: %v; the pod would be killed before it could drain and write its checkpoint" $v.preStopSleepSeconds $v.terminationGracePeriodSeconds) }}
{{- end }}
{{- if eq $v.mode "logfile" }}
  {{- if gt $explicitReplicas 1 }}
    {{- fail (printf "replicas: %d contradicts mode logfile, which runs one pod per control-plane node (a DaemonSet); remove replicas or use mode webhook" $explicitReplicas) }}
  {{- end }}
  {{- if eq $state "persistentVolumeClaim" }}
    {{- fail "state.type: persistentVolumeClaim contradicts mode logfile (one claim cannot serve a pod on every control-plane node); use hostPath or emptyDir" }}
  {{- end }}
{{- else }}
  {{- if eq $state "hostPath" }}
    {{- fail (printf "state.type: hostPath is for mode logfile; in mode %s a pod moves between nodes and would lose its spool: use persistentVolumeClaim or emptyDir" $v.mode) }}
  {{- end }}
  {{- if and (eq $state "persistentVolumeClaim") (gt $replicas 1) $v.state.persistentVolumeClaim.existingClaim (not (include "kube-audit-exporter.singleton" .)) }}
    {{- fail (printf "state.persistentVolumeClaim.existingClaim: one claim with replicas: %d would make the replicas share one spool; each needs its own: use replicas: 1, or leave existingClaim empty%s" $replicas (ternary " (a claim per replica)" "" (eq $v.mode "webhook"))) }}
  {{- end }}
  {{- if and (eq $state "persistentVolumeClaim") (gt $replicas 1) (ne $v.mode "webhook") (not (include "kube-audit-exporter.singleton" .)) }}
    {{- fail (printf "state.type: persistentVolumeClaim with replicas: %d in mode %s would make the replicas share one claim; use replicas: 1 or emptyDir" $replicas $v.mode) }}
  {{- end }}
  {{- if and $v.podDisruptionBudget.enabled (not (include "kube-audit-exporter.singleton" .)) (ge (int $v.podDisruptionBudget.minAvailable) $replicas) }}
    {{- fail (printf "podDisruptionBudget.minAvailable: %v with replicas: %d would block every node drain; raise replicas or disable podDisruptionBudget" $v.podDisruptionBudget.minAvailable $replicas) }}
  {{- end }}
{{- end }}
{{- $provider := include "kube-audit-exporter.provider" . }}
{{- $intake := include "kube-audit-exporter.intake" . }}
{{- if include "kube-audit-exporter.singleton" . }}
  {{- if gt $replicas 1 }}
    {{- fail (printf "replicas: %d contradicts %s.intake: %s, which polls with a checkpoint file one pod owns; remove replicas (it is 1)%s" $replicas $provider $intake (ternary ", or use eks.intake firehose to scale" ", or use aks.intake eventhub to scale" (eq $provider "eks"))) }}
  {{- end }}
{{- end }}
{{- if eq $v.mode "eks" }}
  {{- if and (eq $intake "cloudwatch") (not $v.eks.cloudwatch.logGroup) }}
    {{- fail "eks.cloudwatch.logGroup: required with eks.intake cloudwatch (/aws/eks/<cluster>/cluster)" }}
  {{- end }}
  {{- if and (eq $intake "firehose") (not $v.eks.firehose.accessKeySecret.name) }}
    {{- fail "eks.firehose.accessKeySecret.name: required with eks.intake firehose: the Secret holding the access key set on the Firehose stream's HTTP endpoint" }}
  {{- end }}
{{- else if eq $v.mode "gke" }}
  {{- if and (eq $intake "pull") (not $v.gke.pull.subscription) }}
    {{- fail "gke.pull.subscription: required with gke.intake pull (projects/<project>/subscriptions/<name>)" }}
  {{- end }}
  {{- if and (eq $intake "push") (not (include "kube-audit-exporter.pushAudience" .)) }}
    {{- fail "gke.push.audience: required with gke.intake push to verify the push subscription's OIDC token; set it (--push-auth-token-audience) or receiver.ingress.host (the audience is then https://<host><gke.push.path>)" }}
  {{- end }}
{{- else if eq $v.mode "aks" }}
  {{- if eq $intake "archive" }}
    {{- if not $v.aks.archive.storageAccountUrl }}
      {{- fail "aks.archive.storageAccountUrl: required with aks.intake archive (https://<account>.blob.core.windows.net)" }}
    {{- end }}
  {{- else }}
    {{- range list "namespace" "name" "checkpointAccountUrl" }}
      {{- if not (get $v.aks.eventhub .) }}
        {{- fail (printf "aks.eventhub.%s: required with aks.intake eventhub" .) }}
      {{- end }}
    {{- end }}
  {{- end }}
{{- end }}
{{- if and $v.receiver.ingress.enabled (not (include "kube-audit-exporter.receiver" .)) }}
  {{- fail (printf "receiver.ingress.enabled: the receiver serves the push intakes (eks.intake firehose, gke.intake push), not mode %s%s" $v.mode (ternary (printf " with intake %s" $intake) "" (ne $intake ""))) }}
{{- end }}
{{- if and $v.receiver.ingress.enabled (not $v.receiver.ingress.host) }}
  {{- fail "receiver.ingress.host: required with receiver.ingress.enabled (the public name of the endpoint)" }}
{{- end }}
{{- $identity := dict "eks" (list "roleArn" $v.eks.roleArn) "gke" (list "gcpServiceAccount" $v.gke.gcpServiceAccount) "aks" (list "clientId" $v.aks.clientId) }}
{{- range $p, $pair := $identity }}
  {{- if and (index $pair 1) (ne $v.mode $p) }}
    {{- fail (printf "%s.%s: set, but mode is %s; it annotates the ServiceAccount in mode %s only" $p (index $pair 0) $v.mode $p) }}
  {{- end }}
  {{- if and (index $pair 1) (not $v.serviceAccount.create) }}
    {{- fail (printf "%s.%s: the chart annotates only a ServiceAccount it creates (serviceAccount.create is false); annotate %s yourself and remove %s.%s" $p (index $pair 0) (include "kube-audit-exporter.serviceAccountName" $) $p (index $pair 0)) }}
  {{- end }}
{{- end }}
{{- /* the shared state's URL: from values or from a Secret, a password only
from the Secret */}}
{{- $s := $v.state }}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" $s.url }}
  {{- fail "state.url: carries a password, which would be in the pod spec; put the password in a Secret and set state.existingSecret and state.passwordKey (or the whole URL under state.urlKey)" }}
{{- end }}
{{- if and $s.existingSecret (eq (empty $s.passwordKey) (empty $s.urlKey)) }}
  {{- fail "state.existingSecret: set exactly one of state.passwordKey (the password, put into state.url) and state.urlKey (a whole URL)" }}
{{- end }}
{{- if and (or $s.passwordKey $s.urlKey) (not $s.existingSecret) }}
  {{- fail "state.existingSecret: required with state.passwordKey or state.urlKey" }}
{{- end }}
{{- if and $s.urlKey $s.url }}
  {{- fail "state.url: set, but state.urlKey takes the whole URL from the Secret; remove one" }}
{{- end }}
{{- if and $s.passwordKey (not (regexMatch "^rediss?://" $s.url)) }}
  {{- fail (printf "state.url: state.passwordKey needs a redis:// or rediss:// URL to put the password in, not %q; use state.urlKey for a unix:// URL" $s.url) }}
{{- end }}
{{- if eq $v.mode "webhook" }}
  {{- $svc := $v.webhook.service }}
  {{- if and (eq $svc.type "NodePort") (kindIs "invalid" $svc.nodePort) }}
    {{- fail "webhook.service.nodePort: required with type NodePort, so that the API server's kubeconfig can name it" }}
  {{- end }}
  {{- if and (ne $svc.type "NodePort") (not (kindIs "invalid" $svc.nodePort)) }}
    {{- fail (printf "webhook.service.nodePort: set, but webhook.service.type is %s; use type NodePort or remove it" $svc.type) }}
  {{- end }}
  {{- if eq $svc.clusterIP "None" }}
    {{- fail "webhook.service.clusterIP: None (headless) leaves the API server no address to connect to; use a fixed address or leave it empty" }}
  {{- end }}
  {{- if not (or $svc.clusterIP (eq $svc.type "NodePort") $v.webhook.apiServer.host) }}
    {{- fail "webhook: choose how the API server reaches the exporter; it runs on the host network and cannot resolve cluster DNS names. Set one of: webhook.service.clusterIP=<a free address of the service CIDR, e.g. 10.96.200.10 (kubeadm 10.96.0.0/12) or 10.43.200.10 (k3s)>; webhook.service.type=NodePort with webhook.service.nodePort=<30000-32767>; or webhook.apiServer.host=<a name or address the control-plane nodes resolve to the Service>. It is written into the API server's kubeconfig and the certificate, and a Service's clusterIP cannot change after install." }}
  {{- end }}
  {{- /* a Service's clusterIP is immutable: refuse an upgrade that changes it
  (lookup is empty in `helm template`, so rendering stays repeatable) */}}
  {{- $existing := lookup "v1" "Service" .Release.Namespace (include "kube-audit-exporter.webhookServiceName" .) }}
  {{- $current := dig "spec" "clusterIP" "" ($existing | default dict) }}
  {{- if and $svc.clusterIP $current (ne $current "None") (ne $current $svc.clusterIP) }}
    {{- fail (printf "webhook.service.clusterIP: %s, but the Service %s already has clusterIP %s, which Kubernetes cannot change; keep %s (set webhook.service.clusterIP=%s), or uninstall and install again, then copy the new kubeconfig to the control-plane nodes" $svc.clusterIP (include "kube-audit-exporter.webhookServiceName" .) $current $current $current) }}
  {{- end }}
  {{- if eq (int $v.webhook.port) (int $v.metrics.port) }}
    {{- fail (printf "webhook.port: %v is also metrics.port; they must differ" $v.webhook.port) }}
  {{- end }}
  {{- $tls := $v.webhook.tls }}
  {{- if and (eq $tls.source "secret") (not $tls.existingSecret) }}
    {{- fail "webhook.tls.existingSecret: required with webhook.tls.source secret" }}
  {{- end }}
  {{- if and (ne $tls.source "secret") $tls.existingSecret }}
    {{- fail (printf "webhook.tls.existingSecret: set, but webhook.tls.source is %s; use source secret or remove it" $tls.source) }}
  {{- end }}
  {{- if and (eq $tls.source "certManager") (not $tls.certManager.issuerRef.name) }}
    {{- fail "webhook.tls.certManager.issuerRef.name: required with webhook.tls.source certManager" }}
  {{- end }}
  {{- if and $tls.clientAuth.enabled (not $tls.clientAuth.caKey) }}
    {{- fail "webhook.tls.clientAuth.caKey: client verification is on but names no CA; set the key of the CA bundle or disable clientAuth" }}
  {{- end }}
  {{- if and (eq $tls.source "generate") $tls.clientAuth.enabled }}
    {{- $own := include "kube-audit-exporter.tlsSecretName" . }}
    {{- if and $tls.clientAuth.caSecret (ne $tls.clientAuth.caSecret $own) }}
      {{- fail (printf "webhook.tls.clientAuth.caSecret: %s, but webhook.tls.source generate signs the API server's client certificate with its own CA (ca.crt of %s), which that Secret does not hold: mutual TLS could never succeed. Remove webhook.tls.clientAuth.caSecret, or use webhook.tls.source secret or certManager with a client certificate that CA signed" $tls.clientAuth.caSecret $own) }}
    {{- end }}
    {{- if ne $tls.clientAuth.caKey "ca.crt" }}
      {{- fail (printf "webhook.tls.clientAuth.caKey: %s, but with webhook.tls.source generate the CA is under ca.crt; remove webhook.tls.clientAuth.caKey" $tls.clientAuth.caKey) }}
    {{- end }}
  {{- end }}
  {{- if and (eq $tls.source "generate") (ge (int $tls.certgen.renewBeforeDays) (int $tls.validityDays)) }}
    {{- fail (printf "webhook.tls.certgen.renewBeforeDays: %v is not below webhook.tls.validityDays: %v; every upgrade would make new certificates" $tls.certgen.renewBeforeDays $tls.validityDays) }}
  {{- end }}
{{- end }}
{{- /* the spool must fit its volume: an emptyDir over its sizeLimit gets
the pod evicted, a full claim fails the writes */}}
{{- $spool := include "kube-audit-exporter.bytes" (list $v.spool.maxBytes false) | float64 }}
{{- if eq $state "emptyDir" }}
  {{- if gt $spool (include "kube-audit-exporter.bytes" (list $v.state.sizeLimit true) | float64) }}
    {{- fail (printf "spool.maxBytes: %v exceeds state.sizeLimit: %v; the kubelet evicts the pod when its emptyDir outgrows the limit. Lower spool.maxBytes or raise state.sizeLimit" $v.spool.maxBytes $v.state.sizeLimit) }}
  {{- end }}
{{- else if and (eq $state "persistentVolumeClaim") (not $v.state.persistentVolumeClaim.existingClaim) }}
  {{- if gt $spool (include "kube-audit-exporter.bytes" (list $v.state.persistentVolumeClaim.size true) | float64) }}
    {{- fail (printf "spool.maxBytes: %v exceeds state.persistentVolumeClaim.size: %v; the spool would fill the claim. Lower spool.maxBytes or raise the size" $v.spool.maxBytes $v.state.persistentVolumeClaim.size) }}
  {{- end }}
{{- end }}
{{- $l := $v.loki }}
{{- $keys := list $l.passwordKey $l.bearerTokenKey $l.caKey $l.certKey $l.keyKey | compact }}
{{- if and $keys (not $l.existingSecret) }}
  {{- fail "loki.existingSecret: required with loki.passwordKey, bearerTokenKey, caKey, certKey or keyKey" }}
{{- end }}
{{- if and $l.existingSecret (not $keys) }}
  {{- fail "loki.existingSecret: set, but no key of it is used; set loki.passwordKey, bearerTokenKey, caKey or certKey/keyKey" }}
{{- end }}
{{- if and $keys (not $l.url) }}
  {{- fail "loki.url: required with Loki credentials (loki.existingSecret)" }}
{{- end }}
{{- if ne (empty $l.basicAuthUser) (empty $l.passwordKey) }}
  {{- fail "loki.basicAuthUser and loki.passwordKey: basic auth needs both" }}
{{- end }}
{{- if and $l.bearerTokenKey $l.basicAuthUser }}
  {{- fail "loki.bearerTokenKey: cannot be combined with basic auth (loki.basicAuthUser)" }}
{{- end }}
{{- if ne (empty $l.certKey) (empty $l.keyKey) }}
  {{- fail "loki.certKey and loki.keyKey: a client certificate needs both" }}
{{- end }}
{{- /* keys of `config` the chart owns */}}
{{- $owned := dict
  "web" (list "listen_address")
  "webhook" (list "listen_address" "path" "tls_cert_file" "tls_key_file" "client_ca_file" "insecure")
  "logfile" (list "path" "checkpoint_file" "start_at")
  "loki" (list "url" "tenant" "basic_auth_user" "basic_auth_password_file" "bearer_token_file" "ca_file" "cert_file" "key_file" "labels" "writer")
  "spool" (list "dir" "max_bytes" "fsync")
  "rules" (list "file" "include_defaults")
  "detect" (list "trusted_networks" "pod_cidrs" "node_cidrs" "critical_workloads" "disabled_rules" "alert_min_severity" "allowed_users" "allowed_images" "allowed_namespaces" "allowed_nodes")
  "alertmanager" (list "url" "link_template")
  "eks" (list "log_group" "stream_prefix" "region" "endpoint_url" "checkpoint_file" "start_at" "firehose_listen_address" "firehose_path" "firehose_access_key_file" "firehose_tls_cert_file" "firehose_tls_key_file" "firehose_insecure")
  "gke" (list "subscription" "push_listen_address" "push_path" "push_audience" "push_service_account" "push_tls_cert_file" "push_tls_key_file" "push_insecure_http" "push_allow_unauthenticated")
  "aks" (list "storage_account_url" "categories" "prefix" "checkpoint_file" "start_at" "eventhub_namespace" "eventhub_name" "eventhub_consumer_group" "eventhub_checkpoint_account_url" "eventhub_checkpoint_container" "eventhub_start_at")
  "state" (list "url")
}}
{{- range $section, $body := $v.config }}
  {{- if eq $section "cluster" }}
    {{- fail "config.cluster: set it with the value cluster" }}
  {{- end }}
  {{- if kindIs "map" $body }}
    {{- range $key, $_ := $body }}
      {{- if has $key (get $owned $section | default list) }}
        {{- fail (printf "config.%s.%s: the chart sets this key from its own values (see values.yaml); set it there" $section $key) }}
      {{- end }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
