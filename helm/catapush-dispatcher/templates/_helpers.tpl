{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a name.
*/}}
{{- define "catapush-dispatcher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's resources. Kept at 50 characters so that suffixes such
as "-templates" still fit in 63.
*/}}
{{- define "catapush-dispatcher.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "catapush-dispatcher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource.
*/}}
{{- define "catapush-dispatcher.labels" -}}
helm.sh/chart: {{ include "catapush-dispatcher.chart" . }}
app.kubernetes.io/name: {{ include "catapush-dispatcher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: catapush-dispatcher
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "catapush-dispatcher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "catapush-dispatcher.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
All labels of one component's resources. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "catapush-dispatcher.componentLabels" -}}
{{ include "catapush-dispatcher.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "catapush-dispatcher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "catapush-dispatcher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "catapush-dispatcher.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Names of the ConfigMaps and the Secret.
*/}}
{{- define "catapush-dispatcher.configMapName" -}}
{{- printf "%s-config" (include "catapush-dispatcher.fullname" .) }}
{{- end }}

{{- define "catapush-dispatcher.templatesConfigMapName" -}}
{{- printf "%s-templates" (include "catapush-dispatcher.fullname" .) }}
{{- end }}

{{- define "catapush-dispatcher.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-secret" (include "catapush-dispatcher.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Map of the non-secret DISPATCHER_* variables to their values key under .Values.config.
*/}}
{{- define "catapush-dispatcher.configKeys" -}}
DISPATCHER_REDIS_URL: redisUrl
DISPATCHER_NAMESPACE: namespace
DISPATCHER_QUEUE: queue
DISPATCHER_CATAPUSH_BASE_URL: catapushBaseUrl
DISPATCHER_CATAPUSH_MOBILE_APP_ID: mobileAppId
DISPATCHER_RATE_LIMIT: rateLimit
DISPATCHER_RATE_BURST: rateBurst
DISPATCHER_MAX_ATTEMPTS: maxAttempts
DISPATCHER_BACKOFF_MIN_MS: backoffMinMs
DISPATCHER_BACKOFF_MAX_MS: backoffMaxMs
DISPATCHER_HTTP_TIMEOUT_S: httpTimeoutS
DISPATCHER_CALLBACK_URL: callbackUrl
DISPATCHER_SHUTDOWN_GRACE_S: shutdownGraceS
DISPATCHER_LOG_FORMAT: logFormat
DISPATCHER_RECEIPT_TTL_DAYS: receiptTtlDays
DISPATCHER_STATUS_TTL_DAYS: statusTtlDays
DISPATCHER_BULK_SHARE: bulkShare
DISPATCHER_MAX_RECIPIENTS: maxRecipients
DISPATCHER_MAX_INTENT_RECIPIENTS: maxIntentRecipients
DISPATCHER_MAX_SCHEDULE_DAYS: maxScheduleDays
{{- end }}

{{/*
Map of the secret DISPATCHER_* variables to their values key under .Values.secrets.
*/}}
{{- define "catapush-dispatcher.secretKeys" -}}
DISPATCHER_CATAPUSH_CLIENT_ID: catapushClientId
DISPATCHER_CATAPUSH_CLIENT_SECRET: catapushClientSecret
DISPATCHER_CATAPUSH_ACCESS_TOKEN: catapushAccessToken
DISPATCHER_CALLBACK_SECRET: callbackSecret
DISPATCHER_REDIS_URL: redisUrl
DISPATCHER_API_TOKENS: apiTokens
{{- end }}

{{/*
Renders "VARIABLE: value" lines (values as strings) for the entries of a key map whose value is
set: null and "" are left out so that the application's defaults apply. Numbers are written in
plain decimal (1000000, never 1e+06). Call with (dict "keys" "<helper name>" "values" <map> "root" $).
*/}}
{{- define "catapush-dispatcher.envMap" -}}
{{- $keys := include .keys .root | fromYaml }}
{{- range $var := keys $keys | sortAlpha }}
{{- $v := get $.values (get $keys $var) }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) }}
{{- if kindIs "string" $v }}
{{ $var }}: {{ $v | quote }}
{{- else }}
{{ $var }}: {{ toJson $v | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the chart renders its own Secret: not with existingSecret, nor when no secret is set.
*/}}
{{- define "catapush-dispatcher.createSecret" -}}
{{- if and (not .Values.existingSecret) (include "catapush-dispatcher.envMap" (dict "keys" "catapush-dispatcher.secretKeys" "values" .Values.secrets "root" .) | trim) }}true{{- end }}
{{- end }}

{{/*
Whether the pods load a Secret with envFrom.
*/}}
{{- define "catapush-dispatcher.useSecret" -}}
{{- if or .Values.existingSecret (include "catapush-dispatcher.createSecret" .) }}true{{- end }}
{{- end }}

{{/*
Renders a map of annotations or labels with every value as a quoted string (Kubernetes refuses
numbers and booleans there).
*/}}
{{- define "catapush-dispatcher.stringMap" -}}
{{- $out := dict }}
{{- range $k, $v := . }}
{{- $_ := set $out $k (toString $v) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
Pod annotations of one component: checksums of the settings so that a change rolls the pods,
then the top-level podAnnotations, overridden by the component's own.
Call with (dict "root" $ "values" .Values.worker).
*/}}
{{- define "catapush-dispatcher.podAnnotations" -}}
{{- $root := .root }}
{{- $annotations := dict "checksum/config" (include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum) }}
{{- if include "catapush-dispatcher.createSecret" $root }}
{{- $_ := set $annotations "checksum/secret" (include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum) }}
{{- end }}
{{- if $root.Values.templates }}
{{- $_ := set $annotations "checksum/templates" (include (print $root.Template.BasePath "/templates-configmap.yaml") $root | sha256sum) }}
{{- end }}
{{- $user := merge (deepCopy (default (dict) .values.podAnnotations)) (deepCopy (default (dict) $root.Values.podAnnotations)) }}
{{- include "catapush-dispatcher.stringMap" (merge $annotations $user) }}
{{- end }}

{{/*
envFrom, env, volumeMounts of a dispatcher container (both components).
*/}}
{{- define "catapush-dispatcher.containerEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "catapush-dispatcher.configMapName" . }}
{{- if include "catapush-dispatcher.useSecret" . }}
  - secretRef:
      name: {{ include "catapush-dispatcher.secretName" . }}
{{- end }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- $tls := .Values.redis.tls }}
{{- $sentinel := .Values.redis.sentinel }}
{{- if or .Values.templates .Values.extraEnv $tls.enabled $sentinel.enabled }}
env:
{{- if .Values.templates }}
  - name: DISPATCHER_TEMPLATES_DIR
    value: {{ .Values.templatesMountPath | quote }}
{{- end }}
{{- if $tls.enabled }}
  - name: DISPATCHER_REDIS_CA_FILE
    value: {{ printf "%s/%s" $tls.mountPath $tls.caKey | quote }}
{{- if $tls.certKey }}
  - name: DISPATCHER_REDIS_CERT_FILE
    value: {{ printf "%s/%s" $tls.mountPath $tls.certKey | quote }}
  - name: DISPATCHER_REDIS_KEY_FILE
    value: {{ printf "%s/%s" $tls.mountPath $tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- if $sentinel.enabled }}
  - name: DISPATCHER_REDIS_SENTINELS
    value: {{ join "," $sentinel.hosts | quote }}
  - name: DISPATCHER_REDIS_SENTINEL_MASTER
    value: {{ $sentinel.masterName | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . | indent 2 }}
{{- end }}
{{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if .Values.templates }}
  - name: templates
    mountPath: {{ .Values.templatesMountPath }}
    readOnly: true
{{- end }}
{{- if .Values.redis.tls.enabled }}
  - name: redis-tls
    mountPath: {{ .Values.redis.tls.mountPath }}
    readOnly: true
{{- end }}
{{- end }}

{{/*
Pod volumes (both components).
*/}}
{{- define "catapush-dispatcher.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      {{- with .Values.tmpSizeLimit }}
      sizeLimit: {{ . }}
      {{- else }} {}
      {{- end }}
{{- if .Values.templates }}
  - name: templates
    configMap:
      name: {{ include "catapush-dispatcher.templatesConfigMapName" . }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
  - name: redis-tls
    secret:
      secretName: {{ .Values.redis.tls.existingSecret }}
{{- end }}
{{- end }}

{{/*
The worker's metrics ports, one per process: metricsPort .. metricsPort + processes - 1.
*/}}
{{- define "catapush-dispatcher.metricsPorts" -}}
{{- $w := .Values.worker }}
{{- range $i := until (int $w.processes) }}
- {{ add (int $w.metricsPort) $i }}
{{- end }}
{{- end }}

{{/*
A worker probe asking `path` of every process: an HTTP GET with one process, else a command
in the image's Python that fails unless every port answers 200.
Call with (dict "root" $ "path" "/healthz" "probe" .Values.worker.livenessProbe).
*/}}
{{- define "catapush-dispatcher.workerProbe" -}}
{{- $w := .root.Values.worker }}
{{- if eq (int $w.processes) 1 }}
httpGet:
  path: {{ .path }}
  port: metrics-0
{{- else }}
exec:
  command:
    - python
    - -c
    - {{ printf "import urllib.request as u\n[u.urlopen('http://127.0.0.1:%%d%s' %% p, timeout=3) for p in range(%d, %d)]" .path (int $w.metricsPort) (add (int $w.metricsPort) (int $w.processes)) | quote }}
{{- end }}
{{ toYaml .probe }}
{{- end }}

{{/*
Scheduling of one component: nodeSelector, tolerations and affinity (the component's own,
else the top-level ones, else a pod anti-affinity across nodes).
Call with (dict "root" $ "component" "worker" "values" .Values.worker).
*/}}
{{- define "catapush-dispatcher.scheduling" -}}
{{- $root := .root }}
{{- with (default $root.Values.nodeSelector .values.nodeSelector) }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations .values.tolerations) }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- $affinity := default $root.Values.affinity .values.affinity }}
{{- if $affinity }}
affinity:
{{ toYaml $affinity | indent 2 }}
{{- else if eq (toString .values.podAntiAffinity) "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
{{ include "catapush-dispatcher.selectorLabels" (dict "root" $root "component" .component) | indent 14 }}
{{- else if eq (toString .values.podAntiAffinity) "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
{{ include "catapush-dispatcher.selectorLabels" (dict "root" $root "component" .component) | indent 12 }}
{{- else if .values.podAntiAffinity }}
{{- fail (printf "%s.podAntiAffinity must be \"soft\", \"hard\" or \"\", not %q" .component (toString .values.podAntiAffinity)) }}
{{- end }}
{{- end }}

{{/*
Checks of the values that Kubernetes would only refuse at apply time.
*/}}
{{- define "catapush-dispatcher.validate" -}}
{{- range $file, $_ := .Values.templates }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $file) }}
{{- fail (printf "templates: %q is not a valid file name (letters, digits, '-', '_' and '.' only)" $file) }}
{{- end }}
{{- if not (hasSuffix ".toml" $file) }}
{{- fail (printf "templates: %q must end in .toml" $file) }}
{{- end }}
{{- end }}
{{- if not (has (toString .Values.config.logFormat) (list "" "json" "console")) }}
{{- fail (printf "config.logFormat must be \"json\" or \"console\", not %q" (toString .Values.config.logFormat)) }}
{{- end }}
{{- with .Values.config.shutdownGraceS }}
{{- if gt (add (ceil .) 5 | int) (int $.Values.worker.terminationGracePeriodSeconds) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must be at least config.shutdownGraceS + 5 (%v), or the drain is cut short" $.Values.worker.terminationGracePeriodSeconds (add (ceil .) 5 | int)) }}
{{- end }}
{{- end }}
{{- if lt (int .Values.worker.processes) 1 }}
{{- fail "worker.processes must be at least 1" }}
{{- end }}
{{- if lt (int .Values.worker.threads) 1 }}
{{- fail "worker.threads must be at least 1" }}
{{- end }}
{{- if and .Values.worker.keda.enabled .Values.worker.autoscaling.enabled }}
{{- fail "worker.keda and worker.autoscaling both scale the workers: enable one of them" }}
{{- end }}
{{- if and .Values.worker.keda.enabled (not .Values.redis.sentinel.enabled) (not .Values.worker.keda.address) }}
{{- fail "worker.keda.address (host:port of Redis) is required unless redis.sentinel.enabled" }}
{{- end }}
{{- if and .Values.redis.tls.enabled (not .Values.redis.tls.existingSecret) }}
{{- fail "redis.tls.existingSecret (the Secret holding the CA) is required with redis.tls.enabled" }}
{{- end }}
{{- if and .Values.redis.tls.certKey (not .Values.redis.tls.keyKey) }}
{{- fail "redis.tls.keyKey is required with redis.tls.certKey" }}
{{- end }}
{{- if and .Values.redis.sentinel.enabled (not .Values.redis.sentinel.hosts) }}
{{- fail "redis.sentinel.hosts must list the sentinels (host:port) with redis.sentinel.enabled" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.worker.metricsPort) }}
{{- fail "serviceMonitor.enabled needs worker.metricsPort" }}
{{- end }}
{{- end }}
