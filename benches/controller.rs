//! Controller benchmark (not a test): 1,000 MCPServers across 10 namespaces
//! (`BENCH_NAMESPACES`), the operator watching the cluster, or with
//! `BENCH_WATCH=namespaces` only those namespaces (namespace mode).
//!
//! Two fresh control planes (etcd + kube-apiserver, no controller-manager so nothing
//! else writes), one after the other:
//! 1. floor: a plain client creates each MCPServer, applies the same 7 children the
//!    operator would (same bodies, server-side apply) and writes the same status;
//! 2. operator: the release `toolhive-operator` binary (cluster mode, leader election,
//!    webhook serving) converges the same 1,000 MCPServers created by the bench.
//!
//! Reports converge time beside the floor as a ratio, the operator's RSS idle and
//! loaded, API writes per new MCPServer (from the API server's own request counter),
//! and the writes made during an idle period (default 300 s).
//!
//!   cargo bench --bench controller            # or: make bench-controller
//!   BENCH_SERVERS=200 BENCH_IDLE_SECS=30 cargo bench --bench controller   # quicker
//!   BENCH_WATCH=namespaces BENCH_NAMESPACES=100 cargo bench --bench controller
//!   BENCH_OPERATOR_BIN=target/x86_64-unknown-linux-musl/image/toolhive-operator ...
//!   BENCH_REFERENCE=1 ...   # then ToolHive's thv-operator (scripts/reference.sh) on a
//!                           # third control plane, same servers, same figures, ratios
//!
//! Converged: every MCPServer's `status.url` set (both operators write it once its
//! Service is made; this one writes it with the rest of its status).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::{
    api::MCPServer,
    resources::desired_children,
    status::{Observed, desired_status},
};

const RUNNER_IMAGE: &str = "ghcr.io/stacklok/toolhive/proxyrunner:bench";
const WRITE_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// What the operator watches: the cluster, or only the bench's namespaces.
#[derive(Debug, Clone, Copy)]
enum Watch {
    Cluster,
    Namespaces,
}

