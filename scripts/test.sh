#!/usr/bin/env bash
# `npm test`: every check CI runs, in order. Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
step() { printf '\n== %s\n' "$*"; }

step "node $(node --version) at $(command -v node) (engines >= 22.18; this platform's runtime package or the machine's Node)"

step "type-check"
tsc -p tsconfig.json

step "lint + format (biome)"
biome check .

step "buf lint"
buf lint

step "generated code is up to date"
bash scripts/generate.sh
GEN_DIRS=(services/shared/src/gen test/interop/go/gen test/interop/python/gen test/gen)
if ! git diff --quiet -- "${GEN_DIRS[@]}" || [ -n "$(git status --porcelain -- "${GEN_DIRS[@]}")" ]; then
  git status --short -- "${GEN_DIRS[@]}"
  echo "generated code is stale: run 'npm run generate' and commit the result" >&2
  exit 1
fi

step "buf breaking against the previous commit of main"
if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto/stargate 2>/dev/null; then
  buf breaking proto --against ".git#ref=HEAD~1,subdir=proto"
  echo "no breaking changes against $(git rev-parse --short HEAD~1)"
else
  echo "no previous commit with proto/ to compare against"
fi

step "tools (pinned; installed on first use)"
bash scripts/ensure-tools.sh >/dev/null

step "unit + integration tests"
node --test --test-concurrency=2 --test-timeout=600000 \
  'services/*/src/**/*.test.ts' 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' 'test/e2e/**/*.test.ts' \
  'test/deploy/**/*.test.ts'
