//! Webhook attack benchmark (not a test): what a client that reaches the webhook port
//! can make the operator process hold. The release operator runs against a fresh
//! control plane (namespace mode, one namespace, webhook serving); a client that is
//! not the API server then sends, phase by phase:
//! 1. four 7 MiB AdmissionReviews of tiny JSON values at once; 2. thirty-two at once
//!    (7 MiB: the largest the API server can send, object and oldObject near its
//!    3 MiB request limit each), then thirty-two of long strings;
//! 3. 64 slow bodies (7 MiB declared, 1 KiB a second); 4. 1,000 connections left idle;
//! 5. with `--webhook-client-ca` (only the API server's certificate is served): 2 again.
//!
//! For each: peak RSS over the phase (VmHWM, reset before it), RSS before, the
//! answers by status, and how long a small review sent meanwhile from another address
//! (as the API server is) took.
//!
//!   cargo bench --bench webhook_attack     # or: make bench-webhook-attack
//!   BENCH_OPERATOR_BIN=/path/to/other/toolhive-operator cargo bench --bench webhook_attack

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, api::PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolhive_operator::kinds;

const MIB: usize = 1024 * 1024;
const PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-mcpserver";

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("BENCH_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_toolhive-operator").into());
    let has_client_auth = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--webhook-client-ca"));
    println!("webhook attack benchmark: operator {bin}");
    let cp = controlplane::ControlPlane::start(controlplane::Options { controller_manager: false, dir: None, node: false })
        .expect("control plane");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rows = rt.block_on(run(&cp, &bin, has_client_auth));
    println!();
    println!("| attack (from a client that is not the API server) | RSS before | peak RSS | answers | small review meanwhile |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} | {:.1} MiB | {:.1} MiB | {} | {} |", r.name, r.before, r.peak, r.answers, r.meanwhile);
    }
}

struct Row {
    name: String,
    before: f64,
    peak: f64,
    answers: String,
    meanwhile: String,
}

struct Webhook {
    child: std::process::Child,
    port: u16,
    connector: tokio_rustls::TlsConnector,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(cp: &controlplane::ControlPlane, bin: &str, has_client_auth: bool) -> Vec<Row> {
    let client = cp.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in kinds::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let team = cp.namespace(&client, "attack-team").await.unwrap();
    let system = cp.namespace(&client, "attack-system").await.unwrap();
    let tiny_values = review(&team, 7 * MIB - 64 * 1024, Values::Tiny);
    let long_strings = review(&team, 7 * MIB - 64 * 1024, Values::Long);
    let small = review(&team, 0, Values::Tiny);

    let mut rows = Vec::new();
    let webhook = start(cp, bin, &team, &system, None).await;
    rows.push(flood(&webhook, "4 reviews of 7 MiB of tiny values at once", 4, &tiny_values, &small).await);
    rows.push(flood(&webhook, "32 reviews of 7 MiB of tiny values at once", 32, &tiny_values, &small).await);
    rows.push(flood(&webhook, "32 reviews of 7 MiB of long strings at once", 32, &long_strings, &small).await);
    rows.push(slow_bodies(&webhook, 64, &small).await);
    rows.push(idle_connections(&webhook, 1000, &small).await);
    drop(webhook);
    if has_client_auth {
        let webhook = start(cp, bin, &team, &system, Some(&cp.webhook_client_ca_pem)).await;
        rows.push(flood(&webhook, "32 reviews of 7 MiB at once, --webhook-client-ca set", 32, &tiny_values, &small).await);
    }
    rows
}

/// The shape of a review's padding: many tiny JSON values (the costliest to parse),
/// or a few long strings.
#[derive(Clone, Copy)]
enum Values {
    Tiny,
    Long,
}

/// A CREATE review of an MCPServer whose spec carries `padding` bytes of env entries.
fn review(namespace: &str, padding: usize, shape: Values) -> Arc<Vec<u8>> {
    let entry = |i: usize, value: &str| serde_json::json!({"name": format!("V{i:08}"), "value": value});
    let env: Vec<serde_json::Value> = match shape {
        Values::Tiny => (0..padding / r#"{"name":"V00000000","value":"0123456789"},"#.len()).map(|i| entry(i, "0123456789")).collect(),
        Values::Long => (0..padding / (64 * 1024 + 40)).map(|i| entry(i, &"x".repeat(64 * 1024))).collect(),
    };
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "attack", "operation": "CREATE", "namespace": namespace, "userInfo": {},
            "kind": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"},
            "resource": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"},
            "object": {"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "metadata": {"name": "s", "namespace": namespace},
                       "spec": {"image": "ghcr.io/acme/tool", "env": env}}}
    })
    .to_string();
    let head = format!("POST {PATH} HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    Arc::new([head.into_bytes(), body.into_bytes()].concat())
}