impl Watch {
    fn from_env() -> Self {
        match std::env::var("BENCH_WATCH").as_deref() {
            Ok("namespaces") => Watch::Namespaces,
            _ => Watch::Cluster,
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let servers = env_usize("BENCH_SERVERS", 1000);
    let idle_secs = env_usize("BENCH_IDLE_SECS", 300) as u64;
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let (namespaces, watch) = (env_usize("BENCH_NAMESPACES", 10), Watch::from_env());
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "controller benchmark: {servers} MCPServers across {namespaces} namespaces ({watch:?} mode), client concurrency {concurrency}, idle {idle_secs} s"
    );

    let floor = {
        let cp = start_control_plane();
        runtime().block_on(async {
            let client = cp.client().await.unwrap();
            install_crd(&client).await;
            let mut best = Duration::MAX;
            for c in [concurrency, concurrency * 4] {
                let t = floor_run(&cp, &client, servers, namespaces, c).await;
                println!("floor at concurrency {c}: {:.2} s", t.as_secs_f64());
                best = best.min(t);
            }
            best
        })
    };
    println!("floor (plain client, same writes, best of the above): {:.2} s", floor.as_secs_f64());

    let cp = start_control_plane();
    let report = runtime().block_on(operator_run(&cp, servers, (namespaces, watch), concurrency, idle_secs, &Side::Ours));
    drop(cp);
    let reference = std::env::var("BENCH_REFERENCE").is_ok_and(|v| v == "1").then(|| {
        let cp = start_control_plane();
        let side = Side::reference();
        runtime().block_on(operator_run(&cp, servers, (namespaces, watch), concurrency, idle_secs, &side))
    });
    println!();
    println!("| figure ({servers} MCPServers in {namespaces} namespaces, {watch:?} mode) | this operator | reference | reference / this |");
    println!("|---|---|---|---|");
    println!("| floor: plain client writes the same objects | {:.2} s | | |", floor.as_secs_f64());
    let row = |figure: &str, unit: &str, ours: f64, theirs: Option<f64>| {
        let (theirs, ratio) = match theirs {
            Some(t) => (format!("{t:.2}{unit}"), format!("{:.2}x", t / ours)),
            None => (String::new(), String::new()),
        };
        println!("| {figure} | {ours:.2}{unit} | {theirs} | {ratio} |");
    };
    let r = reference.as_ref();
    row("create to all converged", " s", report.converge.as_secs_f64(), r.map(|r| r.converge.as_secs_f64()));
    row(
        "converged / floor",
        "x",
        report.converge.as_secs_f64() / floor.as_secs_f64(),
        r.map(|r| r.converge.as_secs_f64() / floor.as_secs_f64()),
    );
    row("RSS idle (0 MCPServers)", " MiB", report.rss_idle, r.map(|r| r.rss_idle));
    row(&format!("RSS with {servers} MCPServers"), " MiB", report.rss_loaded, r.map(|r| r.rss_loaded));
    row("RSS peak", " MiB", report.rss_peak, r.map(|r| r.rss_peak));
    row("RSS after the idle period", " MiB", report.rss_after_idle, r.map(|r| r.rss_after_idle));
    row(
        "API writes per new MCPServer (excl. the user's create and IP allocation)",
        "",
        report.writes_per_server,
        r.map(|r| r.writes_per_server),
    );
    row(&format!("writes in {idle_secs} idle s (excl. leases)"), "", report.idle_writes as f64, r.map(|r| r.idle_writes as f64));
    row(&format!("lease writes in {idle_secs} idle s"), "", report.idle_lease_writes as f64, r.map(|r| r.idle_lease_writes as f64));
    for (who, report) in std::iter::once(("this operator", &report)).chain(r.map(|r| ("reference", r))) {
        println!();
        println!("{who}: writes while converging (verb resource/subresource: count):");
        for (k, v) in &report.breakdown {
            println!("  {k}: {v}");
        }
    }
}

/// Which operator a run measures.
enum Side {
    /// This operator: the release build, or `BENCH_OPERATOR_BIN`.
    Ours,
    /// ToolHive's thv-operator and the directory of its CRDs (`scripts/reference.sh`).
    Reference { bin: std::path::PathBuf, crds: std::path::PathBuf },
}

impl Side {
    fn reference() -> Self {
        let (bin, crds) = controlplane::reference_build();
        Side::Reference { bin, crds }
    }
}

/// The reference's own CRDs (its chart's files), as its chart installs them.
async fn install_reference_crds(client: &Client, dir: &std::path::Path) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut served = Vec::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
            let created = crds.create(&PostParams::default(), &crd).await.unwrap();
            served.push(created);
        }
    }
    // It sets up every kind at start and stops on one not served yet: wait for each
    // version of each to list.
    for crd in &served {
        for version in crd.spec.versions.iter().filter(|v| v.served) {
            let resource = kube::core::ApiResource {
                group: crd.spec.group.clone(),
                version: version.name.clone(),
                api_version: format!("{}/{}", crd.spec.group, version.name),
                kind: crd.spec.names.kind.clone(),
                plural: crd.spec.names.plural.clone(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let mut listed = false;
            for _ in 0..300 {
                if api.list_metadata(&ListParams::default().limit(1)).await.is_ok() {
                    listed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(listed, "{} {} never served", resource.api_version, resource.plural);
        }
    }
    // And discovery: its REST mapper reads the aggregated discovery documents.
    tokio::time::sleep(Duration::from_secs(5)).await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn start_control_plane() -> controlplane::ControlPlane {
    controlplane::ControlPlane::start(controlplane::Options { controller_manager: false, dir: None, node: false }).expect("control plane")
}

/// Every CRD of the CRDs chart: the operator watches each kind.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in toolhive_operator::kinds::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    wait_served(client).await;
}

async fn wait_served(client: &Client) {
    let servers: Api<MCPServer> = Api::all(client.clone());
    for _ in 0..100 {
        if servers.list_metadata(&ListParams::default().limit(1)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD never served");
}

async fn namespaces(cp: &controlplane::ControlPlane, client: &Client, prefix: &str, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(cp.namespace(client, prefix).await.unwrap());
    }
    out
}

fn server(ns: &str, i: usize) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": format!("mcp-{i}"), "namespace": ns},
        "spec": {"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http", "mcpPort": 8080, "proxyPort": 8080}
    }))
    .unwrap()
}

fn placement(namespaces: &[String], i: usize) -> &str {
    &namespaces[i % namespaces.len()]
}

