#!/usr/bin/env bash
# Prints the directory of ToolHive's module source at VERSION (default v0.66.0), its
# CRDs, docs and example manifests, downloaded once from the Go module proxy into the
# module cache. Its go.mod needs Go 1.27: the go command fetches that toolchain itself
# (about 76 MB, once per machine). Nothing is built.
#
#   scripts/upstream-source.sh [VERSION]
set -euo pipefail
version=${1:-v0.66.0}
export GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN_FOR_REFERENCE:-go1.27.3}
cd "$(mktemp -d)"
dir=$(go mod download -json "github.com/stacklok/toolhive@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "upstream-source: github.com/stacklok/toolhive@$version could not be downloaded" >&2; exit 1; }
echo "$dir"
