#!/usr/bin/env bash
# Creates (once) a Python venv with the pinned packages of requirements.txt, outside the clone
# (default ~/.cache/stargate/venv). Idempotent: when the venv already holds exactly these requirements
# it returns at once. Prints the venv's python on stdout (last line).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${STARGATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stargate/venv}"
REQ="$HERE/requirements.txt"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
PY="${PYTHON:-$(command -v python3 || true)}"
[[ -n "$PY" ]] || { echo "setup.sh: python3 is needed (>= 3.9)" >&2; exit 1; }
echo "setup.sh: creating $VENV with $(basename "$REQ")" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
echo "$want" >"$stamp"
echo "$VENV/bin/python"
