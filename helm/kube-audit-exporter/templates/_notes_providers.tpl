{{/* NOTES for the provider modes (eks, gke, aks): what to switch on at the
provider so that the audit log reaches this release. */}}
{{- define "kube-audit-exporter.providerNotes" -}}
{{- $v := .Values }}
{{- $ns := .Release.Namespace }}
{{- $intake := include "kube-audit-exporter.intake" . }}
{{- $sa := include "kube-audit-exporter.serviceAccountName" . }}
{{- $cluster := $v.cluster | default "CLUSTER" }}
{{- $receiver := include "kube-audit-exporter.receiver" . }}
{{- $endpoint := "" }}
{{- if $receiver }}
{{- $host := $v.receiver.ingress.host | default "<your public host>" }}
{{- $endpoint = printf "https://%s%s" $host (include "kube-audit-exporter.receiverPath" .) }}
{{- end }}

Intake: {{ $v.mode }} {{ $intake }}, {{ include "kube-audit-exporter.replicas" . }} replica(s).
{{- if $receiver }}
The provider delivers to {{ $endpoint }}: the Service
{{ include "kube-audit-exporter.fullname" . }} (port {{ $v.receiver.service.port }}, path {{ include "kube-audit-exporter.receiverPath" . }})
{{- if $v.receiver.ingress.enabled }} behind the Ingress for {{ $v.receiver.ingress.host }}
{{- else }}; put an Ingress (receiver.ingress) or a load balancer (receiver.service.type
LoadBalancer) with a publicly trusted HTTPS certificate in front of it
{{- end }}. Health checks of the load balancer belong on /readyz of port {{ $v.metrics.port }}.
{{- end }}
{{- if eq $v.mode "eks" }}

What to switch on at AWS:

1. The "audit" control-plane log type (off by default). EKS then writes the
   log to CloudWatch Logs, group /aws/eks/{{ $cluster }}/cluster, streams kube-apiserver-audit-*:

  aws eks update-cluster-config --name {{ $cluster }} \
    --logging '{"clusterLogging":[{"types":["audit"],"enabled":true}]}'
{{- if eq $intake "firehose" }}

2. An Amazon Data Firehose stream with an HTTP endpoint destination:
   endpoint URL {{ $endpoint }},
   access key: the value in Secret {{ $v.eks.firehose.accessKeySecret.name }} (key {{ $v.eks.firehose.accessKeySecret.key }}),
   content encoding GZIP, an S3 bucket for failed deliveries.

3. A subscription filter from the log group to the stream (the role lets
   CloudWatch Logs call firehose:PutRecord and firehose:PutRecordBatch):

  aws logs put-subscription-filter --log-group-name /aws/eks/{{ $cluster }}/cluster \
    --filter-name kube-audit-exporter --filter-pattern '{ $.kind = "Event" }' \
    --destination-arn arn:aws:firehose:REGION:ACCOUNT:deliverystream/STREAM \
    --role-arn arn:aws:iam::ACCOUNT:role/CWL_TO_FIREHOSE_ROLE

   No AWS credentials are needed in the cluster.
   Check: kube_audit_eks_firehose_requests_total{code="200"} grows; code="401"
   means the stream's access key differs from the Secret's.
{{- else }}

2. Read access to the group for the pods' identity: a role with
   logs:DescribeLogStreams and logs:GetLogEvents on
   arn:aws:logs:REGION:ACCOUNT:log-group:{{ $v.eks.cloudwatch.logGroup }} and ...:*,
{{- if $v.eks.roleArn }}
   through IRSA: the ServiceAccount {{ $sa }} carries
   eks.amazonaws.com/role-arn: {{ $v.eks.roleArn }}; the role's trust policy
   must allow system:serviceaccount:{{ $ns }}:{{ $sa }} from the cluster's OIDC provider.
{{- else }}
   through EKS Pod Identity (no annotation; the eks-pod-identity-agent add-on):

  aws eks create-pod-identity-association --cluster-name {{ $cluster }} \
    --namespace {{ $ns }} --service-account {{ $sa }} --role-arn arn:aws:iam::ACCOUNT:role/ROLE
{{- if not $v.eks.region }}

   eks.region is empty: set it, unless the pods' environment names one
   (AWS_REGION, e.g. through extraEnv).
{{- end }}
{{- end }}

   One pod polls {{ $v.eks.cloudwatch.logGroup }};
   its checkpoint is in
   {{- if eq (include "kube-audit-exporter.stateType" .) "persistentVolumeClaim" }} the claim {{ $v.state.persistentVolumeClaim.existingClaim | default (include "kube-audit-exporter.childName" (list . "state")) }}, so a new pod resumes where the last stopped.
   {{- else }} an emptyDir: a new pod starts again from eks.cloudwatch.startAt ({{ $v.eks.cloudwatch.startAt }}).
   {{- end }}
   Check: kube_audit_events_total{source="eks"} grows; failures show in
   kube_audit_eks_cloudwatch_errors_total and the log.
{{- end }}
{{- else if eq $v.mode "gke" }}

What to switch on at Google Cloud:

1. Data Access audit logs: writes (Admin Activity) are always logged, reads
   (get, list, watch) only with DATA_READ and DATA_WRITE on for
   container.googleapis.com (IAM & Admin > Audit Logs, or the project's IAM
   policy auditConfigs).

