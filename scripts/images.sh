#!/usr/bin/env bash
# Builds, offline, the container images the project's test node runs, as
# docker-archive tars in a cache keyed by version (skips what is present), and
# prints the directory holding them:
#   pause      the sandbox image: a static binary that sleeps until signalled
#   coredns    cluster DNS (tests/tools/coredns: only the plugins the node uses)
#   proxyrunner  ToolHive's proxy runner, the version the chart's toolhiveRunnerImage names
#   vmcp       ToolHive's vMCP (cmd/vmcp of the same module), the version the chart's
#              vmcpImage names
#   mcp-memory the Go MCP SDK's memory server (streamable HTTP with -http)
#   mcp-hello  the Go MCP SDK's hello server (stdio; unlike the memory server, it
#              writes no JSON-RPC log to stderr, which the proxy runner reads as
#              part of stdout: see README "stdio servers")
#   mcp-echo   tests/tools/mcp/echo: a tool answering with its request's headers
#              (what an MCPRemoteProxy adds); keyed by its source's hash
#   embed      tests/tools/mcp/embed: an offline stand-in for a text-embeddings
#              inference server (/health, /info, /embed) for EmbeddingServers; keyed
#              by its source's hash
# Each image is one layer with one static binary, run as UID 65532. Needs umoci and
# skopeo (scripts/node-packages.sh installs them).
#
#   scripts/images.sh          build what is missing, print the image dir
#   scripts/images.sh --print  print the image dir only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNNER_VERSION=v0.44.0
COREDNS_VERSION=v1.14.7
MCP_SDK_VERSION=v1.8.0
cache=${TOOLHIVE_CACHE:-$HOME/.cache/toolhive-operator}
out="$cache/images/runner-${RUNNER_VERSION}_coredns-${COREDNS_VERSION}_mcpsdk-${MCP_SDK_VERSION}"
if [ "${1:-}" = "--print" ]; then echo "$out"; exit 0; fi
mkdir -p "$out"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
log() { echo "[images] $*" >&2; }

go_build() { # dir package output
  (cd "$root/tests/tools/$1" && go build -trimpath -ldflags "-s -w" -o "$3" "$2")
}

# image NAME REF BINARY [ENTRYPOINT-ARGS...]: a one-binary image at $out/NAME.tar.
image() {
  local name=$1 ref=$2 binary=$3; shift 3
  [ -s "$out/$name.tar" ] && return 0
  log "assembling $ref"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:img"
  umoci unpack --image "$work/oci:img" "$work/bundle" >/dev/null
  install -d -m 1777 "$work/bundle/rootfs/tmp"
  install -m 0755 "$binary" "$work/bundle/rootfs/$name"
  umoci repack --image "$work/oci:img" "$work/bundle"
  local entry=(--config.entrypoint "/$name")
  for arg in "$@"; do entry+=(--config.entrypoint "$arg"); done
  umoci config --image "$work/oci:img" --config.user 65532:65532 --config.env HOME=/tmp --config.workingdir /tmp "${entry[@]}"
  skopeo copy --quiet "oci:$work/oci:img" "docker-archive:$out/$name.tar.tmp:$ref"
  mv "$out/$name.tar.tmp" "$out/$name.tar"
}

start=$(date +%s)
bins="$out/bin"; mkdir -p "$bins"
[ -x "$bins/coredns" ] || { log "building CoreDNS $COREDNS_VERSION"; go_build coredns . "$bins/coredns"; }
[ -x "$bins/thv-proxyrunner" ] || { log "building thv-proxyrunner $RUNNER_VERSION (cold: several minutes)"; go_build mcp github.com/stacklok/toolhive/cmd/thv-proxyrunner "$bins/thv-proxyrunner"; }
[ -x "$bins/vmcp" ] || { log "building vmcp $RUNNER_VERSION (cold: several minutes)"; go_build mcp github.com/stacklok/toolhive/cmd/vmcp "$bins/vmcp"; }
[ -x "$bins/mcp-memory" ] || { log "building the MCP SDK memory server $MCP_SDK_VERSION"; go_build mcp github.com/modelcontextprotocol/go-sdk/examples/server/memory "$bins/mcp-memory"; }
[ -x "$bins/mcp-hello" ] || { log "building the MCP SDK hello server $MCP_SDK_VERSION"; go_build mcp github.com/modelcontextprotocol/go-sdk/examples/server/hello "$bins/mcp-hello"; }
echo_rev=$(sha256sum "$root/tests/tools/mcp/echo/main.go" | cut -c1-12)
[ -x "$bins/mcp-echo-$echo_rev" ] || { log "building mcp-echo"; go_build mcp ./echo "$bins/mcp-echo-$echo_rev"; }
embed_rev=$(sha256sum "$root/tests/tools/mcp/embed/main.go" | cut -c1-12)
[ -x "$bins/embed-$embed_rev" ] || { log "building embed"; go_build mcp ./embed "$bins/embed-$embed_rev"; }
[ -x "$bins/pause" ] || { log "building pause"; go_build pause . "$bins/pause"; }

image pause localhost/toolhive-node/pause:v1 "$bins/pause"
image coredns localhost/toolhive-node/coredns:$COREDNS_VERSION "$bins/coredns"
image proxyrunner ghcr.io/stacklok/toolhive/proxyrunner:$RUNNER_VERSION "$bins/thv-proxyrunner"
image vmcp ghcr.io/stacklok/toolhive/vmcp:$RUNNER_VERSION "$bins/vmcp"
image mcp-memory localhost/toolhive-node/mcp-memory:$MCP_SDK_VERSION "$bins/mcp-memory"
image mcp-hello localhost/toolhive-node/mcp-hello:$MCP_SDK_VERSION "$bins/mcp-hello"
# One echo image only (the node imports every tar here): older builds go.
find "$out" -maxdepth 1 -name 'mcp-echo-*.tar' ! -name "mcp-echo-$echo_rev.tar" -delete
image "mcp-echo-$echo_rev" localhost/toolhive-node/mcp-echo:v1 "$bins/mcp-echo-$echo_rev"
find "$out" -maxdepth 1 -name 'embed-*.tar' ! -name "embed-$embed_rev.tar" -delete
image "embed-$embed_rev" localhost/toolhive-node/embed:v1 "$bins/embed-$embed_rev"
log "images ready in $(( $(date +%s) - start ))s: $out"
echo "$out"