/// The floor: what a plain client needs to create the MCPServers, then apply their
/// children and write their status (same bodies as the operator's), every write in
/// flight with up to `concurrency` others.
async fn floor_run(cp: &controlplane::ControlPlane, client: &Client, n: usize, spread: usize, concurrency: usize) -> Duration {
    let nss = Arc::new(namespaces(cp, client, "floor", spread).await);
    let start = Instant::now();
    let created: Vec<MCPServer> = stream::iter(0..n)
        .map(|i| {
            let api: Api<MCPServer> = Api::namespaced(client.clone(), placement(&nss, i));
            let obj = server(placement(&nss, i), i);
            async move { api.create(&PostParams::default(), &obj).await.unwrap() }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let writes = created.iter().flat_map(|s| {
        let ns = s.namespace().unwrap();
        let children =
            desired_children(s, &toolhive_operator::kinds::mcpserver::resources::ProxySettings::new(RUNNER_IMAGE), &Default::default())
                .unwrap()
                .into_iter()
                .map({
                    let ns = ns.clone();
                    move |child| {
                        let (resource, body) = child.dynamic();
                        let name = child.name().to_string();
                        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
                        async move {
                            api.patch(&name, &PatchParams::apply("floor").force(), &Patch::Apply(&body)).await.unwrap();
                        }
                        .boxed()
                    }
                });
        let status = desired_status(s, &Observed::default(), Time(jiff::Timestamp::now()));
        let body = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "status": status});
        let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns);
        let name = s.name_any();
        let status_write = async move {
            api.patch_status(&name, &PatchParams::apply("floor").force(), &Patch::Apply(&body)).await.unwrap();
        }
        .boxed();
        children.chain(std::iter::once(status_write))
    });
    stream::iter(writes).buffer_unordered(concurrency).collect::<()>().await;
    start.elapsed()
}

struct Report {
    converge: Duration,
    rss_idle: f64,
    rss_loaded: f64,
    rss_peak: f64,
    rss_after_idle: f64,
    writes_per_server: f64,
    idle_writes: u64,
    idle_lease_writes: u64,
    breakdown: BTreeMap<String, u64>,
}

struct OperatorProcess(std::process::Child);
impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Write requests the API server has served so far, by "VERB resource[/subresource]".
async fn api_writes(client: &Client) -> BTreeMap<String, u64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let label = |k: &str| series.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
        let verb = label("verb");
        if !WRITE_VERBS.contains(&verb.as_str()) {
            continue;
        }
        let sub = label("subresource");
        let key = if sub.is_empty() { format!("{verb} {}", label("resource")) } else { format!("{verb} {}/{sub}", label("resource")) };
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

fn split_leases(d: &BTreeMap<String, u64>) -> (u64, u64) {
    let leases: u64 = d.iter().filter(|(k, _)| k.ends_with(" leases")).map(|(_, v)| v).sum();
    let total: u64 = d.values().sum();
    (total - leases, leases)
}

