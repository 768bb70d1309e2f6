#!/usr/bin/env bash
# Regenerates every generated file from proto/ (run by `npm run generate`; CI fails if it changes anything).
# TypeScript (protoc-gen-es) and Go (protoc-gen-go, protoc-gen-go-grpc: pinned, installed into the tools
# cache by ensure-tools.sh) through buf; Python through grpcio-tools (pinned in
# test/interop/python/requirements.txt, installed into a venv by test/interop/python/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_BIN="$(TOOLS="protoc-gen-go protoc-gen-go-grpc" bash scripts/ensure-tools.sh | tail -n1)"
export PATH="$TOOLS_BIN:$PATH"
buf generate
# The tunnelling tests' own service (test/proto, stargate.test.v1) into test/gen.
buf generate --template test/proto/buf.gen.yaml
buf build proto -o services/shared/src/gen/stargate.binpb
buf build node_modules/grpc-health-check/proto -o services/shared/src/gen/health.binpb

PY="$(bash test/interop/python/setup.sh | tail -n1)"
PY_OUT=test/interop/python/gen
rm -rf "$PY_OUT"
mkdir -p "$PY_OUT"
(cd proto && find stargate -name '*.proto' | LC_ALL=C sort) | (
  cd proto
  xargs "$PY" -m grpc_tools.protoc -I. --python_out="../$PY_OUT" --pyi_out="../$PY_OUT" --grpc_python_out="../$PY_OUT"
)
