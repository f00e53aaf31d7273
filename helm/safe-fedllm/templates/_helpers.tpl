{{/*
Chart name, truncated to a DNS label.
*/}}
{{- define "safe-fedllm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object. At most 40 characters: KubeRay refuses RayService and RayJob names over 47
and the chart appends "-probe" / "-sim". It must be a DNS-1035 label (KubeRay checks RayService names).
*/}}
{{- define "safe-fedllm.fullname" -}}
{{- $name := "" }}
{{- if .Values.fullnameOverride }}
{{- $name = .Values.fullnameOverride }}
{{- else }}
{{- $chart := default .Chart.Name .Values.nameOverride }}
{{- $name = ternary .Release.Name (printf "%s-%s" .Release.Name $chart) (contains $chart .Release.Name) }}
{{- end }}
{{- $name = $name | trunc 40 | trimSuffix "-" }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "object name prefix %q must start with a letter and hold only a-z, 0-9 and '-' (KubeRay needs DNS-1035 names); set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "safe-fedllm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels; pass a dict with "ctx" (the root context) and "component".
*/}}
{{- define "safe-fedllm.labels" -}}
helm.sh/chart: {{ include "safe-fedllm.chart" .ctx }}
{{ include "safe-fedllm.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: safe-fedllm
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "safe-fedllm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safe-fedllm.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object names. */}}
{{- define "safe-fedllm.aggregator.name" -}}{{ include "safe-fedllm.fullname" . }}-aggregator{{- end }}
{{- define "safe-fedllm.redis.name" -}}{{ include "safe-fedllm.fullname" . }}-redis{{- end }}
{{- define "safe-fedllm.probe.name" -}}{{ include "safe-fedllm.fullname" . }}-probe{{- end }}
{{- define "safe-fedllm.simulation.name" -}}{{ include "safe-fedllm.fullname" . }}-sim{{- end }}
{{- define "safe-fedllm.config.name" -}}{{ include "safe-fedllm.fullname" . }}-config{{- end }}

{{/* KubeRay names the Serve service of a RayService "<rayservice>-serve-svc". */}}
{{- define "safe-fedllm.probe.serveService" -}}{{ include "safe-fedllm.probe.name" . }}-serve-svc{{- end }}

{{- define "safe-fedllm.probe.url" -}}
http://{{ include "safe-fedllm.probe.serveService" . }}.{{ .Release.Namespace }}.svc:{{ .Values.probeService.servePort }}
{{- end }}

{{/* The audit service: a second Serve application behind the same KubeRay Serve service, under its prefix. */}}
{{- define "safe-fedllm.audit.url" -}}
{{ include "safe-fedllm.probe.url" . }}{{ .Values.audit.routePrefix }}
{{- end }}

{{/* An aggregator that needs the audit service: an audit level (audit, audit+<level>) or the aggregate audit. */}}
{{- define "safe-fedllm.audit.level" -}}
{{- if or (hasPrefix "audit" .Values.aggregator.defense) (not (kindIs "invalid" .Values.aggregator.auditLevel.aggregateThreshold)) }}true{{ end }}
{{- end }}

{{/* Resources of one Ray worker pod: grown to audit.workerResources while the audit replicas share them. */}}
{{- define "safe-fedllm.workerResources" -}}
{{- toYaml (ternary .Values.audit.workerResources .Values.probeService.workers.resources .Values.audit.enabled) }}
{{- end }}

{{- define "safe-fedllm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "safe-fedllm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "safe-fedllm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secrets: the chart's own, or the operator's existing ones. */}}
{{- define "safe-fedllm.auth.secretName" -}}
{{- default (printf "%s-auth" (include "safe-fedllm.fullname" .)) .Values.aggregator.auth.existingSecret }}
{{- end }}
{{- define "safe-fedllm.redis.secretName" -}}
{{- default (printf "%s-redis" (include "safe-fedllm.fullname" .)) .Values.redis.existingSecret }}
{{- end }}

{{/*
A secret value that survives upgrades: the given one, else the one already in the cluster, else a new random
one. Pass a dict with "ctx", "secret", "key" and "value".
*/}}
{{- define "safe-fedllm.secretValue" -}}
{{- if .value }}
{{- .value }}
{{- else if not .ctx.Values.generateSecrets }}
{{- fail (printf "generateSecrets is false: set %s (or its existingSecret) instead of generating %s of Secret %s" .setting .key .secret) }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of every safe-fedllm container: the ConfigMap, the Redis URL (with its password from a Secret).
Kubernetes expands $(SAFE_FEDLLM_REDIS_PASSWORD) because that variable is defined before the URL.
*/}}
{{- define "safe-fedllm.env" -}}
{{- if .Values.redis.enabled }}
- name: SAFE_FEDLLM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "safe-fedllm.redis.secretName" . }}
      key: redis-password
- name: SAFE_FEDLLM_REDIS_URL
  value: "redis://:$(SAFE_FEDLLM_REDIS_PASSWORD)@{{ include "safe-fedllm.redis.name" . }}.{{ .Release.Namespace }}.svc:6379/0"
{{- else if .Values.externalRedis.existingSecret }}
- name: SAFE_FEDLLM_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else }}
- name: SAFE_FEDLLM_REDIS_URL
  value: {{ .Values.externalRedis.url | quote }}
{{- end }}
{{- end }}