/// `scope`: how many namespaces the servers are spread over, and what the operator watches.
async fn operator_run(
    cp: &controlplane::ControlPlane,
    n: usize,
    scope: (usize, Watch),
    concurrency: usize,
    idle_secs: u64,
    side: &Side,
) -> Report {
    let client = cp.client().await.unwrap();
    match side {
        Side::Ours => install_crd(&client).await,
        Side::Reference { crds, .. } => install_reference_crds(&client, crds).await,
    }
    let nss = Arc::new(namespaces(cp, &client, "team", scope.0).await);
    let system = cp.namespace(&client, "toolhive-system").await.unwrap();

    // A serving certificate so the webhook runs as in production.
    let ca = controlplane::Authority::new("bench-webhook-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    let certs = cp.dir.join("webhook-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(certs.join("tls.key"), &pair.key_pem).unwrap();
    let port = || controlplane::free_port().unwrap();
    let health = port();
    // BENCH_OPERATOR_BIN measures another build (e.g. the image's static musl binary).
    let bin = match side {
        Side::Ours => std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_toolhive-operator").into()).into(),
        Side::Reference { bin, .. } => bin.clone(),
    };
    println!("operator binary: {}", bin.display());
    let mut command = std::process::Command::new(bin);
    command.args([
        "--leader-elect".to_string(),
        format!("--metrics-bind-address=127.0.0.1:{}", port()),
        format!("--health-probe-bind-address=127.0.0.1:{health}"),
    ]);
    match side {
        Side::Ours => {
            command.args([format!("--webhook-bind-address=127.0.0.1:{}", port()), format!("--webhook-cert-dir={}", certs.display())]);
        }
        // Its usage-metrics middleware depends on its environment; off, as in the
        // differential test (its own switch).
        Side::Reference { .. } => {
            command.env("TOOLHIVE_USAGE_METRICS_ENABLED", "false");
        }
    }
    command
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("POD_NAMESPACE", &system)
        .env_remove("WATCH_NAMESPACE")
        .env("TOOLHIVE_RUNNER_IMAGE", RUNNER_IMAGE)
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::fs::File::create(std::env::temp_dir().join("bench-operator.log")).unwrap())
        .stderr(std::process::Stdio::inherit());
    if let Watch::Namespaces = scope.1 {
        command.env("WATCH_NAMESPACE", nss.join(","));
    }
    let child = command.spawn().unwrap();
    let op = OperatorProcess(child);
    let pid = op.0.id();
    wait_ready(health).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = rss_mib(pid, "VmRSS:");

    // Count converged servers from a watch, so the end is seen when it happens.
    // Read as the API serves it: the reference's status is not this operator's type.
    let servers_all: Api<DynamicObject> = Api::all_with(client.clone(), &kube::core::ApiResource::erase::<MCPServer>(&()));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let watch = tokio::spawn(async move {
        let mut converged = HashSet::new();
        let mut done_tx = Some(done_tx);
        let mut events = watcher(servers_all, watcher::Config::default()).applied_objects().boxed();
        while let Some(s) = events.try_next().await.unwrap() {
            let ok = s.data.pointer("/status/url").and_then(serde_json::Value::as_str).is_some_and(|url| !url.is_empty());
            if ok {
                converged.insert((s.namespace().unwrap(), s.name_any()));
            }
            if converged.len() == n
                && let Some(tx) = done_tx.take()
            {
                let _ = tx.send(Instant::now());
                return;
            }
        }
    });

    let before = api_writes(&client).await;
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let nss = nss.clone();
            async move {
                let ns = placement(&nss, i);
                Api::<MCPServer>::namespaced(client, ns).create(&PostParams::default(), &server(ns, i)).await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<()>()
        .await;
    let end = tokio::time::timeout(Duration::from_secs(1800), done_rx).await.expect("converged within 30 min").unwrap();
    let converge = end - start;
    watch.abort();
    let rss_loaded = rss_mib(pid, "VmRSS:");
    let rss_peak = rss_mib(pid, "VmHWM:");

    // Let trailing watch-triggered reconciles (no-ops) settle before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = api_writes(&client).await;
    let breakdown = delta(&after, &before);
    let (writes, _) = split_leases(&breakdown);
    let user_creates = breakdown.get("POST mcpservers").copied().unwrap_or(0);
    // A Service's ClusterIP is recorded by the API server itself (IPAddress objects).
    let ip_allocations = breakdown.get("POST ipaddresses").copied().unwrap_or(0);
    let writes_per_server = (writes - user_creates - ip_allocations) as f64 / n as f64;

    // Every child is there (this operator's: the reference makes others).
    if let Side::Ours = side {
        every_child_is_there(&client, n).await;
    }

    println!("converged in {:.2} s; idle for {idle_secs} s ...", converge.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle = delta(&api_writes(&client).await, &after);
    let (idle_writes, idle_lease_writes) = split_leases(&idle);
    if idle_writes > 0 {
        println!("writes during the idle period: {idle:?}");
    }
    let rss_after_idle = rss_mib(pid, "VmRSS:");
    drop(op);
    Report { converge, rss_idle, rss_loaded, rss_peak, rss_after_idle, writes_per_server, idle_writes, idle_lease_writes, breakdown }
}

async fn every_child_is_there(client: &Client, n: usize) {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    };
    use kube::core::ApiResource;
    for (kind, resource) in [
        ("ConfigMap", ApiResource::erase::<ConfigMap>(&())),
        ("ServiceAccount", ApiResource::erase::<ServiceAccount>(&())),
        ("Role", ApiResource::erase::<Role>(&())),
        ("RoleBinding", ApiResource::erase::<RoleBinding>(&())),
        ("Deployment", ApiResource::erase::<Deployment>(&())),
        ("Service", ApiResource::erase::<Service>(&())),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let count = api.list_metadata(&ListParams::default().labels("toolhive=true")).await.unwrap().items.len();
        let expected = if kind == "ServiceAccount" { 2 * n } else { n };
        assert_eq!(count, expected, "{kind} children");
    }
}

async fn wait_ready(port: u16) {
    for _ in 0..600 {
        let status = tokio::task::spawn_blocking(move || controlplane::http_status(port, "/readyz")).await.unwrap();
        if status == Some(200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = controlplane::http_get_plain(port, "/readyz").unwrap_or_default();
    let log = std::fs::read_to_string(std::env::temp_dir().join("bench-operator.log")).unwrap_or_default();
    panic!("operator never became ready ({last}); its log:\n{log}");
}