async fn start(cp: &controlplane::ControlPlane, bin: &str, team: &str, system: &str, client_ca: Option<&str>) -> Webhook {
    let ca = controlplane::Authority::new("attack-webhook-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    let dir = cp.dir.join(format!("attack-{}", controlplane::free_port().unwrap()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
    let (port, health) = (controlplane::free_port().unwrap(), controlplane::free_port().unwrap());
    let mut command = std::process::Command::new(bin);
    command
        .args([
            format!("--metrics-bind-address=127.0.0.1:{}", controlplane::free_port().unwrap()),
            format!("--health-probe-bind-address=127.0.0.1:{health}"),
            format!("--webhook-bind-address=127.0.0.1:{port}"),
            format!("--webhook-cert-dir={}", dir.display()),
        ])
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("POD_NAMESPACE", system)
        .env("WATCH_NAMESPACE", team)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    if let Some(pem) = client_ca {
        std::fs::write(dir.join("client-ca.crt"), pem).unwrap();
        command.arg(format!("--webhook-client-ca={}", dir.join("client-ca.crt").display()));
    }
    let child = command.spawn().unwrap();
    for _ in 0..600 {
        if controlplane::http_status(health, "/readyz") == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config(&ca.cert_pem()).unwrap()));
    Webhook { child, port, connector }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(w: &Webhook) -> std::io::Result<Tls> {
    connect_from(w, std::net::Ipv4Addr::LOCALHOST).await
}

/// A connection from `source`: the attack comes from 127.0.0.1, the small review sent
/// meanwhile from 127.0.0.2 (the API server is another peer than the attacker).
async fn connect_from(w: &Webhook, source: std::net::Ipv4Addr) -> std::io::Result<Tls> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(([127, 0, 0, 1], w.port).into()).await?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    w.connector.connect(name, tcp).await
}

/// Sends `request` on a new connection; the status code, or what went wrong.
async fn send(w: &Webhook, request: &[u8]) -> String {
    send_from(w, std::net::Ipv4Addr::LOCALHOST, request).await
}

async fn send_from(w: &Webhook, source: std::net::Ipv4Addr, request: &[u8]) -> String {
    let mut tls = match connect_from(w, source).await {
        Ok(t) => t,
        Err(_) => return "refused in handshake".into(),
    };
    if tls.write_all(request).await.is_err() {
        return "connection closed while sending".into();
    }
    let mut head = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(60), tls.read(&mut head)).await {
        Ok(Ok(n)) if n > 12 => String::from_utf8_lossy(&head[9..12]).to_string(),
        Ok(_) => "closed without an answer".into(),
        Err(_) => "no answer in 60 s".into(),
    }
}

fn pid(w: &Webhook) -> u32 {
    w.child.id()
}

fn status_kib(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// RSS now (MiB), after resetting the peak so VmHWM covers only what follows.
fn reset_peak(pid: u32) -> f64 {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    status_kib(pid, "VmRSS:") / 1024.0
}

fn tally(codes: Vec<String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in codes {
        *counts.entry(c).or_default() += 1;
    }
    counts.iter().map(|(c, n)| format!("{n} x {c}")).collect::<Vec<_>>().join(", ")
}

/// One small review on a new connection while the attack runs: its status and time.
async fn meanwhile(w: &Webhook, small: &[u8]) -> String {
    let start = Instant::now();
    let code = send_from(w, std::net::Ipv4Addr::new(127, 0, 0, 2), small).await;
    format!("{code} in {} ms", start.elapsed().as_millis())
}

async fn flood(w: &Webhook, name: &str, n: usize, big: &Arc<Vec<u8>>, small: &[u8]) -> Row {
    let before = reset_peak(pid(w));
    let sends: Vec<_> = (0..n).map(|_| send(w, big)).collect();
    let (codes, probe) = tokio::join!(futures::future::join_all(sends), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        meanwhile(w, small).await
    });
    Row { name: name.into(), before, peak: status_kib(pid(w), "VmHWM:") / 1024.0, answers: tally(codes), meanwhile: probe }
}

async fn slow_bodies(w: &Webhook, n: usize, small: &[u8]) -> Row {
    let before = reset_peak(pid(w));
    let declared = 7 * MIB - 64 * 1024;
    let head = format!("POST {PATH} HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n");
    let trickle = |mut tls: Tls| {
        let head = head.clone();
        async move {
            let _ = tls.write_all(head.as_bytes()).await;
            for _ in 0..15 {
                if tls.write_all(&[b' '; 1024]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut answer = vec![0u8; 64];
            match tls.read(&mut answer).await {
                Ok(n) if n > 12 => String::from_utf8_lossy(&answer[9..12]).to_string(),
                _ => "closed without an answer".into(),
            }
        }
    };
    let mut tasks = Vec::new();
    for _ in 0..n {
        match connect(w).await {
            Ok(tls) => tasks.push(tokio::spawn(trickle(tls))),
            Err(_) => tasks.push(tokio::spawn(async { "refused in handshake".to_string() })),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probe = meanwhile(w, small).await;
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    Row {
        name: format!("{n} slow bodies (7 MiB declared, 1 KiB/s)"),
        before,
        peak: status_kib(pid(w), "VmHWM:") / 1024.0,
        answers: tally(codes),
        meanwhile: probe,
    }
}

async fn idle_connections(w: &Webhook, n: usize, small: &[u8]) -> Row {
    let before = reset_peak(pid(w));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match connect(w).await {
            Ok(tls) => held.push(tls),
            Err(_) => refused += 1,
        }
    }
    let probe = meanwhile(w, small).await;
    let peak = status_kib(pid(w), "VmHWM:") / 1024.0;
    drop(held);
    Row {
        name: format!("{n} connections opened and left idle"),
        before,
        peak,
        answers: format!("{} handshakes completed, {refused} refused", n - refused),
        meanwhile: probe,
    }
}