2. A Pub/Sub topic and a log sink that publishes the cluster's entries to it:

  gcloud pubsub topics create k8s-audit
  gcloud logging sinks create k8s-audit pubsub.googleapis.com/projects/PROJECT/topics/k8s-audit \
    --log-filter='resource.type="k8s_cluster" AND protoPayload.serviceName="k8s.io" AND resource.labels.cluster_name="{{ $cluster }}"'
  gcloud pubsub topics add-iam-policy-binding k8s-audit --role=roles/pubsub.publisher \
    --member="$(gcloud logging sinks describe k8s-audit --format='value(writerIdentity)')"
{{- if eq $intake "pull" }}

3. A pull subscription ({{ $v.gke.pull.subscription }}) and the right to read it:

  gcloud pubsub subscriptions create {{ base $v.gke.pull.subscription }} --topic=k8s-audit --ack-deadline=60
{{- if $v.gke.gcpServiceAccount }}
  gcloud pubsub subscriptions add-iam-policy-binding {{ base $v.gke.pull.subscription }} --role=roles/pubsub.subscriber \
    --member=serviceAccount:{{ $v.gke.gcpServiceAccount }}
  gcloud iam service-accounts add-iam-policy-binding {{ $v.gke.gcpServiceAccount }} \
    --role=roles/iam.workloadIdentityUser --member="serviceAccount:PROJECT.svc.id.goog[{{ $ns }}/{{ $sa }}]"
{{- else }}
  gcloud pubsub subscriptions add-iam-policy-binding {{ base $v.gke.pull.subscription }} --role=roles/pubsub.subscriber \
    --member="principal://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/PROJECT.svc.id.goog/subject/ns/{{ $ns }}/sa/{{ $sa }}"
{{- end }}

   The cluster needs Workload Identity (the node pools' GKE metadata server).
   Check: kube_audit_gke_pull_messages_total and kube_audit_events_total{source="gke"} grow.
{{- else }}

3. A push subscription that delivers to this release with an OIDC token:

  gcloud pubsub subscriptions create k8s-audit-push --topic=k8s-audit \
    --push-endpoint={{ $endpoint }} \
    --push-auth-service-account={{ $v.gke.push.serviceAccount | default "PUSH_SA@PROJECT.iam.gserviceaccount.com" }} \
    --push-auth-token-audience={{ include "kube-audit-exporter.pushAudience" . }}

   The token must carry the audience {{ include "kube-audit-exporter.pushAudience" . }}
   {{- if $v.gke.push.serviceAccount }} and be issued for {{ $v.gke.push.serviceAccount }}{{ end }}.
   No Google credentials are needed in the cluster.
   Check: kube_audit_gke_push_requests_total{code="200"} grows; 403 means the
   token's audience or service account differs.
{{- end }}
{{- else if eq $v.mode "aks" }}

What to switch on at Azure:

1. A diagnostic setting on the cluster with the category kube-audit (every
   request) or kube-audit-admin (without get and list: reads stay invisible),
   sent to {{ if eq $intake "eventhub" }}the Event Hub {{ $v.aks.eventhub.name }}{{ else }}the storage account {{ $v.aks.archive.storageAccountUrl }}{{ end }}:

  az monitor diagnostic-settings create --name kube-audit-exporter \
    --resource "$(az aks show -g RESOURCE_GROUP -n {{ $cluster }} --query id -o tsv)" \
    --logs '[{"category":"kube-audit","enabled":true}]' \
{{- if eq $intake "eventhub" }}
    --event-hub {{ $v.aks.eventhub.name }} --event-hub-rule "EVENTHUB_NAMESPACE_ID/authorizationRules/RootManageSharedAccessKey"
{{- else }}
    --storage-account "STORAGE_ACCOUNT_ID"
{{- end }}

2. Roles for the pods' identity{{ with $v.aks.clientId }} (client id {{ . }}){{ end }}:
{{- if eq $intake "eventhub" }}
   Azure Event Hubs Data Receiver on the hub, and
   Storage Blob Data Contributor on {{ $v.aks.eventhub.checkpointAccountUrl }}
   (checkpoints and partition ownership, shared by the replicas; consumer
   group {{ $v.aks.eventhub.consumerGroup }}).
{{- else }}
   Storage Blob Data Reader on {{ $v.aks.archive.storageAccountUrl }}.
{{- end }}

3. Azure Workload Identity (the cluster's OIDC issuer and workload identity
   on): a federated credential for the ServiceAccount {{ $sa }}:

  az identity federated-credential create --name kube-audit-exporter \
    --identity-name IDENTITY --resource-group RESOURCE_GROUP \
    --issuer "$(az aks show -g RESOURCE_GROUP -n {{ $cluster }} --query oidcIssuerProfile.issuerUrl -o tsv)" \
    --subject system:serviceaccount:{{ $ns }}:{{ $sa }} --audience api://AzureADTokenExchange
{{- if not $v.aks.clientId }}

   aks.clientId is empty: the ServiceAccount has no
   azure.workload.identity/client-id and the pods no Workload Identity label.
{{- end }}
{{- if eq $intake "archive" }}

   One pod polls the archive; its checkpoint is in
   {{- if eq (include "kube-audit-exporter.stateType" .) "persistentVolumeClaim" }} the claim {{ $v.state.persistentVolumeClaim.existingClaim | default (include "kube-audit-exporter.childName" (list . "state")) }}.
   {{- else }} an emptyDir: a new pod starts again from aks.archive.startAt ({{ $v.aks.archive.startAt }}).
   {{- end }}
{{- end }}
   Check: kube_audit_events_total{source="aks"} grows; failures show in
   kube_audit_aks_{{ $intake }}_errors_total.
{{- end }}
{{- end }}
