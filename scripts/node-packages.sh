#!/usr/bin/env bash
# Installs, from Debian packages, what the project's test node runs on (once):
# containerd + runc, the CNI plugins, nftables (kube-proxy), umoci + skopeo
# (offline image assembly), Prometheus (scrapes the operator), musl-tools (the
# operator image's static binary), Redis (session storage and rate limits in
# real_pods, reached by the pods on the node's bridge). Needs root, as the node itself does.
set -euo pipefail
need=()
for pair in containerd:containerd ctr:containerd runc:runc nft:nftables umoci:umoci skopeo:skopeo ip:iproute2 prometheus:prometheus musl-gcc:musl-tools redis-server:redis-server; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ ${#need[@]} -eq 0 ] && exit 0
echo "[node-packages] installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}
