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
# ... and its Go stubs into test/interop/go/gen, next to the stargate.v1 ones.
buf generate --template test/proto/buf.gen.go.yaml
# ... and its descriptors, with comments, for the server reflection of examples/node/echo-server.ts.
buf build test/proto -o test/gen/echo.binpb
buf build proto -o services/shared/src/gen/stargate.binpb
buf build third_party/grpc-proto -o services/shared/src/gen/grpc.binpb

PY="$(bash test/interop/python/setup.sh | tail -n1)"
PY_OUT=test/interop/python/gen
rm -rf "$PY_OUT"
mkdir -p "$PY_OUT"
# stargate.v1 (proto/) and the tunnelling tests' stargate.test.v1 (test/proto/) into one tree.
OUT="$PWD/$PY_OUT"
for root in proto test/proto; do
  (cd "$root" && find stargate -name '*.proto' | LC_ALL=C sort) | (
    cd "$root"
    xargs "$PY" -m grpc_tools.protoc -I. --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT"
  )
done
