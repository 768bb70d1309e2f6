#!/bin/sh
# One-shot identity setup of the docker compose stack (the "keygen" service). Creates, once, the Ed25519
# identities whose peer ids others must know (the relay's and gateway B's) in the shared keys volume, and the
# relay address the gateways dial. Idempotent: existing keys are kept, so peer ids survive restarts.
#   KEYS_DIR   where to write (default /keys)
#   STARGATE   the CLI (default: node /app/services/cli/bin/stargate.js, as in the image)
#   RELAY_HOST, RELAY_PORT   the relay's address as the gateways resolve it (default relay:4001)
set -eu
KEYS_DIR="${KEYS_DIR:-/keys}"
STARGATE="${STARGATE:-node /app/services/cli/bin/stargate.js}"
RELAY_HOST="${RELAY_HOST:-relay}"
RELAY_PORT="${RELAY_PORT:-4001}"

identity() { # NAME: KEYS_DIR/NAME.key and KEYS_DIR/NAME.peerid
  if [ ! -s "$KEYS_DIR/$1.key" ] || [ ! -s "$KEYS_DIR/$1.peerid" ]; then
    # shellcheck disable=SC2086 # STARGATE is a command line
    $STARGATE keygen --force --out "$KEYS_DIR/$1.key" >"$KEYS_DIR/$1.peerid.tmp"
    mv "$KEYS_DIR/$1.peerid.tmp" "$KEYS_DIR/$1.peerid"
  fi
  echo "$1 peer id: $(cat "$KEYS_DIR/$1.peerid")"
}

mkdir -p "$KEYS_DIR"
identity relay
identity gateway-b
echo "/dns4/$RELAY_HOST/tcp/$RELAY_PORT/p2p/$(cat "$KEYS_DIR/relay.peerid")" >"$KEYS_DIR/relay.addr.tmp"
mv "$KEYS_DIR/relay.addr.tmp" "$KEYS_DIR/relay.addr"
echo "relay address: $(cat "$KEYS_DIR/relay.addr")"
