//! Admission benchmark (not a test): what an MCPServer create costs through a real
//! kube-apiserver, as users feel it, with each way of enforcing the same tenancy policy.
//!
//! One control plane (etcd + kube-apiserver, nothing else writing); the operator's
//! webhook served in this process over TLS on loopback; one configuration registered
//! at a time, each measured with the same sequential creates in a fresh namespace:
//! - none: nothing registered (the floor);
//! - VAP: an equivalent ValidatingAdmissionPolicy (registry, transport, cpu ceiling);
//! - VAP + MAP: the same, plus the chart's MutatingAdmissionPolicy (team label,
//!   mcpPort) — the whole policy in-process;
//! - webhooks, two calls: what the chart registers on a cluster without
//!   MutatingAdmissionPolicy (the mutating webhook is called: the label is missing);
//! - webhooks, one call: what the chart registers on Kubernetes 1.36 (defaults
//!   in-process, only the validating webhook is called).
//!
//! Reports create latency (p50, p99, mean) at concurrency 1 and kube-apiserver CPU per
//! create (from /proc), and each beside the floor.
//!
//!   cargo bench --bench admission            # or: make bench-admission
//!   BENCH_CREATES=500 cargo bench --bench admission   # quicker

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::{Api, Client, ResourceExt, api::PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use toolhive_operator::{kinds::mcpserver::api::MCPServer, runtime::metrics::Metrics, shared::config::Scope, webhook};

/// The tenancy policy every configuration enforces.
const POLICY: &str = r#"
defaults:
  allowedRegistries: [ghcr.io/acme]
  allowedTransports: [stdio, streamable-http]
  proxyResources: {max: {cpu: "1"}}
"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A tenant's server as teams write it: no team label, no mcpPort.
fn tenant_server(name: &str) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": name},
        "spec": {
            "image": "ghcr.io/acme/tools/server:1.0", "transport": "streamable-http",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "env": [{"name": "LOG_LEVEL", "value": "info"}], "args": ["--verbose"]
        }
    }))
    .unwrap()
}

fn refused_server() -> MCPServer {
    let mut s = tenant_server("refused");
    s.spec.image = "docker.io/library/redis".into();
    s
}

/// The ValidatingAdmissionPolicy and binding that enforce POLICY in CEL.
fn equivalent_vap() -> Vec<Value> {
    let cpu_ok = |section: &str| {
        format!(
            "!has(object.spec.resources) || !has(object.spec.resources.{section}) || !has(object.spec.resources.{section}.cpu) \
             || quantity(object.spec.resources.{section}.cpu).compareTo(quantity('1')) <= 0"
        )
    };
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "bench-equivalent"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["toolhive.stacklok.dev"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["mcpservers"]}]},
                "validations": [
                    {"expression": "object.spec.image.startsWith('ghcr.io/acme/')",
                     "message": "spec.image: Forbidden: registry is not allowed"},
                    {"expression": "object.spec.transport in ['stdio', 'streamable-http']",
                     "message": "spec.transport: Forbidden: transport is not allowed"},
                    {"expression": cpu_ok("requests"), "message": "spec.resources.requests.cpu: Forbidden: exceeds 1"},
                    {"expression": cpu_ok("limits"), "message": "spec.resources.limits.cpu: Forbidden: exceeds 1"}
                ]
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "bench-equivalent"},
            "spec": {"policyName": "bench-equivalent", "validationActions": ["Deny"]}
        }),
    ]
}

/// The admission objects the operator chart renders for this policy and webhook URL;
/// `in_process_defaults`: as on an API server that serves MutatingAdmissionPolicy.
fn chart_admission(tools: &Path, url: &str, ca_pem: &str, in_process_defaults: bool, kinds: &[&str]) -> Vec<Value> {
    let values = std::env::temp_dir().join(format!("bench-admission-values-{}.yaml", std::process::id()));
    let policy: Value = serde_yaml_ng::from_str(POLICY).unwrap();
    std::fs::write(&values, json!({"webhook": {"url": url, "caBundle": ca_pem}, "tenancy": {"policy": policy}}).to_string()).unwrap();
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let mut args = vec!["template".to_string(), "bench".into(), chart.display().to_string(), "-n".into(), "toolhive-system".into()];
    args.extend(["-f".into(), values.display().to_string()]);
    if in_process_defaults {
        args.extend(["--api-versions".into(), "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy".into()]);
    }
    let out = std::process::Command::new(tools.join("helm")).args(&args).output().unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|doc| doc["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
        .collect()
}

/// Applies or deletes admission objects with kubectl.
fn kubectl(tools: &Path, kubeconfig: &Path, verb: &str, objects: &[Value]) {
    if objects.is_empty() {
        return;
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    let mut child = std::process::Command::new(tools.join("kubectl"))
        .args([verb, "-f", "-", "--kubeconfig"])
        .arg(kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "kubectl {verb}");
}

/// kube-apiserver CPU time so far (user + system).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// What one configuration cost, over every round.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    cpu: Duration,
}

impl Samples {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
    }

    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    fn cpu_per_create(&self) -> Duration {
        self.cpu / self.latencies.len() as u32
    }
}

