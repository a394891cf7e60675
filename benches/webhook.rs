//! Webhook benchmark (not a test): admissions over TLS on loopback with keep-alive.
//!
//! The server gets one core (a current-thread runtime on its own OS thread); the load
//! generator runs on another. Three servers are driven the same way, one after the
//! other:
//! - webhook: the operator's validating endpoint (router, policy, metrics, its TLS
//!   server with timeouts and hot-reloadable certificate);
//! - floor: a bare axum route behind rustls that returns a fixed AdmissionReview;
//! - reference: the same bare route, but it reads the review into a JSON tree and
//!   answers with its uid (what a webhook pays before any rule if it decodes the
//!   review the usual way).
//!
//! Reports admissions/s (per server core), p50 and p99 latency and the ratio to the
//! floor.
//!
//!   cargo bench --bench webhook            # or: make bench-webhook
//!   BENCH_SECONDS=10 BENCH_CONNECTIONS=32 cargo bench --bench webhook

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{Router, routing::post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use toolhive_operator::{runtime::metrics::Metrics, shared::config::Scope, webhook};

const POLICY: &str = r##"
contact: "#platform"
defaults:
  allowedRegistries: [ghcr.io/stackloklabs, ghcr.io/acme]
  allowedTransports: [stdio, streamable-http, sse]
  maxMCPServers: 50
  proxyResources:
    defaults: {requests: {cpu: 50m, memory: 64Mi}}
    max: {cpu: "1", memory: 512Mi}
"##;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A realistic CREATE review: the docs' OSV server with resources, in a team namespace,
/// written as the API server writes it (the request's fields in its type's order; the
/// object, a map on its side, with sorted keys).
fn review_body() -> Bytes {
    let object = json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "osv", "namespace": "team-a", "labels": {"toolhive.stacklok.dev/team": "team-a"}},
        "spec": {
            "image": "ghcr.io/stackloklabs/osv-mcp/server:v0.1.0", "transport": "streamable-http",
            "mcpPort": 8080, "proxyPort": 8080, "proxyMode": "streamable-http",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "args": ["--verbose"]
        }
    });
    let request = [
        ("uid", json!("0d3c4a7e-5b7f-4b8e-9a39-0a7f2c1f6f11")),
        ("kind", json!({"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"})),
        ("resource", json!({"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"})),
        ("requestKind", json!({"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"})),
        ("requestResource", json!({"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"})),
        ("name", json!("osv")),
        ("namespace", json!("team-a")),
        ("operation", json!("CREATE")),
        ("userInfo", json!({"username": "alice", "groups": ["team-a", "system:authenticated"]})),
        ("object", object),
        ("oldObject", json!(null)),
        ("dryRun", json!(false)),
        ("options", json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"})),
    ];
    let fields: Vec<String> = request.iter().map(|(k, v)| format!("{}:{v}", json!(k))).collect();
    Bytes::from(format!(r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{{}}}}}"#, fields.join(",")))
}

struct Figures {
    per_second: f64,
    /// Server thread CPU time per admission (the whole run, warm-up included).
    cpu_per_admission: Duration,
    p50: Duration,
    p99: Duration,
    requests: usize,
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The operator's own log set-up (its per-request spans cost what they cost in
    // the process), written nowhere.
    toolhive_operator::runtime::logging::init(false, std::io::sink);
    let seconds = env_u64("BENCH_SECONDS", 5);
    let connections = env_u64("BENCH_CONNECTIONS", 16) as usize;
    let ca = controlplane::Authority::new("bench-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    println!("webhook benchmark: {connections} keep-alive connections, {seconds} s per run, two runs per server, server on 1 core");

    // The operator's webhook as it runs in the process.
    let webhook_addr = {
        let pair = pair.clone();
        serve_on_one_core("bench-webhook", move |listener| async move {
            // The same store the operator serves from; fed from memory here.
            let certs = webhook::tls::CertStore::new();
            certs.install(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
            let policy = webhook::policy::TenancyPolicy::from_text(POLICY).unwrap();
            let state = webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(|_: &str| 3), Metrics::default());
            webhook::serve_tls_on(listener, webhook::tls::server_config(certs), webhook::router(state), webhook::Limits::default())
                .await
                .unwrap();
        })
    };
    // The floor: bare axum + rustls, fixed answer.
    let floor_addr = {
        let pair = pair.clone();
        serve_on_one_core("bench-floor", move |listener| async move { bare_server(listener, &pair, Answer::Fixed).await })
    };
    // The reference: the floor plus reading the review into a JSON tree.
    let tree_addr = {
        let pair = pair.clone();
        serve_on_one_core("bench-tree", move |listener| async move { bare_server(listener, &pair, Answer::FromTree).await })
    };

    let body = review_body();
    // Alternate the two (floor, webhook, floor, webhook) and keep each one's best run,
    // so neither pays alone for whatever else the machine is doing.
    let mut ours: Option<Figures> = None;
    let mut floor: Option<Figures> = None;
    let mut tree: Option<Figures> = None;
    for _ in 0..2 {
        let f = drive(floor_addr, "/review", &body, &ca.cert_pem(), connections, seconds);
        let w = drive(webhook_addr, webhook::VALIDATE_PATH, &body, &ca.cert_pem(), connections, seconds);
        let t = drive(tree_addr, "/review", &body, &ca.cert_pem(), connections, seconds);
        let each = |f: &Figures| format!("{:.0}/s ({:.1} µs CPU each)", f.per_second, f.cpu_per_admission.as_secs_f64() * 1e6);
        println!("floor {}, webhook {}, reference {}", each(&f), each(&w), each(&t));
        floor = Some(best(floor, f));
        ours = Some(best(ours, w));
        tree = Some(best(tree, t));
    }
    let (ours, floor, tree) = (ours.unwrap(), floor.unwrap(), tree.unwrap());

    println!();
    println!(
        "| server | admissions/s (1 server core) | server CPU per admission | admissions per CPU-second | p50 | p99 | requests | throughput / floor | CPU-efficiency / floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, f) in [
        ("toolhive-operator webhook", &ours),
        ("floor: bare axum + rustls, fixed answer", &floor),
        ("reference: floor + review read into a JSON tree", &tree),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} µs | {:.0} | {:.3} ms | {:.3} ms | {} | {:.2}x | {:.2}x |",
            f.per_second,
            f.cpu_per_admission.as_secs_f64() * 1e6,
            1.0 / f.cpu_per_admission.as_secs_f64(),
            ms(f.p50),
            ms(f.p99),
            f.requests,
            f.per_second / floor.per_second,
            floor.cpu_per_admission.as_secs_f64() / f.cpu_per_admission.as_secs_f64(),
        );
    }
    println!("ratio webhook / floor: {:.2}x", ours.per_second / floor.per_second);
}

