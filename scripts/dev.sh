#!/usr/bin/env bash
# `make dev`: on the local control plane, install both charts and run an example
# MCPServer.
# - With a node (the default: `make controlplane` starts one): the operator's image
#   is built and imported, both charts are installed as the guide says (the operator
#   a pod of the chart's Deployment), the example memory MCPServer is applied, and
#   once Ready an MCP client lists its tools and calls two through status.url.
# - Without one (NODE=0): the operator runs on the host as the chart's
#   ServiceAccount with the webhook on 127.0.0.1 (namespace mode), and the example
#   MCPServer's objects are shown (its pods stay Pending).
# `make dev-down` stops everything.
set -euo pipefail
cp_dir=${1:?control plane dir}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$("$root/scripts/tools.sh" --print)
kc="$cp_dir/kubeconfig"
k() { "$bin/kubectl" --kubeconfig "$kc" "$@"; }
h() { HOME="$cp_dir" "$bin/helm" --kubeconfig "$kc" "$@"; }
ns=toolhive-system
team=team-demo

# Applies a sample into $team. Right after the install the API server may not yet
# give a new kind to the in-process defaults policy ("...not found. There can be a
# delay"), or kube-proxy may not yet route the webhook Service: both are retried,
# anything else is an error.
apply_sample() {
  for _ in $(seq 1 30); do
    k apply -n "$team" -f "$root/config/samples/$1" 2>"$cp_dir/apply.err" && return 0
    grep -q "not found. There can be a delay\|failed calling webhook" "$cp_dir/apply.err" || { cat "$cp_dir/apply.err" >&2; exit 1; }
    sleep 1
  done
  cat "$cp_dir/apply.err" >&2; exit 1
}


if [ -S "$cp_dir/containerd/containerd.sock" ]; then
  echo "==> building the operator image and importing it into the node"
  "$root/scripts/operator-image.sh" "$cp_dir/operator-image.tar"
  ctr --address "$cp_dir/containerd/containerd.sock" --namespace k8s.io images import "$cp_dir/operator-image.tar" >/dev/null
  cargo build --quiet -p controlplane --bin mcp-call --manifest-path "$root/Cargo.toml"
  k create namespace "$team" --dry-run=client -o yaml | k apply -f - >/dev/null

  echo "==> helm upgrade -i toolhive-operator-crds"
  h upgrade -i toolhive-operator-crds "$root/deploy/charts/toolhive-operator-crds" --wait >/dev/null
  echo "==> helm upgrade -i toolhive-operator -n $ns --create-namespace (+ the dev tenancy policy)"
  h upgrade -i toolhive-operator "$root/deploy/charts/toolhive-operator" -n "$ns" --create-namespace \
    -f "$root/config/helm-values.dev.yaml" --wait --timeout 5m >/dev/null
  k -n "$ns" get pods

  echo "==> applying config/samples/mcpserver-memory.yaml in $team"
  apply_sample mcpserver-memory.yaml
  k -n "$team" wait mcpserver/memory --for=jsonpath='{.status.phase}'=Ready --timeout=5m >/dev/null
  k -n "$team" get mcpservers
  k -n "$team" get pods
  echo "==> an MCP client through status.url"
  "$root/target/debug/mcp-call" --kubeconfig "$kc" -n "$team" memory --tool create_entities \
    --arguments '{"entities":[{"name":"toolhive-operator","entityType":"operator","observations":["runs MCP servers"]}]}'
  "$root/target/debug/mcp-call" --kubeconfig "$kc" -n "$team" memory --tool read_graph | tail -1
  # Prometheus (started with the node) scrapes the chart's metrics Service.
  svc_ip=$(k -n "$ns" get service toolhive-operator-metrics -o jsonpath='{.spec.clusterIP}')
  echo "[{\"targets\": [\"$svc_ip:8080\"], \"labels\": {\"service\": \"toolhive-operator-metrics\"}}]" > "$cp_dir/prometheus-targets.json"
  prom="http://127.0.0.1:$(cat "$cp_dir/prometheus-port")"
  for _ in $(seq 1 60); do
    curl -sf "$prom/api/v1/query?query=toolhive_mcpservers" | grep -q '"phase":"Ready"' && break; sleep 1
  done
  echo "==> Prometheus ($prom): toolhive_mcpservers"
  curl -sf "$prom/api/v1/query?query=toolhive_mcpservers" | python3 -c 'import json,sys; [print("  ", r["metric"].get("namespace"), r["metric"].get("phase"), r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'
  echo
  echo "kubectl: $bin/kubectl --kubeconfig $kc"
  echo "operator logs: kubectl -n $ns logs deploy/toolhive-operator   Prometheus: $prom   Grafana dashboard: deploy/grafana/toolhive-operator.json"
  exit 0
