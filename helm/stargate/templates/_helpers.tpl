{{/* Chart name, overridable. */}}
{{- define "stargate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "stargate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "stargate.relay.fullname" -}}
{{- printf "%s-relay" (include "stargate.fullname" .) | trunc 56 | trimSuffix "-" -}}
{{- end -}}

{{- define "stargate.gateway.fullname" -}}
{{- printf "%s-gateway" (include "stargate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stargate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels; call with (dict "ctx" $ "component" "relay"). */}}
{{- define "stargate.labels" -}}
helm.sh/chart: {{ include "stargate.chart" .ctx }}
{{ include "stargate.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.image.tag | default .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: stargate
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "stargate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stargate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "stargate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "stargate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stargate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment variable name of a CLI flag: max-connections -> STARGATE_MAX_CONNECTIONS. */}}
{{- define "stargate.envName" -}}
{{- printf "STARGATE_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* OpenTelemetry SDK environment; call with (dict "ctx" $ "component" "relay"). */}}
{{- define "stargate.otelEnv" -}}
{{- $otel := .ctx.Values.otel -}}
{{- if $otel.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "stargate-%s" .component | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "otel.endpoint is required when otel.enabled is true (e.g. http://otel-collector.observability:4318)" $otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $otel.protocol | quote }}
- name: OTEL_K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(OTEL_K8S_POD_NAME),k8s.namespace.name=$(OTEL_K8S_NAMESPACE),service.namespace=%s%s" .ctx.Release.Namespace (ternary (printf ",%s" $otel.resourceAttributes) "" (ne $otel.resourceAttributes "")) | quote }}
{{- end }}
{{- end -}}

{{/* Metrics environment (the --metrics-listen flag as STARGATE_METRICS_LISTEN). */}}
{{- define "stargate.metricsEnv" -}}
{{- if .Values.metrics.enabled }}
- name: STARGATE_METRICS_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
{{- end }}
{{- end -}}
