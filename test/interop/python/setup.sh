#!/usr/bin/env bash
# Creates (once) a Python venv with the pinned packages of requirements.txt, outside the clone
# (default ~/.cache/stargate/venv-<first 12 hex digits of the requirements' sha256>: a checkout with other
# requirements gets its own venv instead of rebuilding a shared one). Idempotent: when the venv already holds
# exactly these requirements it returns at once; concurrent runs wait for each other. Prints the venv's
# python on stdout (last line).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REQ="$HERE/requirements.txt"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
VENV="${STARGATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stargate/venv-${want:0:12}}"
stamp="$VENV/.requirements.sha256"
ready() { [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; }
if ready; then
  echo "$VENV/bin/python"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if ! ready; then
  PY="${PYTHON:-$(command -v python3 || true)}"
  [[ -n "$PY" ]] || { echo "setup.sh: python3 is needed (>= 3.10)" >&2; exit 1; }
  echo "setup.sh: creating $VENV with $(basename "$REQ")" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$want" >"$stamp"
fi
echo "$VENV/bin/python"
