#!/usr/bin/env bash
# Can ToolHive VERSION (default v0.66.0) be built here from the Go module proxy? For
# each of its binaries this operator needs (thv-operator, thv-proxyrunner, vmcp),
# lists the modules of its build graph that the proxy refuses to serve. Exit 0 when
# every one can be built, 1 when any cannot. Nothing is built or cached.
#
#   scripts/reference-probe.sh [VERSION]
set -euo pipefail
version=${1:-v0.66.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
# Releases after v0.47.0 need Go 1.27; the go command fetches that toolchain itself.
export GOTOOLCHAIN=${GOTOOLCHAIN_FOR_REFERENCE:-go1.27.3}
cd "$work"
cat > go.mod <<EOF
module reference-probe

go 1.26.0

require github.com/stacklok/toolhive $version
EOF
status=0
for binary in thv-operator thv-proxyrunner vmcp; do
  refused=$(go list -deps "github.com/stacklok/toolhive/cmd/$binary" 2>&1 >/dev/null \
    | grep -oE '[A-Za-z0-9./_~-]+@v[^:]+: reading [^ ]+: (403|404|410)' | sed 's/: reading [^ ]*: / → /' | sort -u || true)
  if [ -z "$refused" ]; then
    echo "$version $binary: every module of its build graph is served"
  else
    status=1
    echo "$version $binary: the module proxy refuses:"
    sed 's/^/  /' <<<"$refused"
  fi
done
exit $status
