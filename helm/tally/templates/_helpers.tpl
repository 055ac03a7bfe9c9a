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

{{/* An image reference: repository@digest when a digest is given, else repository:tag
(the tag defaulting to the chart's appVersion). Arguments: image (values), appVersion. */}}
{{- define "tally.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tally.image" -}}
{{- include "tally.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "tally.operatorImage" -}}
{{- include "tally.imageRef" (dict "image" .Values.operatorImage "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* Secrets and endpoints of the stores (in-cluster or external). */}}
{{- define "tally.postgresSecret" -}}
{{- default (printf "%s-postgresql" (include "tally.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}

{{- define "tally.minioSecret" -}}
{{- default (printf "%s-minio" (include "tally.fullname" .)) .Values.minio.existingSecret -}}
{{- end -}}

{{/* The S3 credentials Secret of one component (key: secretStore, tupleService or
execution): its own s3Users entry, else the user the chart makes for it in the in-cluster
MinIO, else the shared externalS3 Secret. */}}
{{- define "tally.componentS3Secret" -}}
{{- $own := index .root.Values.s3Users .key -}}
{{- $names := dict "secretStore" "secret-store" "tupleService" "tuple-service" "execution" "execution" -}}
{{- if $own -}}{{ $own }}
{{- else if .root.Values.minio.enabled -}}{{ printf "%s-s3-%s" (include "tally.fullname" .root) (index $names .key) }}
{{- else -}}{{ .root.Values.externalS3.secretName }}
{{- end -}}
{{- end -}}

{{/* The Secret whose keys become the workers' environment: operator.workerEnvSecret, else
the one the chart makes with the execution service's MinIO user. */}}
{{- define "tally.workerEnvSecret" -}}
{{- if .Values.operator.workerEnvSecret -}}{{ .Values.operator.workerEnvSecret }}
{{- else if and .Values.minio.enabled (not .Values.s3Users.execution) -}}{{ printf "%s-worker-s3" (include "tally.fullname" .) }}
{{- end -}}
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
  value: {{ printf "postgresql+psycopg://%s:$(TALLY_DB_PASSWORD)@%s-postgresql:5432/%s%s" $root.Values.postgresql.username (include "tally.fullname" $root) .database (include "tally.postgresTlsQuery" $root) | quote }}
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
  value: {{ include "tally.s3Secure" $root | quote }}
- name: {{ .prefix }}S3_BUCKET
  value: {{ .bucket | quote }}
- name: {{ .prefix }}S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tally.componentS3Secret" (dict "root" $root "key" .s3Key) }}
      key: accessKey
- name: {{ .prefix }}S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tally.componentS3Secret" (dict "root" $root "key" .s3Key) }}
      key: secretKey
{{- include "tally.storesTrustEnv" $root }}
{{- end -}}

{{/* The stores this release runs itself in plaintext (production allows plaintext to
them only); none with stores.tls, where every store connection is verified TLS. */}}
{{- define "tally.inClusterStores" -}}
{{- $stores := list -}}
{{- if not (include "tally.storesTls" .root) -}}
{{- if .root.Values.postgresql.enabled }}{{ $stores = append $stores "database" }}{{ end -}}
{{- if .root.Values.minio.enabled }}{{ $stores = append $stores "s3" }}{{ end -}}
{{- end }}
- name: {{ .prefix }}IN_CLUSTER_STORES
  value: {{ toJson $stores | quote }}
{{- end -}}

{{/* TLS to the in-cluster stores (stores.tls.secretName): "true" when it applies. */}}
{{- define "tally.storesTls" -}}
{{- if and .Values.stores.tls.secretName (or .Values.postgresql.enabled .Values.minio.enabled) -}}
true
{{- end -}}
{{- end -}}

{{/* Where the stores' CA is mounted in the services, and the bundle SSL_CERT_FILE names. */}}
{{- define "tally.storesCa" -}}/etc/tally/stores/ca.crt{{- end -}}
{{- define "tally.trustBundle" -}}/etc/tally/trust/ca-bundle.crt{{- end -}}

{{/* The DSN options of the in-cluster PostgreSQL with stores.tls: verify its certificate. */}}
{{- define "tally.postgresTlsQuery" -}}
{{- if include "tally.storesTls" . -}}
{{- printf "?sslmode=verify-full&sslrootcert=%s" (include "tally.storesCa" .) -}}
{{- end -}}
{{- end -}}

{{/* S3_SECURE: HTTPS to the in-cluster MinIO with stores.tls, else externalS3.secure. */}}
{{- define "tally.s3Secure" -}}
{{- if .Values.minio.enabled -}}
{{- ternary "true" "false" (not (empty (include "tally.storesTls" .))) -}}
{{- else -}}
{{- toString .Values.externalS3.secure -}}
{{- end -}}
{{- end -}}

{{/*
With stores.tls, a service that talks to the stores trusts their CA: PostgreSQL through
sslrootcert, S3 (the minio client) and every other default TLS context through
SSL_CERT_FILE, a bundle of the public roots (certifi's) and the stores' ca.crt that an
init container writes, so public endpoints (an OIDC issuer) still verify.
*/}}
{{- define "tally.storesTrustEnv" -}}
{{- if include "tally.storesTls" . }}
- name: SSL_CERT_FILE
  value: {{ include "tally.trustBundle" . }}
{{- end }}
{{- end -}}
{{- define "tally.storesTrustMounts" -}}
{{- if include "tally.storesTls" . }}
- name: stores-ca
  mountPath: /etc/tally/stores
  readOnly: true
- name: trust
  mountPath: /etc/tally/trust
  readOnly: true
{{- end }}
{{- end -}}
{{- define "tally.storesTrustVolumes" -}}
{{- if include "tally.storesTls" . }}
- name: stores-ca
  secret:
    secretName: {{ .Values.stores.tls.secretName }}
    items: [{key: ca.crt, path: ca.crt}]
    defaultMode: 0444
- name: trust
  emptyDir: {sizeLimit: 4Mi}
{{- end }}
{{- end -}}
{{- define "tally.storesTrustInit" -}}
{{- if include "tally.storesTls" . }}
initContainers:
  - name: trust-bundle
    image: {{ include "tally.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command:
      - sh
      - -c
      - cat "$(python -m certifi)" {{ include "tally.storesCa" . }} > {{ include "tally.trustBundle" . }}
    resources:
      requests: {cpu: 10m, memory: 32Mi}
      limits: {memory: 64Mi}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: stores-ca
        mountPath: /etc/tally/stores
        readOnly: true
      - name: trust
        mountPath: /etc/tally/trust
{{- end }}
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

{{/*
Where a service's peers come from: with the operator, the consortium document it
renders from the Consortium resource (ConfigMap <consortium.name>-parties), so that an
edit of the Consortium reaches the services; without it, the chart's consortium.parties.
*/}}
{{- define "tally.peersEnv" -}}
{{- if .root.Values.operator.enabled -}}
- name: {{ .prefix }}CONSORTIUM_FILE
  value: /etc/tally/consortium/consortium.json
{{- else -}}
- name: {{ .prefix }}PEERS
  value: {{ include "tally.peerEndpoints" (dict "root" .root "key" .key) | quote }}
{{- end -}}
{{- end -}}

{{- define "tally.consortiumMount" -}}
{{- if .Values.operator.enabled -}}
- name: consortium
  mountPath: /etc/tally/consortium
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "tally.consortiumVolume" -}}
{{- if .Values.operator.enabled -}}
- name: consortium
  configMap:
    name: {{ printf "%s-parties" .Values.consortium.name }}
{{- end -}}
{{- end -}}
