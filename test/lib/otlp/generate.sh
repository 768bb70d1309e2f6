#!/usr/bin/env bash
# Regenerates test/lib/otlp/gen: protobuf-es code for the official OTLP messages (ExportTraceServiceRequest,
# ExportMetricsServiceRequest), used by the in-process OTLP/HTTP receiver of the telemetry tests.
# The .proto files are the official opentelemetry-proto files as shipped inside the npm package
# @opentelemetry/otlp-grpc-exporter-base@0.36.1 (build/protos, opentelemetry-proto v0.19.0).
set -euo pipefail
cd "$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @opentelemetry/otlp-grpc-exporter-base@0.36.1 >/dev/null && tar xzf ./*.tgz)
protos="$tmp/package/build/protos"
cat >"$tmp/buf.gen.yaml" <<YAML
version: v2
clean: true
inputs:
  - directory: $protos
    paths:
      - $protos/opentelemetry/proto/collector/trace/v1/trace_service.proto
      - $protos/opentelemetry/proto/collector/metrics/v1/metrics_service.proto
plugins:
  - local: protoc-gen-es
    out: $PWD/gen
    include_imports: true
    opt:
      - target=js+dts
      - import_extension=js
YAML
buf generate --template "$tmp/buf.gen.yaml"