/// Waits until the configuration is in force: a refused server is refused, and with
/// in-process defaults a create comes back labelled.
async fn wait_in_force(api: &Api<MCPServer>, refuses: bool, labels: bool) {
    let dry = PostParams { dry_run: true, ..Default::default() };
    for _ in 0..300 {
        let refused = api.create(&dry, &refused_server()).await.is_err();
        let labelled =
            api.create(&dry, &tenant_server("probe")).await.map(|s| s.labels().contains_key(webhook::mutate::TEAM_LABEL)).unwrap_or(false);
        if refused == refuses && labelled == labels {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the admission configuration did not take effect");
}

/// `creates` sequential creates in `ns`, after a few not counted.
async fn measure(client: &Client, ns: &str, apiserver: u32, creates: usize, round: usize, into: &mut Samples) {
    let api: Api<MCPServer> = Api::namespaced(client.clone(), ns);
    for i in 0..20 {
        api.create(&PostParams::default(), &tenant_server(&format!("warm-{round}-{i}"))).await.unwrap();
    }
    let cpu_before = cpu_of(apiserver);
    for i in 0..creates {
        let server = tenant_server(&format!("s-{round}-{i}"));
        let start = Instant::now();
        api.create(&PostParams::default(), &server).await.unwrap();
        into.latencies.push(start.elapsed());
    }
    into.cpu += cpu_of(apiserver) - cpu_before;
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let creates = env_u64("BENCH_CREATES", 2000) as usize;
    // Configurations take turns, a share of the creates each round, so drift in the API
    // server and etcd over the run (a growing database, compaction) is spread evenly.
    let rounds = env_u64("BENCH_ROUNDS", 4).max(1) as usize;
    let cp = controlplane::ControlPlane::start(controlplane::Options { controller_manager: false, dir: None, node: false })
        .expect("control plane");
    let tools = controlplane::tools_bin().unwrap();
    let apiserver = cp.pid("kube-apiserver").expect("kube-apiserver pid");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The operator's webhook, as it serves in the operator, on its own runtime.
    let ca = controlplane::Authority::new("bench-admission-ca").unwrap();
    let pair = ca.serving(&[], &[]).unwrap();
    let port = controlplane::free_port().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let certs = webhook::tls::CertStore::new();
            certs.install(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes()).unwrap();
            let policy = webhook::policy::TenancyPolicy::from_text(POLICY).unwrap();
            let state = webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(|_: &str| 0), Metrics::default());
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            webhook::serve_tls(addr, webhook::tls::server_config(certs), webhook::router(state)).await.unwrap();
        })
    });
    let url = format!("https://127.0.0.1:{port}");
    let webhooks = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];
    let defaults = ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"];
    let two_calls = chart_admission(&tools, &url, &ca.cert_pem(), false, &webhooks);
    let one_call = chart_admission(&tools, &url, &ca.cert_pem(), true, &[&webhooks[..], &defaults[..]].concat());
    let in_process_defaults = chart_admission(&tools, &url, &ca.cert_pem(), true, &defaults);
    let vap = equivalent_vap();
    let vap_and_map: Vec<Value> = vap.iter().chain(&in_process_defaults).cloned().collect();

    let figures: Vec<(&str, Samples)> = rt.block_on(async {
        let client = cp.client().await.unwrap();
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        crds.create(&PostParams::default(), &toolhive_operator::kinds::mcpserver::api::crd()).await.unwrap();
        let configurations: [(&'static str, &[Value], bool, bool); 5] = [
            ("none", &[], false, false),
            ("ValidatingAdmissionPolicy", &vap, true, false),
            ("ValidatingAdmissionPolicy + MutatingAdmissionPolicy", &vap_and_map, true, true),
            ("webhooks, two calls (chart without in-process defaults)", &two_calls, true, true),
            ("webhooks, one call (chart on 1.36: defaults in-process)", &one_call, true, true),
        ];
        let mut samples: Vec<Samples> = configurations.iter().map(|_| Samples::default()).collect();
        for round in 0..rounds {
            for ((name, objects, refuses, labels), into) in configurations.iter().zip(samples.iter_mut()) {
                let ns = cp.namespace(&client, "bench").await.unwrap();
                kubectl(&tools, &cp.kubeconfig, "apply", objects);
                let api: Api<MCPServer> = Api::namespaced(client.clone(), &ns);
                // The CRD must be served before anything is measured.
                for _ in 0..100 {
                    if api.list_metadata(&Default::default()).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                wait_in_force(&api, *refuses, *labels).await;
                eprintln!("round {}/{rounds}: {name}", round + 1);
                measure(&client, &ns, apiserver, creates / rounds, round, into).await;
                kubectl(&tools, &cp.kubeconfig, "delete", objects);
            }
        }
        configurations.iter().map(|c| c.0).zip(samples).collect::<Vec<_>>()
    });
    cp.stop();

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let floor = &figures[0].1;
    let per = creates / rounds * rounds;
    println!("\n{per} sequential MCPServer creates per configuration in {rounds} rounds, one kube-apiserver (v1.36.3) on loopback\n");
    println!("| configuration | p50 | p99 | mean | kube-apiserver CPU per create | CPU over none |");
    println!("|---|---|---|---|---|---|");
    for (name, f) in &figures {
        println!(
            "| {name} | {} | {} | {} | {} | +{} |",
            ms(f.quantile(0.50)),
            ms(f.quantile(0.99)),
            ms(f.mean()),
            ms(f.cpu_per_create()),
            ms(f.cpu_per_create().saturating_sub(floor.cpu_per_create()))
        );
    }
}
