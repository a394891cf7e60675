#!/usr/bin/env bash
# Pod start latency of an MCPServer, create -> phase Ready (the proxy runner's pod
# ready, which the runner reaches once the MCP server's StatefulSet is ready), on the
# node `make dev` runs. Twenty servers one after another (each alone on the node),
# then twenty created at once (across four namespaces: `make dev`'s tenancy policy
# allows five MCPServers per namespace). Prints each latency and the median, p90 and max.
#
#   make dev && scripts/bench-pod-start.sh [COUNT]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-20}
spaces=(bench-pods-1 bench-pods-2 bench-pods-3 bench-pods-4)
kubectl="$("$root/scripts/tools.sh" --print)/kubectl --kubeconfig ${CP_DIR:-$root/.controlplane}/kubeconfig"
image=localhost/toolhive-node/mcp-memory:v1.8.0

now_ms() { date +%s%3N; }
manifest() { # name namespace
  cat <<EOF
apiVersion: toolhive.stacklok.dev/v1beta1
kind: MCPServer
metadata: {name: $1, namespace: $2}
spec: {image: $image, transport: streamable-http, mcpPort: 8080, args: ["-http", ":8080"]}
---
EOF
}
ready_names() { $kubectl get mcpservers -A -o jsonpath='{range .items[?(@.status.phase=="Ready")]}{.metadata.name}{"\n"}{end}'; }
# wait_ready START NAME...: prints "name ms" as each becomes Ready (polled every 200 ms).
wait_ready() {
  local start=$1; shift
  declare -A pending; for n in "$@"; do pending[$n]=1; done
  local deadline=$(( $(now_ms) + 300000 ))
  while [ ${#pending[@]} -gt 0 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "timed out waiting for: ${!pending[*]}" >&2; exit 1; }
    for n in $(ready_names); do
      if [ -n "${pending[$n]:-}" ]; then echo "$n $(( $(now_ms) - start ))"; unset "pending[$n]"; fi
    done
    sleep 0.2
  done
}
summary() { # label, latencies on stdin
  sort -n | awk -v label="$1" '{v[NR]=$1} END {
    printf "%s: n=%d median=%d ms p90=%d ms max=%d ms\n", label, NR, v[int((NR+1)/2)], v[int(NR*0.9+0.999)], v[NR] }'
}
cleanup() { $kubectl delete namespace "${spaces[@]}" --wait=true >/dev/null 2>&1 || true; }

cleanup
for ns in "${spaces[@]}"; do $kubectl create namespace "$ns" >/dev/null; done
trap cleanup EXIT

echo "== one at a time" >&2
sequential=()
for i in $(seq 1 "$count"); do
  name=seq-$i
  start=$(now_ms)
  manifest $name "${spaces[0]}" | $kubectl apply -f - >/dev/null
  line=$(wait_ready "$start" $name)
  echo "  $line" >&2
  sequential+=("${line#* }")
  $kubectl -n "${spaces[0]}" delete mcpserver $name --wait=true >/dev/null
done
printf '%s\n' "${sequential[@]}" | summary "create -> Ready, one at a time"

echo "== $count at once" >&2
names=(); for i in $(seq 1 "$count"); do names+=(burst-$i); done
start=$(now_ms)
for i in "${!names[@]}"; do manifest "${names[$i]}" "${spaces[$((i % 4))]}"; done | $kubectl apply -f - >/dev/null
# (each line to stderr as it comes: `tee /dev/stderr` would truncate a redirected log)
wait_ready "$start" "${names[@]}" | while read -r line; do echo "  $line" >&2; echo "${line#* }"; done | summary "create -> Ready, $count at once"