fi

cargo build --quiet --bin toolhive-operator --manifest-path "$root/Cargo.toml"
k create namespace "$team" --dry-run=client -o yaml | k apply -f - >/dev/null

echo "==> installing the CRDs chart"
h upgrade -i toolhive-operator-crds "$root/deploy/charts/toolhive-operator-crds" --wait >/dev/null
k get crd | grep toolhive

# Webhook certificate for 127.0.0.1, issued by a local CA the chart puts in caBundle.
certs="$cp_dir/webhook-certs"; mkdir -p "$certs"
if [ ! -f "$certs/tls.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=toolhive-dev-webhook" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$certs/tls.key" -out "$certs/tls.crt" 2>/dev/null
fi
port=${WEBHOOK_PORT:-19443}

echo "==> installing the operator chart (namespace mode: $team)"
h upgrade -i toolhive-operator "$root/deploy/charts/toolhive-operator" -n "$ns" --create-namespace \
  --set operator.rbac.scope=namespace --set "operator.rbac.allowedNamespaces={$team}" \
  --set webhook.url="https://127.0.0.1:$port" --set-file webhook.caBundle="$certs/tls.crt" \
  -f "$root/config/helm-values.dev.yaml" >/dev/null
k get rolebinding --all-namespaces | grep toolhive

# The operator as the chart's ServiceAccount: only the chart's RBAC applies.
sa_kc="$cp_dir/kubeconfig-operator"
sed "s|    client-key-data:|    as: system:serviceaccount:$ns:toolhive-operator\n    as-groups: [system:serviceaccounts, system:serviceaccounts:$ns, system:authenticated]\n    client-key-data:|" "$kc" > "$sa_kc"
k -n "$ns" get configmap toolhive-operator-tenancy-policy -o jsonpath='{.data.tenancy-policy\.yaml}' > "$cp_dir/tenancy-policy.yaml"
if [ -f "$cp_dir/operator.pid" ]; then kill "$(cat "$cp_dir/operator.pid")" 2>/dev/null || true; sleep 1; fi
KUBECONFIG="$sa_kc" POD_NAMESPACE="$ns" WATCH_NAMESPACE="$team" UNSTRUCTURED_LOGS=true \
  nohup "$root/target/debug/toolhive-operator" --leader-elect \
    --metrics-bind-address=127.0.0.1:18080 --health-probe-bind-address=127.0.0.1:18081 \
    --webhook-bind-address="127.0.0.1:$port" --webhook-cert-dir="$certs" \
    --tenancy-policy="$cp_dir/tenancy-policy.yaml" > "$cp_dir/operator.log" 2>&1 &
echo $! > "$cp_dir/operator.pid"
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:18081/readyz >/dev/null || { tail -20 "$cp_dir/operator.log"; exit 1; }

echo "==> applying config/samples/mcpserver-osv.yaml in $team"
apply_sample mcpserver-osv.yaml
for _ in $(seq 1 50); do [ -n "$(k -n "$team" get mcpserver osv -o jsonpath='{.status.url}')" ] && break; sleep 0.2; done
k -n "$team" get mcpservers
k -n "$team" get deploy,svc,cm,sa,role,rolebinding -l toolhive-name=osv
echo
echo "operator log: $cp_dir/operator.log   metrics: curl http://127.0.0.1:18080/metrics"
echo "kubectl: $bin/kubectl --kubeconfig $kc   (pods stay Pending: this control plane has no node)"