fn best(a: Option<Figures>, b: Figures) -> Figures {
    match a {
        Some(a) if a.per_second >= b.per_second => a,
        _ => b,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) the thread `tid` of this process has used so far.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Runs `serve` on a current-thread runtime in its own thread: one core's worth.
fn serve_on_one_core<F, Fut>(name: &str, serve: F) -> (SocketAddr, i32)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    // Named, so a profiler can tell the two servers apart (`perf report --comms`).
    let thread = std::thread::Builder::new().name(name.to_string());
    thread
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let tid = unsafe { libc::gettid() };
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send((listener.local_addr().unwrap(), tid)).unwrap();
                serve(listener).await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

/// What a bare server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// The same AdmissionReview every time.
    Fixed,
    /// The review read into a JSON tree, answered with its uid.
    FromTree,
}

async fn bare_server(listener: tokio::net::TcpListener, pair: &controlplane::PemPair, kind: Answer) {
    let certs = <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let allow = |uid: &str| {
        Bytes::from(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}}).to_string(),
        )
    };
    let fixed = allow("0d3c4a7e-5b7f-4b8e-9a39-0a7f2c1f6f11");
    let router = Router::new().route(
        "/review",
        post(move |body: Bytes| {
            let answer = match kind {
                Answer::Fixed => fixed.clone(),
                Answer::FromTree => {
                    let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    allow(review["request"]["uid"].as_str().unwrap_or_default())
                }
            };
            async move { ([("content-type", "application/json")], answer) }
        }),
    );
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// Drives `addr` with `connections` keep-alive HTTP/1.1 connections for `seconds`,
/// each sending the next request when the previous answer arrived.
fn drive((addr, server_tid): (SocketAddr, i32), path: &str, body: &Bytes, ca_pem: &str, connections: usize, seconds: u64) -> Figures {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config(ca_pem).unwrap()));
    let cpu_before = thread_cpu(server_tid);
    let mut figures = rt.block_on(async move {
        let warmup = Duration::from_secs(1);
        let start = Instant::now();
        let measure_from = start + warmup;
        let until = measure_from + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let connector = connector.clone();
                let body = body.clone();
                let path = path.to_string();
                tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
                    let tls = connector.connect(name, tcp).await.unwrap();
                    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                    tokio::spawn(conn);
                    let mut latencies = Vec::new();
                    let mut sent = 0usize;
                    loop {
                        let t = Instant::now();
                        if t >= until {
                            break;
                        }
                        let req = hyper::Request::post(path.as_str())
                            .header("host", "127.0.0.1")
                            .header("content-type", "application/json")
                            .body(Full::new(body.clone()))
                            .unwrap();
                        let resp = sender.send_request(req).await.unwrap();
                        assert_eq!(resp.status(), 200);
                        let answer = resp.into_body().collect().await.unwrap().to_bytes();
                        assert!(answer.starts_with(b"{"), "an AdmissionReview came back");
                        if sent == 0 {
                            // Both servers must be measured admitting the object, not failing it.
                            let review: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                            assert_eq!(review["response"]["allowed"], true, "{review}");
                        }
                        sent += 1;
                        if t >= measure_from {
                            latencies.push(t.elapsed());
                        }
                    }
                    (latencies, sent)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut sent = 0;
        for t in tasks {
            let (latencies, n) = t.await.unwrap();
            all.extend(latencies);
            sent += n;
        }
        all.sort();
        let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        let figures = Figures {
            per_second: all.len() as f64 / seconds as f64,
            cpu_per_admission: Duration::ZERO,
            p50: pick(0.50),
            p99: pick(0.99),
            requests: all.len(),
        };
        (figures, sent)
    });
    let cpu = thread_cpu(server_tid) - cpu_before;
    figures.1 = figures.1.max(1);
    figures.0.cpu_per_admission = cpu / figures.1 as u32;
    figures.0
}