{{/* Redis maxmemory in bytes: maxmemoryRatio of the container's memory limit. */}}
{{- define "safe-fedllm.redis.maxmemory" -}}
{{- $limit := include "safe-fedllm.quantity" .Values.redis.resources.limits.memory | float64 }}
{{- int64 (floor (mulf $limit .Values.redis.maxmemoryRatio)) }}
{{- end }}

{{- define "safe-fedllm.envFrom" -}}
- configMapRef:
    name: {{ include "safe-fedllm.config.name" . }}
{{- end }}

{{/* Volumes every safe-fedllm pod mounts: the model cache, /tmp and, if chosen, the probe artifacts. */}}
{{- define "safe-fedllm.volumes" -}}
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if eq .Values.probeArtifacts.source "volume" }}
- name: probe-artifacts
  {{- toYaml .Values.probeArtifacts.volume | nindent 2 }}
{{- end }}
{{- end }}

{{- define "safe-fedllm.volumeMounts" -}}
- name: cache
  mountPath: {{ .Values.settings.cacheDir }}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.probeArtifacts.source "volume" }}
- name: probe-artifacts
  mountPath: {{ .Values.probeArtifacts.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Ray pods: Ray's session dir (logs, spilled objects) on a bounded emptyDir, as KubeRay's own chart does. */}}
{{- define "safe-fedllm.rayVolumes" -}}
- name: cache
  emptyDir: {}
- name: ray-tmp
  emptyDir:
    sizeLimit: {{ .Values.probeService.rayTmpSizeLimit }}
{{- if eq .Values.probeArtifacts.source "volume" }}
- name: probe-artifacts
  {{- toYaml .Values.probeArtifacts.volume | nindent 2 }}
{{- end }}
{{- end }}

{{- define "safe-fedllm.rayVolumeMounts" -}}
- name: cache
  mountPath: {{ .Values.settings.cacheDir }}
- name: ray-tmp
  mountPath: /tmp/ray
{{- if eq .Values.probeArtifacts.source "volume" }}
- name: probe-artifacts
  mountPath: {{ .Values.probeArtifacts.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Serve autoscaling_config of one deployment from its values. */}}
{{- define "safe-fedllm.serveAutoscaling" -}}
min_replicas: {{ .minReplicas }}
max_replicas: {{ .maxReplicas }}
target_ongoing_requests: {{ .targetOngoingRequests }}
upscale_delay_s: {{ .upscaleDelayS }}
downscale_delay_s: {{ .downscaleDelayS }}
metrics_interval_s: {{ .metricsIntervalS }}
look_back_period_s: {{ .lookBackPeriodS }}
{{- end }}

{{/*
A Kubernetes quantity ("2", "500m", "6Gi", 1.5) as a number in base units (CPUs, bytes), printed; the schema
has already checked its form. Callers turn it back into a number with float64.
*/}}
{{- define "safe-fedllm.quantity" -}}
{{- $text := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $units := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- mulf (float64 $number) (index $units (trimPrefix $number $text)) }}
{{- end }}
