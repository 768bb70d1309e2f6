#!/bin/sh
# One-shot identity setup of the docker compose stack (the "keygen" service): creates, once, the identity of
# gateway B in the keys volume, which gateway B mounts read-only (a pre-provisioned identity whose peer id is
# known before the gateway starts). The relay and gateway A create their own identities in their state volumes;
# the gateways learn the relay's peer id when they connect, so nothing is copied by hand.
# Idempotent: an existing key is kept, so peer ids survive restarts.
#   KEYS_DIR   where to write (default /keys)
#   STARGATE   the CLI (default: node /app/services/cli/bin/stargate.js, as in the image)
set -eu
KEYS_DIR="${KEYS_DIR:-/keys}"
STARGATE="${STARGATE:-node /app/services/cli/bin/stargate.js}"

identity() { # NAME: KEYS_DIR/NAME.key and KEYS_DIR/NAME.peerid
  if [ ! -s "$KEYS_DIR/$1.key" ] || [ ! -s "$KEYS_DIR/$1.peerid" ]; then
    # shellcheck disable=SC2086 # STARGATE is a command line
    $STARGATE keygen --force --out "$KEYS_DIR/$1.key" >"$KEYS_DIR/$1.peerid.tmp"
    mv "$KEYS_DIR/$1.peerid.tmp" "$KEYS_DIR/$1.peerid"
  fi
  echo "$1 peer id: $(cat "$KEYS_DIR/$1.peerid")"
}

mkdir -p "$KEYS_DIR"
identity gateway-b
