#!/usr/bin/env bash
# Sourced by `npm start` and `npm test`: installs the npm dependencies (and with them Node 24) the first
# time, or again when package-lock.json changed, so both commands work on a fresh clone.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -x node_modules/.bin/node || ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "bootstrap: installing npm dependencies (npm install, honouring package-lock.json)" >&2
  npm install --no-audit --no-fund >&2
fi
export PATH="$PWD/node_modules/.bin:$PATH"
hash -r
