#!/usr/bin/env bash
# Builds ToolHive's own operator (thv-operator, the version the chart mirrors) from the
# Go module proxy into the version-keyed tool cache (skipped when present), for the
# differential test against it (tests/integration/reference_parity.rs). Prints two
# lines: the binary, and the directory of the reference CRDs (in the module source).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
TOOLHIVE_VERSION=v0.44.0
cache=${TOOLHIVE_CACHE:-$HOME/.cache/toolhive-operator}
bin="$cache/bin/toolhive-$TOOLHIVE_VERSION"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$bin"
cd "$root/tests/tools/mcp"
if [ ! -x "$bin/thv-operator" ]; then
  echo "[reference] building thv-operator $TOOLHIVE_VERSION (cold: several minutes)" >&2
  go build -trimpath -ldflags "-s -w" -o "$bin/thv-operator.tmp" github.com/stacklok/toolhive/cmd/thv-operator
  mv "$bin/thv-operator.tmp" "$bin/thv-operator"
fi
echo "$bin/thv-operator"
echo "$(go list -m -f '{{.Dir}}' github.com/stacklok/toolhive)/deploy/charts/operator-crds/files/crds"
