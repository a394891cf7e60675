//! Scope benchmark (not a test): what the operator costs per watched namespace, and
//! how fast a rolling update hands leadership over.
//!
//! 1. Namespace mode, idle: a fresh control plane (etcd + kube-apiserver), every CRD,
//!    BENCH_NAMESPACES allowed namespaces (default 100) and no MCPServer; the release
//!    operator (leader election, webhook serving) watching them. Reports its RSS and
//!    the watches it holds open, counted by the API server itself
//!    (`apiserver_longrunning_requests{verb="WATCH"}`), per resource and per scope.
//! 2. Handover: two replicas in cluster mode; the leader gets SIGTERM (as a rolling
//!    update sends); reports the time until the other replica leads.
//!
//!   cargo bench --bench scopes               # or: make bench-scopes
//!   BENCH_OPERATOR_BIN=/path/to/other/toolhive-operator cargo bench --bench scopes   # another build, same figures

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use toolhive_operator::kinds::{self, mcpserver::api::MCPServer};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let namespaces = env_usize("BENCH_NAMESPACES", 100);
    let idle = Duration::from_secs(env_usize("BENCH_IDLE_SECS", 20) as u64);
    let bin = std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_toolhive-operator").into());
    println!("scope benchmark: operator {bin}; {namespaces} allowed namespaces, idle {} s", idle.as_secs());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let cp = start_control_plane();
    let (rss, watches) = rt.block_on(idle_in_namespace_mode(&cp, &bin, namespaces, idle));
    drop(cp);
    let cp = start_control_plane();
    let handover = rt.block_on(handover(&cp, &bin));

    let total: f64 = watches.values().sum();
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| allowed namespaces | {namespaces} |");
    let (rss, anon, file) = rss;
    println!("| RSS idle (no MCPServer) | {rss:.1} MiB (anonymous {anon:.1}, file-backed {file:.1}) |");
    println!("| watches open | {total} ({:.1} per scope) |", total / namespaces as f64);
    for (resource, n) in &watches {
        println!("| watches of {resource} | {n} ({:.1} per scope) |", n / namespaces as f64);
    }
    println!("| rolling update: SIGTERM to the leader until the other replica leads | {:.1} s |", handover.as_secs_f64());
}

fn start_control_plane() -> controlplane::ControlPlane {
    controlplane::ControlPlane::start(controlplane::Options { controller_manager: false, dir: None, node: false }).expect("control plane")
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in kinds::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let servers: Api<MCPServer> = Api::all(client.clone());
    for _ in 0..100 {
        if servers.list_metadata(&ListParams::default().limit(1)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("CRD never served");
}

struct OperatorProcess {
    child: std::process::Child,
    health: u16,
    metrics: u16,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> u16 {
    controlplane::free_port().unwrap()
}

/// Starts the operator with leader election and a serving webhook; `watch`: the
/// allowed namespaces (None: cluster mode).
fn start_operator(cp: &controlplane::ControlPlane, bin: &str, system: &str, watch: Option<&str>, tag: &str) -> OperatorProcess {
    let ca = controlplane::Authority::new("bench-webhook-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    let certs = cp.dir.join(format!("webhook-certs-{tag}"));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(certs.join("tls.key"), &pair.key_pem).unwrap();
    let (health, metrics) = (port(), port());
    let mut command = std::process::Command::new(bin);
    command
        .args([
            "--leader-elect".to_string(),
            format!("--metrics-bind-address=127.0.0.1:{metrics}"),
            format!("--health-probe-bind-address=127.0.0.1:{health}"),
            format!("--webhook-bind-address=127.0.0.1:{}", port()),
            format!("--webhook-cert-dir={}", certs.display()),
        ])
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("POD_NAMESPACE", system)
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::fs::File::create(std::env::temp_dir().join(format!("bench-scopes-{tag}.log"))).unwrap())
        .stderr(std::process::Stdio::inherit());
    match watch {
        Some(list) => command.env("WATCH_NAMESPACE", list),
        None => command.env_remove("WATCH_NAMESPACE"),
    };
    OperatorProcess { child: command.spawn().unwrap(), health, metrics }
}

async fn get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let ok = text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200");
    ok.then_some(text)
}

async fn wait_ready(port: u16) {
    for _ in 0..600 {
        if get(port, "/readyz").await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operator not ready: {:?}", raw_get(port, "/readyz").await);
}

async fn raw_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text)
}

async fn leads(op: &OperatorProcess) -> bool {
    let text = get(op.metrics, "/metrics").await.unwrap_or_default();
    text.lines().any(|l| l.starts_with("leader_election_master_status{") && l.trim_end().ends_with(" 1"))
}

/// The process's resident memory: total, anonymous (heap, stacks) and file-backed
/// (the binary's pages), in MiB.
fn rss_mib(pid: u32) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        let kb = text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok());
        kb.map(|kb| kb / 1024.0).unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Watches the API server holds open, by resource.
async fn open_watches(client: &Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_longrunning_requests{") && l.contains("verb=\"WATCH\"")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let resource = series.split("resource=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
        let n: f64 = value.parse().unwrap_or(0.0);
        if n > 0.0 {
            *out.entry(resource).or_default() += n;
        }
    }
    out
}

async fn idle_in_namespace_mode(
    cp: &controlplane::ControlPlane,
    bin: &str,
    count: usize,
    idle: Duration,
) -> ((f64, f64, f64), BTreeMap<String, f64>) {
    let client = cp.client().await.unwrap();
    install_crds(&client).await;
    let mut allowed = Vec::new();
    for _ in 0..count {
        allowed.push(cp.namespace(&client, "team").await.unwrap());
    }
    let system = cp.namespace(&client, "toolhive-system").await.unwrap();
    let before = open_watches(&client).await;
    let op = start_operator(cp, bin, &system, Some(&allowed.join(",")), "namespaces");
    wait_ready(op.health).await;
    for _ in 0..300 {
        if leads(&op).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(idle).await;
    let rss = rss_mib(op.child.id());
    let after = open_watches(&client).await;
    let watches =
        after.into_iter().map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect();
    (rss, watches)
}

async fn handover(cp: &controlplane::ControlPlane, bin: &str) -> Duration {
    let client = cp.client().await.unwrap();
    install_crds(&client).await;
    let system = cp.namespace(&client, "toolhive-system").await.unwrap();
    let first = start_operator(cp, bin, &system, None, "first");
    wait_ready(first.health).await;
    while !leads(&first).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = start_operator(cp, bin, &system, None, "second");
    wait_ready(second.health).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!leads(&second).await, "one leader at a time");
    let t = Instant::now();
    // SIGTERM, as the kubelet sends in a rolling update.
    let _ = std::process::Command::new("kill").args(["-TERM", &first.child.id().to_string()]).status();
    while !leads(&second).await {
        assert!(t.elapsed() < Duration::from_secs(120), "the second replica never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}
