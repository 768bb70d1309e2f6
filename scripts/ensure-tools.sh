#!/usr/bin/env bash
# Installs the external tools the tests use, pinned, into a cache outside the clone
# (default ~/.cache/stargate/bin). Idempotent: a tool already at its pinned version is left alone,
# so a second run takes well under a second. Prints the bin dir on stdout (last line).
set -euo pipefail
BIN="${STARGATE_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/stargate/bin}"
mkdir -p "$BIN"
export GOBIN="$BIN" GOFLAGS="${GOFLAGS:-} -mod=mod" GOTOOLCHAIN=local

GRPCURL_VERSION=v1.9.3
NATS_SERVER_VERSION=v2.11.9
HELM_VERSION=v3.19.0
PROTOC_GEN_GO_VERSION=v1.36.10
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Prometheus 3.16.0 (its Go module versions are v0.3xx.y); docker-compose.yml runs the same version.
PROMETHEUS_VERSION=v0.316.0

log() { echo "ensure-tools: $*" >&2; }

go_tool() { # name module version [go build tags]
  local name=$1 module=$2 version=$3 tags=${4:-}
  local stamp="$BIN/.$name.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return 0; fi
  command -v go >/dev/null || { log "go is needed to install $name ($module@$version)"; return 1; }
  log "installing $name $version (go install${tags:+ -tags $tags} $module@$version)"
  go install ${tags:+-tags "$tags"} "$module@$version"
  echo "$version" >"$stamp"
}

# System packages for the network-namespace NAT testbed (test/netns): iproute2 and iptables from apt.
# Installed only when missing and we are root (or have passwordless sudo); otherwise the netns tests skip.
netns_tool() { # command package
  local cmd=$1 pkg=$2
  if command -v "$cmd" >/dev/null || [[ -x "/usr/sbin/$cmd" || -x "/sbin/$cmd" ]]; then return 0; fi
  command -v apt-get >/dev/null || { log "$cmd missing and no apt-get: netns tests will be skipped"; return 0; }
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if sudo -n true 2>/dev/null; then sudo=(sudo -n); else log "$cmd missing and not root: netns tests will be skipped"; return 0; fi
  fi
  log "installing $pkg (apt-get) for the netns testbed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null; } ||
    log "could not install $pkg: netns tests will be skipped"
}

apt_tool() { # name debian-package: links an apt-installed tool into $BIN, installing the package only when missing
  local name=$1 pkg=$2
  if [[ -x "$BIN/$name" ]]; then return 0; fi
  if ! command -v "$name" >/dev/null; then
    command -v apt-get >/dev/null || { log "apt-get is needed to install $name (Debian package $pkg)"; return 1; }
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
    log "installing $name (apt-get install $pkg)"
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$pkg" >&2
  fi
  ln -sf "$(command -v "$name")" "$BIN/$name"
}

pip_tool() { # name pypi-package version: installs into its own venv next to $BIN and links the command
  local name=$1 pkg=$2 version=$3
  local stamp="$BIN/.$name.version" venv="$BIN/../venv-$name"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return 0; fi
  command -v python3 >/dev/null || { log "python3 is needed to install $name ($pkg==$version)"; return 1; }
  log "installing $name $version (pip install $pkg==$version)"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "$pkg==$version" >&2
  ln -sf "$venv/bin/$name" "$BIN/$name"
  echo "$version" >"$stamp"
}

want() { [[ " ${TOOLS:-all} " == *" all "* || " ${TOOLS:-all} " == *" $1 "* ]]; }

want grpcurl && go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
want nats-server && go_tool nats-server github.com/nats-io/nats-server/v2 "$NATS_SERVER_VERSION"
want helm && go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
want protoc-gen-go && go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
# remove_all_sd: without the cloud service-discovery plugins (static targets are all the tests use), which
# halves the build and skips downloading the AWS, Azure, GCE and Kubernetes SDKs on a new machine.
want prometheus && go_tool prometheus github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION" remove_all_sd
want promtool && go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" remove_all_sd
want protoc-gen-go-grpc && go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
want netns && { netns_tool ip iproute2; netns_tool iptables iptables; }
# Only when asked for by name (TOOLS=docker-compose): it needs apt-get and root or passwordless sudo.
# Debian's docker-compose (v1) validates docker-compose.yml offline with `docker-compose config -q`.
[[ " ${TOOLS:-} " == *" docker-compose "* ]] && apt_tool docker-compose docker-compose
# Only when asked for by name (TOOLS=chromium): Debian's chromium (/usr/bin/chromium) for the browser test
# (test/e2e/browser.test.ts drives it with playwright-core; no browser download). Needs apt-get and root or sudo.
[[ " ${TOOLS:-} " == *" chromium "* ]] && apt_tool chromium chromium
# Only when asked for by name (TOOLS=kubernetes-validate): offline Kubernetes JSON schemas, strict mode (~150 MB).
[[ " ${TOOLS:-} " == *" kubernetes-validate "* ]] && pip_tool kubernetes-validate kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
echo "$BIN"
