{{/* The pod template shared by the StatefulSet (webhook), the DaemonSet
(logfile) and the Deployment (eks, gke, aks). */}}
{{- define "kube-audit-exporter.podTemplate" -}}
{{- $v := .Values }}
{{- $paths := include "kube-audit-exporter.paths" . | fromYaml }}
{{- $webhook := include "kube-audit-exporter.webhook" . }}
{{- $logfile := eq $v.mode "logfile" }}
{{- $receiver := include "kube-audit-exporter.receiver" . }}
{{- $state := include "kube-audit-exporter.stateType" . }}
{{- $podSC := deepCopy $v.podSecurityContext }}
{{- $sc := deepCopy $v.securityContext }}
{{- if $logfile }}
  {{- /* the documented exception: reading the API server's 0600 root log */}}
  {{- $_ := set $podSC "runAsUser" (int $v.logfile.runAsUser) }}
  {{- $_ := set $podSC "runAsNonRoot" (ne (int $v.logfile.runAsUser) 0) }}
  {{- $_ := set $sc "runAsNonRoot" (ne (int $v.logfile.runAsUser) 0) }}
  {{- with $v.logfile.supplementalGroups }}{{ $_ := set $podSC "supplementalGroups" . }}{{ end }}
{{- end }}
metadata:
  labels:
    {{- include "kube-audit-exporter.labels" . | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if and (eq $v.mode "aks") $v.aks.clientId }}
    # Azure Workload Identity injects the token and AZURE_* variables
    azure.workload.identity/use: "true"
    {{- end }}
  annotations:
    checksum/config: {{ include "kube-audit-exporter.config" . | sha256sum }}
    {{- if and $webhook (eq $v.webhook.tls.source "generate") }}
    checksum/tls: {{ include "kube-audit-exporter.certgenSpec" . | sha256sum }}
    {{- end }}
    {{- with $v.rules.custom }}
    checksum/rules: {{ toJson . | sha256sum }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "kube-audit-exporter.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $podSC | nindent 4 }}
  containers:
    - name: exporter
      image: {{ include "kube-audit-exporter.image" . }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - run
        - --config.file={{ $paths.config }}
      env:
        {{- include "kube-audit-exporter.env" . | nindent 8 }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http-metrics
          containerPort: {{ $v.metrics.port }}
          protocol: TCP
        {{- if $webhook }}
        - name: webhook
          containerPort: {{ $v.webhook.port }}
          protocol: TCP
        {{- else if $receiver }}
        - name: {{ $receiver }}
          containerPort: {{ $v.receiver.port }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: /healthz
          port: http-metrics
        {{- toYaml $v.probes.startup | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http-metrics
        {{- toYaml $v.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http-metrics
        {{- toYaml $v.probes.readiness | nindent 8 }}
      {{- with $v.preStopSleepSeconds }}
      lifecycle:
        preStop:
          # endpoints drain (kube-proxy, the API server's connections) before
          # SIGTERM; the image has coreutils' sleep
          exec:
            command: [sleep, {{ . | quote }}]
      {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $sc | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ dir $paths.config }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: state
          mountPath: {{ $paths.state }}
        {{- if or $webhook (and $receiver $v.receiver.tls.existingSecret) }}
        - name: tls
          mountPath: {{ $paths.tls }}
          readOnly: true
        {{- end }}
        {{- if eq $receiver "firehose" }}
        - name: firehose-access-key
          mountPath: {{ $paths.firehose }}
          readOnly: true
        {{- end }}
        {{- if $logfile }}
        # the API server's audit log directory, read-only
        - name: audit-log
          mountPath: {{ trimSuffix "/" $v.logfile.hostPath }}
          readOnly: true
        {{- end }}
        {{- if $v.rules.custom }}
        - name: rules
          mountPath: {{ $paths.rules }}
          readOnly: true
        {{- end }}
        {{- if $v.loki.existingSecret }}
        - name: loki-credentials
          mountPath: {{ $paths.loki }}
          readOnly: true
        {{- end }}
        {{- with $v.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "kube-audit-exporter.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if not (include "kube-audit-exporter.claimTemplate" .) }}
    - name: state
      {{- if eq $state "emptyDir" }}
      emptyDir:
        sizeLimit: {{ $v.state.sizeLimit }}
      {{- else if eq $state "hostPath" }}
      hostPath:
        path: {{ include "kube-audit-exporter.stateHostPath" . }}
        type: DirectoryOrCreate
      {{- else }}
      persistentVolumeClaim:
        claimName: {{ default (include "kube-audit-exporter.childName" (list . "state")) $v.state.persistentVolumeClaim.existingClaim }}
      {{- end }}
    {{- end }}
    {{- if $webhook }}
    - name: tls
      projected:
        defaultMode: 0440
        sources:
          - secret:
              name: {{ include "kube-audit-exporter.tlsSecretName" . }}
              items:
                - key: tls.crt
                  path: tls.crt
                - key: tls.key
                  path: tls.key
          {{- if $v.webhook.tls.clientAuth.enabled }}
          - secret:
              name: {{ include "kube-audit-exporter.clientCASecretName" . }}
              items:
                - key: {{ $v.webhook.tls.clientAuth.caKey }}
                  path: client-ca.crt
          {{- end }}
    {{- else if and $receiver $v.receiver.tls.existingSecret }}
    - name: tls
      secret:
        secretName: {{ $v.receiver.tls.existingSecret }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- end }}
    {{- if eq $receiver "firehose" }}
    - name: firehose-access-key
      secret:
        secretName: {{ $v.eks.firehose.accessKeySecret.name }}
        defaultMode: 0440
        items:
          - key: {{ $v.eks.firehose.accessKeySecret.key }}
            path: {{ $v.eks.firehose.accessKeySecret.key }}
    {{- end }}
    {{- if $logfile }}
    - name: audit-log
      hostPath:
        path: {{ trimSuffix "/" $v.logfile.hostPath }}
        type: Directory
    {{- end }}
    {{- if $v.rules.custom }}
    - name: rules
      configMap:
        name: {{ include "kube-audit-exporter.childName" (list . "rules") }}
    {{- end }}
    {{- if $v.loki.existingSecret }}
    - name: loki-credentials
      secret:
        secretName: {{ $v.loki.existingSecret }}
        defaultMode: 0440
        items:
          {{- range list $v.loki.passwordKey $v.loki.bearerTokenKey $v.loki.caKey $v.loki.certKey $v.loki.keyKey | compact | uniq }}
          - key: {{ . }}
            path: {{ . }}
          {{- end }}
    {{- end }}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if not $logfile }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not (hasKey $c "labelSelector") }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "kube-audit-exporter.selectorLabels" $ | fromYaml)) }}
    {{- end }}
    - {{- toYaml $c | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- else }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* control-plane nodes only: the label exists, whatever its value */}}
  {{- $cp := dict "matchExpressions" (list (dict "key" $v.logfile.controlPlaneLabel "operator" "Exists")) }}
  {{- $affinity := deepCopy ($v.affinity | default dict) }}
  {{- $na := get $affinity "nodeAffinity" | default dict }}
  {{- $req := get $na "requiredDuringSchedulingIgnoredDuringExecution" | default dict }}
  {{- $terms := get $req "nodeSelectorTerms" | default list }}
  {{- if $terms }}
    {{- $merged := list }}
    {{- range $terms }}
      {{- $t := deepCopy . }}
      {{- $_ := set $t "matchExpressions" (append (get $t "matchExpressions" | default list) (index $cp.matchExpressions 0)) }}
      {{- $merged = append $merged $t }}
    {{- end }}
    {{- $terms = $merged }}
  {{- else }}
    {{- $terms = list $cp }}
  {{- end }}
  {{- $_ := set $req "nodeSelectorTerms" $terms }}
  {{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req }}
  {{- $_ := set $affinity "nodeAffinity" $na }}
  affinity:
    {{- toYaml $affinity | nindent 4 }}
  tolerations:
    {{- toYaml (concat $v.logfile.tolerations $v.tolerations) | nindent 4 }}
  {{- end }}
{{- end }}
