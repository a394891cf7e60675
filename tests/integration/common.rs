//! Helpers the integration tests share: running helm/kubectl, running the operator
//! binary as a child process, polling for a condition, reading its metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn tools(name: &str) -> PathBuf {
    controlplane::tools_bin().unwrap().join(name)
}

/// Runs a CLI (helm/kubectl) against the control plane; returns (success, stdout, stderr).
pub fn run(bin: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(tools(bin));
    cmd.args(args).arg("--kubeconfig").arg(kubeconfig).env("HOME", std::env::temp_dir());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs helm/kubectl and returns stdout, failing the test with stderr on error.
pub fn run_ok(bin: &str, kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(bin, kubeconfig, args, None);
    assert!(ok, "{bin} {args:?}: {err}");
    out
}

/// A kubeconfig that impersonates a ServiceAccount, as the operator's pod would authenticate.
pub fn impersonating_kubeconfig(admin: &Path, dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let text = std::fs::read_to_string(admin).unwrap();
    let text = text.replace(
        "    client-key-data:",
        &format!("    as: system:serviceaccount:{ns}:{sa}\n    as-groups: [system:serviceaccounts, system:serviceaccounts:{ns}, system:authenticated]\n    client-key-data:"),
    );
    let path = dir.join(format!("kubeconfig-{sa}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Webhook configurations are cluster-wide: one registered by a test on the shared
/// control plane answers every MCPServer write there, under that test's tenancy policy.
static WEBHOOKS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held for its whole run by a test that registers webhook configurations, or that
/// disturbs the guide's operator or namespaces other tests write to (restarts it,
/// rotates its certificate, labels a namespace): no other such test runs meanwhile.
pub async fn webhook_registration_lock() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    WEBHOOKS.write().await
}

/// Held by a guide test that only writes MCPServers (and their configuration) of its
/// own in the guide's team namespace and expects the guide's webhook to answer: any
/// number of these run side by side, never beside a test holding the lock above.
pub async fn guide_webhook_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    WEBHOOKS.read().await
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toolhive-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where a running operator can be read: its log and its metrics and health ports.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub log: PathBuf,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl Endpoints {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether /readyz answers 200.
    pub fn ready(&self) -> bool {
        controlplane::http_status(self.health_port, "/readyz") == Some(200)
    }

    /// The sum of every sample of `metric` whose label set contains all of `labels`
    /// (e.g. `[("kind", "Deployment")]`); None when the endpoint does not answer.
    pub fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let body = controlplane::http_get_plain(self.metrics_port, "/metrics").ok()?;
        Some(sum_samples(&body, metric, labels))
    }
}

/// The operator binary running as a child process, killed when dropped (and when the
/// thread that started it ends).
pub struct Operator {
    child: Child,
    command: Vec<String>,
    env: Vec<(String, String)>,
    kubeconfig: PathBuf,
    pub endpoints: Endpoints,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for Operator {
    type Target = Endpoints;
    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl Operator {
    /// Starts `toolhive-operator` with `KUBECONFIG=kubeconfig`, its own metrics and
    /// health ports, text logs in `work/<tag>.log`, plus `args` and `env`.
    pub fn spawn(kubeconfig: &Path, work: &Path, tag: &str, args: &[String], env: &[(&str, &str)]) -> Self {
        let endpoints = Endpoints {
            log: work.join(format!("{tag}.log")),
            metrics_port: controlplane::free_port().unwrap(),
            health_port: controlplane::free_port().unwrap(),
        };
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let child = launch(kubeconfig, &endpoints, args, &env);
        Self { child, command: args.to_vec(), env, kubeconfig: kubeconfig.to_path_buf(), endpoints }
    }

    /// Starts the process again (after [`Operator::kill`]) with the same arguments and ports.
    pub fn start(&mut self) {
        self.kill();
        self.child = launch(&self.kubeconfig, &self.endpoints, &self.command, &self.env);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no graceful step-down, the lease stays held until it expires.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(kubeconfig: &Path, at: &Endpoints, args: &[String], env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolhive-operator"));
    cmd.arg(format!("--metrics-bind-address=127.0.0.1:{}", at.metrics_port))
        .arg(format!("--health-probe-bind-address=127.0.0.1:{}", at.health_port))
        .args(args)
        .env_remove("WATCH_NAMESPACE")
        .env("KUBECONFIG", kubeconfig)
        .env("TOOLHIVE_RUNNER_IMAGE", "ghcr.io/stacklok/toolhive/proxyrunner:test")
        .env("UNSTRUCTURED_LOGS", "true")
        .env("RUST_LOG", "info,kube=warn")
        .stdout(std::fs::OpenOptions::new().create(true).append(true).open(&at.log).unwrap())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(at.log.with_extension("stderr")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    controlplane::die_with_spawning_thread(&mut cmd);
    cmd.spawn().unwrap()
}

/// Adds up the samples of `metric` in Prometheus text format that carry every label pair.
pub fn sum_samples(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            if name != metric {
                return None;
            }
            labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub async fn eventually<T, F, Fut>(what: &str, op: &Endpoints, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, op, Duration::from_secs(30), f).await
}

pub async fn eventually_within<T, F, Fut>(what: &str, op: &Endpoints, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until(what, limit, f, || op.log_tail()).await
}

/// Polls `f` until it yields or `limit` passes; a timeout fails the test with what
/// `operator_log` returns.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut f: F, operator_log: impl FnOnce() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The wait is named again last: CI shows the end of a long failure.
    panic!("timed out waiting for {what}; operator log:\n{}\n(that was: timed out waiting for {what})", operator_log());
}

/// Writes a certificate pair the way the kubelet updates a Secret volume: files in a
/// fresh `..<version>` directory, then `..data` swapped to it by an atomic rename of a
/// symlink; `tls.crt`/`tls.key` are links through `..data`.
pub fn write_secret_volume(dir: &Path, version: &str, pair: &controlplane::PemPair) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir).unwrap();
    let versioned = format!("..{version}");
    std::fs::create_dir_all(dir.join(&versioned)).unwrap();
    std::fs::write(dir.join(&versioned).join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.join(&versioned).join("tls.key"), &pair.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&versioned, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(controlplane::tls_client_config(ca_pem).unwrap()))
}

/// The leaf certificate (DER) a fresh TLS handshake with 127.0.0.1:`port` presents.
pub async fn served_certificate(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = tls_connector(ca_pem).connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.as_ref().to_vec())
}

pub fn certificate_der(pem: &str) -> Vec<u8> {
    <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
}

/// One admission request on a new TLS connection (so every call is a handshake);
/// returns the HTTP status code, or the failure.
pub async fn admission_on_new_connection(port: u16, ca_pem: &str, path: &str, body: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = tls_connector(ca_pem).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no status line in {text:?}"))
}

/// A CREATE AdmissionReview of an MCPServer `name` in `namespace` with `spec`, as the
/// API server sends it, for calling the webhook directly.
pub fn create_review(uid: &str, namespace: &str, name: &str, spec: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": namespace, "userInfo": {},
            "kind": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"},
            "resource": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"},
            "object": {"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        }
    })
    .to_string()
}
