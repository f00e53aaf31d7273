{{/*
Rules values.schema.json cannot express (relations between values); each failure names the values to fix.
Included once, from configmap.yaml.
*/}}
{{- define "safe-fedllm.validate" -}}
{{- $probe := .Values.probeService }}
{{- range $name := list "ingress" "scorer" }}
{{- $a := (index $probe $name).autoscaling }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "probeService.%s.autoscaling.minReplicas (%d) must not exceed maxReplicas (%d)" $name (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- end }}
{{- $a := .Values.audit.autoscaling }}
{{- if and .Values.audit.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "audit.autoscaling.minReplicas (%d) must not exceed maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if and (include "safe-fedllm.audit.level" .) (not .Values.audit.enabled) }}
{{- if hasPrefix "audit" .Values.aggregator.defense }}
{{- fail (printf "aggregator.defense %q needs the audit service: set audit.enabled=true" .Values.aggregator.defense) }}
{{- end }}
{{- fail "aggregator.auditLevel.aggregateThreshold needs the audit service: set audit.enabled=true" }}
{{- end }}
{{- $w := $probe.workers }}
{{- if gt (int $w.minReplicas) (int $w.maxReplicas) }}
{{- fail (printf "probeService.workers.minReplicas (%d) must not exceed maxReplicas (%d)" (int $w.minReplicas) (int $w.maxReplicas)) }}
{{- end }}
{{- if or (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) }}
{{- fail (printf "probeService.workers.replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" (int $w.replicas) (int $w.minReplicas) (int $w.maxReplicas)) }}
{{- end }}
{{- if and (not $probe.rayAutoscaler.enabled) (ne (int $w.minReplicas) (int $w.maxReplicas)) }}
{{- fail "probeService.rayAutoscaler.enabled is false: nothing moves worker pods, so set workers.minReplicas = replicas = maxReplicas" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.externalRedis.url }}
{{- fail "set either redis.enabled or externalRedis.url, not both" }}
{{- end }}
{{- end }}
