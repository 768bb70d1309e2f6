#!/usr/bin/env bash
# `npm start`: the whole local stack (see `stargate dev --help`).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
exec node services/cli/bin/stargate.js dev "$@"
