{{/* Names, labels and the pieces every component shares. */}}

{{- define "tally.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tally.component" -}}
{{- printf "%s-%s" (include "tally.fullname" .root) .component -}}
{{- end -}}

{{- define "tally.selectorLabels" -}}
app.kubernetes.io/name: tally
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tally.labels" -}}
{{ include "tally.selectorLabels" . }}
app.kubernetes.io/part-of: tally
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
tally.dev/party: {{ .root.Values.party.id }}
{{- end -}}

{{- define "tally.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tally.operatorImage" -}}
{{- printf "%s:%s" .Values.operatorImage.repository (default .Chart.AppVersion .Values.operatorImage.tag) -}}
{{- end -}}

{{/* Secrets and endpoints of the stores (in-cluster or external). */}}
{{- define "tally.postgresSecret" -}}
{{- default (printf "%s-postgresql" (include "tally.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}

{{- define "tally.minioSecret" -}}
{{- default (printf "%s-minio" (include "tally.fullname" .)) .Values.minio.existingSecret -}}
{{- end -}}

{{- define "tally.s3Secret" -}}
{{- if .Values.minio.enabled -}}{{ include "tally.minioSecret" . }}{{- else -}}{{ .Values.externalS3.secretName }}{{- end -}}
{{- end -}}

{{- define "tally.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s-minio:9000" (include "tally.fullname" .) -}}
{{- else -}}
{{- .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{/*
Environment of a service that keeps metadata in SQL and blobs in S3.
Arguments: root, prefix (e.g. TALLY_SECRET_STORE_), database (name in the in-cluster
PostgreSQL), urlKey (key in the external database Secret), bucket.
*/}}
{{- define "tally.storageEnv" -}}
{{- $root := .root -}}
- name: {{ .prefix }}ENV
  value: {{ $root.Values.environment | quote }}
- name: {{ .prefix }}PARTY
  value: {{ $root.Values.party.index | quote }}
{{- if $root.Values.postgresql.enabled }}
- name: TALLY_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tally.postgresSecret" $root }}
      key: password
- name: {{ .prefix }}DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(TALLY_DB_PASSWORD)@%s-postgresql:5432/%s" $root.Values.postgresql.username (include "tally.fullname" $root) .database | quote }}
{{- else }}
- name: {{ .prefix }}DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.externalDatabase.secretName }}
      key: {{ .urlKey }}
{{- end }}
{{- include "tally.inClusterStores" (dict "root" $root "prefix" .prefix) }}
- name: {{ .prefix }}S3_ENDPOINT
  value: {{ include "tally.s3Endpoint" $root | quote }}
- name: {{ .prefix }}S3_SECURE
  value: {{ ternary "false" (toString $root.Values.externalS3.secure) $root.Values.minio.enabled | quote }}
- name: {{ .prefix }}S3_BUCKET
  value: {{ .bucket | quote }}
- name: {{ .prefix }}S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tally.s3Secret" $root }}
      key: accessKey
- name: {{ .prefix }}S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tally.s3Secret" $root }}
      key: secretKey
{{- end -}}

{{/* The stores this release runs itself (plaintext allowed to them only). */}}
{{- define "tally.inClusterStores" -}}
{{- $stores := list -}}
{{- if .root.Values.postgresql.enabled }}{{ $stores = append $stores "database" }}{{ end -}}
{{- if .root.Values.minio.enabled }}{{ $stores = append $stores "s3" }}{{ end }}
- name: {{ .prefix }}IN_CLUSTER_STORES
  value: {{ toJson $stores | quote }}
{{- end -}}

{{/* An optional token from the auth Secret. Arguments: root, name, key. */}}
{{- define "tally.authEnv" -}}
{{- if .root.Values.auth.existingSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.auth.existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{/* Required node affinity to the configured zone, for services when pinned. */}}
{{/* Registry credentials of a pod (values: imagePullSecrets, [{name: ...}]). */}}
{{- define "tally.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tally.servicePlacement" -}}
{{- if and .Values.scheduling.pinServicesToZone .Values.scheduling.zone }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: topology.kubernetes.io/zone
              operator: In
              values: [{{ .Values.scheduling.zone | quote }}]
{{- end }}
{{- with .Values.scheduling.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.scheduling.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Liveness and readiness over HTTP on the named port "http". */}}
{{/* The scheme of the REST listeners: https with rest.tls.secretName. */}}
{{- define "tally.scheme" -}}
{{- ternary "https" "http" (not (empty .Values.rest.tls.secretName)) -}}
{{- end -}}

{{/* A service's REST URL inside the release. Arguments: root, component, port. */}}
{{- define "tally.serviceUrl" -}}
{{- printf "%s://%s-%s:%v" (include "tally.scheme" .root) (include "tally.fullname" .root) .component .port -}}
{{- end -}}

{{/* HTTPS env of a REST listener. Arguments: root, prefix. */}}
{{- define "tally.restEnv" -}}
{{- if .root.Values.rest.tls.secretName }}
- name: {{ .prefix }}HTTPS_CERT
  value: /etc/tally/rest/tls.crt
- name: {{ .prefix }}HTTPS_KEY
  value: /etc/tally/rest/tls.key
{{- end }}
{{- end -}}

{{/* The REST certificate's mount and volume. */}}
{{- define "tally.restMount" -}}
{{- if .Values.rest.tls.secretName }}
- name: rest-tls
  mountPath: /etc/tally/rest
  readOnly: true
{{- end }}
{{- end -}}
{{- define "tally.restVolume" -}}
{{- if .Values.rest.tls.secretName }}
- name: rest-tls
  secret:
    secretName: {{ .Values.rest.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "tally.probes" -}}
livenessProbe:
  httpGet:
    path: {{ .Values.probes.livenessPath }}
    port: http
    scheme: {{ include "tally.scheme" . | upper }}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: {{ .Values.probes.readinessPath }}
    port: http
    scheme: {{ include "tally.scheme" . | upper }}
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* A PodDisruptionBudget for a component. Arguments: root, component. */}}
{{- define "tally.pdb" -}}
{{- if and .root.Values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tally.component" . }}
  labels:
    {{- include "tally.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "tally.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The peers' PartyLink/TupleLink endpoints by party index, as a JSON list. */}}
{{- define "tally.peerEndpoints" -}}
{{- $root := .root -}}
{{- $key := .key -}}
{{- $endpoints := list -}}
{{- range $i := until (len $root.Values.consortium.parties) -}}
{{- range $party := $root.Values.consortium.parties -}}
{{- if eq (int $party.index) $i -}}
{{- $endpoints = append $endpoints (index $party.endpoints $key | default "") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $endpoints -}}
{{- end -}}
