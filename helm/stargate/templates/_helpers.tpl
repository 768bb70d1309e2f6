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

{{/* The multiaddr host component of an IP or DNS name: /ip4/1.2.3.4, /ip6/::1, /dns/relay.example.com. */}}
{{- define "stargate.hostComponent" -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+){3}$" . -}}
/ip4/{{ . }}
{{- else if contains ":" . -}}
/ip6/{{ . }}
{{- else -}}
/dns/{{ . }}
{{- end -}}
{{- end -}}

{{/*
Addresses of this release's relays as the gateways dial them (JSON list): one per relay pod, by its DNS name on
the headless Service and without a peer id (each gateway learns it on connecting).
*/}}
{{- define "stargate.releaseRelayAddrs" -}}
{{- $relay := include "stargate.relay.fullname" . -}}
{{- $addrs := list -}}
{{- if and .Values.relay.enabled .Values.gateway.releaseRelays -}}
{{- range $i := until (int .Values.relay.replicas) -}}
{{- $addrs = append $addrs (printf "/dns4/%s-%d.%s-headless.%s.svc.%s/tcp/%d" $relay $i $relay $.Release.Namespace $.Values.clusterDomain (int $.Values.relay.port)) -}}
{{- end -}}
{{- end -}}
{{- toJson $addrs -}}
{{- end -}}

{{/*
The relay's --announce addresses (JSON list): relay.announce when given; else derived from the Service: a NodePort
relay announces the node's address (relay.service.nodeAddress, or the IP of the node it runs on) at its node port,
a LoadBalancer relay its loadBalancerIP. Empty otherwise (the relay advertises its pod address).
*/}}
{{- define "stargate.relay.announce" -}}
{{- $relay := .Values.relay -}}
{{- $svc := $relay.service -}}
{{- $out := list -}}
{{- if $relay.announce -}}
{{- $out = $relay.announce -}}
{{- else if and (eq $svc.type "NodePort") (gt (int $svc.nodePort) 0) -}}
{{- $host := "/ip4/$(HOST_IP)" -}}
{{- if $svc.nodeAddress -}}
{{- $host = include "stargate.hostComponent" $svc.nodeAddress -}}
{{- end -}}
{{- $port := printf "%d" (int $svc.nodePort) -}}
{{- if and $svc.perPod (gt (int $relay.replicas) 1) -}}
{{- /* Pod i's Service has node port nodePort+i; Kubernetes can only append the ordinal, so nodePort ends in 0. */}}
{{- if or (ne (mod (int $svc.nodePort) 10) 0) (gt (int $relay.replicas) 10) -}}
{{- fail (printf "relay.service.nodePort %d with %d per-pod Services: each relay announces nodePort+ordinal, which needs a nodePort ending in 0 and at most 10 replicas; or set relay.announce" (int $svc.nodePort) (int $relay.replicas)) -}}
{{- end -}}
{{- $port = printf "%d$(POD_INDEX)" (div (int $svc.nodePort) 10) -}}
{{- end -}}
{{- $out = list (printf "%s/tcp/%s" $host $port) -}}
{{- else if and (eq $svc.type "LoadBalancer") $svc.loadBalancerIP -}}
{{- if gt (int $relay.replicas) 1 -}}
{{- fail (printf "relay.service.loadBalancerIP is one address but there are %d relays, each with its own identity: use one replica, or per-pod Services with relay.announce naming each pod's address ($(POD_INDEX))" (int $relay.replicas)) -}}
{{- end -}}
{{- $out = list (printf "%s/tcp/%d" (include "stargate.hostComponent" $svc.loadBalancerIP) (int $relay.port)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Bytes of a Kubernetes quantity without fractions: 256Mi -> 268435456, 1G -> 1000000000. */}}
{{- define "stargate.bytes" -}}
{{- $q := . | toString -}}
{{- $n := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $n $q -}}
{{- $factor := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- mul (int64 $n) (get $factor $unit) -}}
{{- end -}}

{{/*
The gateway's request journal bound (--request-journal-max-bytes), sized to its state volume: half of it
unless gateway.config sets it, which must then leave a quarter of the volume free.
*/}}
{{- define "stargate.gateway.journalMaxBytes" -}}
{{- $gw := .Values.gateway -}}
{{- $volume := include "stargate.bytes" $gw.persistence.size | int64 -}}
{{- $set := index $gw.config "request-journal-max-bytes" -}}
{{- if $set -}}
{{- if gt (int64 $set) (div (mul $volume 3) 4) -}}
{{- fail (printf "gateway.config.request-journal-max-bytes %s does not fit gateway.persistence.size %s: the journal may use at most 3/4 of the state volume (%d bytes); raise the size" (include "stargate.flagValue" $set) $gw.persistence.size (div (mul $volume 3) 4)) -}}
{{- end -}}
{{- int64 $set -}}
{{- else -}}
{{- div $volume 2 -}}
{{- end -}}
{{- end -}}

{{/* A flag value as an environment string: whole numbers without an exponent (YAML numbers arrive as floats). */}}
{{- define "stargate.flagValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- . | toString -}}
{{- end -}}
{{- end -}}
