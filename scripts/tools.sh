#!/usr/bin/env bash
# Builds the pinned control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) and helm from the Go module proxy into a
# cache keyed by version, and prints the bin directory. Skips what is present.
#
#   scripts/tools.sh          build what is missing, print the bin dir
#   scripts/tools.sh --node   also what a node needs (kubelet, kube-proxy,
#                             kube-scheduler, CoreDNS; see scripts/node-tools.sh)
#   scripts/tools.sh --print  print the bin dir only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
cache=${TOOLHIVE_CACHE:-$HOME/.cache/toolhive-operator}
bin="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
if [ "${1:-}" = "--print" ]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
log() { echo "[tools] $*" >&2; }

k8s_major=${K8S_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_minor=${K8S_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}

build_k8s() {
  local name=$1
  [ -x "$bin/$name" ] && return 0
  log "building $name $K8S_VERSION (cold: several minutes)"
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$root/tests/tools/k8s" && go build -trimpath -tags selinux,notest \
     -ldflags "-s -w$ld" -o "$bin/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$bin/$name.tmp" "$bin/$name"
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  (cd "$root/tests/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_helm() {
  [ -x "$bin/helm" ] && return 0
  log "building helm $HELM_VERSION"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  (cd "$root/tests/tools/helm" && go build -trimpath -ldflags "$ld" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$bin/helm.tmp" "$bin/helm"
}

start=$(date +%s)
build_etcd
build_helm
build_k8s kube-apiserver
build_k8s kube-controller-manager
build_k8s kubectl
if [ "${1:-}" = "--node" ]; then
  build_k8s kubelet
  build_k8s kube-proxy
  build_k8s kube-scheduler
fi
log "tools ready in $(( $(date +%s) - start ))s: $bin"
echo "$bin"
