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
{{- include "safe-fedllm.validateCapacity" . }}
{{- if and $probe.gcsFaultTolerance.enabled (not .Values.redis.enabled) }}
{{- fail "probeService.gcsFaultTolerance.enabled keeps the Ray head's GCS state in the chart's Redis: set redis.enabled=true" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.aggregator.exposeMetrics) }}
{{- fail "metrics.serviceMonitor.enabled scrapes the aggregator's /metrics: set aggregator.exposeMetrics=true" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.externalRedis.url }}
{{- fail "set either redis.enabled or externalRedis.url, not both" }}
{{- end }}
{{- end }}

{{/*
Capacity: what the most Serve replicas reserve must fit the most worker pods, or `helm install` succeeds and the
replicas stay pending. Ray takes a pod's CPUs from its limit, 30% of its memory limit as the object store and the
rest as schedulable `memory`. Millicores and bytes, so that sums compare exactly.
*/}}
{{- define "safe-fedllm.validateCapacity" -}}
{{- $probe := .Values.probeService }}
{{- $audit := .Values.audit }}
{{- $pod := ternary $audit.workerResources $probe.workers.resources $audit.enabled }}
{{- $where := ternary "audit.workerResources" "probeService.workers.resources" $audit.enabled }}
{{- $limits := $pod.limits | default dict }}
{{- if not (and (hasKey $limits "cpu") (hasKey $limits "memory")) }}
{{- fail (printf "%s.limits needs cpu and memory: Ray sizes a worker pod from its limits" $where) }}
{{- end }}
{{- $podMilli := int64 (round (mulf (include "safe-fedllm.quantity" $limits.cpu | float64) 1000) 0) }}
{{- $needMilli := int64 0 }}
{{- range $name := list "ingress" "scorer" }}
{{- $d := index $probe $name }}
{{- $needMilli = add $needMilli (mul (int64 (round (mulf $d.numCpus 1000) 0)) (int64 $d.autoscaling.maxReplicas)) }}
{{- end }}
{{- $what := "probe replicas" }}
{{- if $audit.enabled }}
{{- $what = "probe and audit replicas" }}
{{- $needMilli = add $needMilli (mul (int64 (round (mulf $audit.replica.numCpus 1000) 0)) (int64 $audit.autoscaling.maxReplicas)) }}
{{- $memory := include "safe-fedllm.quantity" $limits.memory | float64 }}
{{- $rayMemory := int64 (floor (mulf $memory 0.7)) }}
{{- if gt (int64 $audit.replica.memoryBytes) $rayMemory }}
{{- fail (printf "an audit replica reserves %d bytes (audit.replica.memoryBytes), a worker pod's Ray memory is %d (70%% of %s.limits.memory)" (int64 $audit.replica.memoryBytes) $rayMemory $where) }}
{{- end }}
{{- /* The object store holds the shared base, SmolLM2-135M in float32 (538 MB). */}}
{{- $objectStore := int64 (floor (mulf $memory 0.3)) }}
{{- if lt $objectStore 538000000 }}
{{- fail (printf "a worker pod's object store (%d bytes, 30%% of %s.limits.memory) cannot hold the audit's shared base (538000000 bytes)" $objectStore $where) }}
{{- end }}
{{- end }}
{{- $offerMilli := mul $podMilli (int64 $probe.workers.maxReplicas) }}
{{- if gt (int64 $needMilli) $offerMilli }}
{{- fail (printf "%s need %s CPUs at most, worker pods offer %s (probeService.workers.maxReplicas x %s.limits.cpu): raise the pods or lower the replicas' maxReplicas or numCpus" $what (divf $needMilli 1000 | toString) (divf $offerMilli 1000 | toString) $where) }}
{{- end }}
{{- end }}
