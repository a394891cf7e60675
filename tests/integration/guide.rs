//! The install guide's set-up, made once for this test binary and shared by focused
//! tests: both charts installed with helm (namespace mode), the operator binary run on
//! the host as the chart's ServiceAccount (impersonation, so only the chart's RBAC
//! applies), the chart's webhook configurations pointed at it over TLS. Each test
//! works on its own MCPServers, so one failure does not hide the others.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use kube::{Api, Client, ResourceExt, api::PostParams};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::MCPServer;

use super::common::{Endpoints, Operator, impersonating_kubeconfig, run, tempdir, webhook_registration_lock, write_secret_volume};

/// What the tests read of the set-up.
pub struct Guide {
    pub kubeconfig: PathBuf,
    /// The namespace teams use; `quota_team` has `maxMCPServers: 2`, `race_team` 5.
    pub team: String,
    pub quota_team: String,
    pub race_team: String,
    /// A namespace the operator does not watch, with an MCPServer made before the webhook.
    pub outside: String,
    pub release_ns: String,
    pub fullname: String,
    /// Stem of the release's cluster-scoped names: the release name leads, as the
    /// fullname does not start with it.
    pub cluster_name: String,
    pub webhook_port: u16,
    pub ca: controlplane::Authority,
    pub first_pair: controlplane::PemPair,
    pub cert_dir: PathBuf,
    pub operator: Endpoints,
    control: Mutex<mpsc::Sender<(Power, mpsc::Sender<()>)>>,
}

/// What the keeper thread does to the operator process.
#[derive(Debug, Clone, Copy)]
enum Power {
    Stop,
    Start,
}

/// The cluster-wide proxy runner image the operator is given.
pub const RUNNER_IMAGE: &str = "ghcr.io/stacklok/toolhive/proxyrunner:test";

/// The shared set-up, made by the first test that asks. The operator runs from a
/// thread that outlives every test (it dies with the test process).
pub fn guide() -> &'static Guide {
    static GUIDE: OnceLock<Result<&'static Guide, String>> = OnceLock::new();
    let made = GUIDE.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("guide-keeper".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let (guide, mut operator) = runtime.block_on(set_up());
                let (control_tx, control_rx) = mpsc::channel::<(Power, mpsc::Sender<()>)>();
                *guide.control.lock().unwrap() = control_tx;
                let guide: &'static Guide = Box::leak(Box::new(guide));
                let _ = tx.send(guide);
                // Stops and starts are done here, so the operator always belongs to this
                // thread (it is killed with the thread that started it).
                for (power, done) in control_rx {
                    match power {
                        Power::Stop => operator.kill(),
                        Power::Start => operator.start(),
                    }
                    let _ = done.send(());
                }
                // Every sender is gone only with the process; keep the operator alive.
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv_timeout(Duration::from_secs(300)).map_err(|e| format!("the guide set-up did not finish: {e}"))
    });
    match made {
        Ok(guide) => guide,
        Err(e) => panic!("{e}"),
    }
}

impl Guide {
    pub async fn admin(&self) -> Client {
        controlplane::shared().client().await.unwrap()
    }

    pub fn servers(&self, client: &Client, ns: &str) -> Api<MCPServer> {
        Api::namespaced(client.clone(), ns)
    }

    /// Kills the operator (SIGKILL).
    pub async fn stop_operator(&self) {
        self.power(Power::Stop).await;
    }

    /// Starts the operator again with the same arguments; returns once it is ready.
    pub async fn start_operator(&self) {
        self.power(Power::Start).await;
        wait_ready(&self.operator).await;
    }

    async fn power(&self, power: Power) {
        let (done_tx, done_rx) = mpsc::channel();
        self.control.lock().unwrap().send((power, done_tx)).unwrap();
        tokio::task::spawn_blocking(move || done_rx.recv()).await.unwrap().unwrap();
    }

    /// Applies a manifest with kubectl; (success, stdout, stderr).
    pub fn kubectl_apply(&self, manifest: &str, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        run("kubectl", &self.kubeconfig, &args, Some(manifest))
    }

    /// The MCPServer manifest kubectl applies: `spec` is YAML flow text.
    pub fn manifest(name: &str, ns: &str, spec: &str) -> String {
        format!("apiVersion: toolhive.stacklok.dev/v1beta1\nkind: MCPServer\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")
    }
}

async fn wait_ready(operator: &Endpoints) {
    for _ in 0..600 {
        if operator.ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the operator did not become ready; log:\n{}", operator.log_tail());
}

async fn set_up() -> (Guide, Operator) {
    // The set-up registers webhook configurations: not while another test's are.
    let _webhooks = webhook_registration_lock().await;
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.clone();
    let team = cp.namespace(&admin, "team").await.unwrap();
    let quota_team = cp.namespace(&admin, "quota").await.unwrap();
    let race_team = cp.namespace(&admin, "race").await.unwrap();
    let outside = cp.namespace(&admin, "outside").await.unwrap();
    let release_ns = cp.namespace(&admin, "toolhive-system").await.unwrap();
    let work = tempdir(&release_ns);
    let root = controlplane::repo_root();

    // CRDs chart, as the guide does.
    let crds_chart = root.join("deploy/charts/toolhive-operator-crds");
    let (ok, _, err) = run("helm", &kc, &["upgrade", "-i", "toolhive-operator-crds", crds_chart.to_str().unwrap(), "--wait"], None);
    assert!(ok, "crds chart: {err}");
    // Established is not yet servable by server-side apply: the API server answers
    // "ServiceUnavailable ... kind not found" until it has the new kinds' schemas.
    for (_, crd) in toolhive_operator::kinds::crds() {
        let version = crd.spec.versions.iter().find(|v| v.storage).map(|v| v.name.clone()).unwrap_or_default();
        let probe = json!({"apiVersion": format!("{}/{version}", crd.spec.group), "kind": crd.spec.names.kind,
            "metadata": {"name": "servable-probe", "namespace": "default"}, "spec": {}});
        let mut last = String::new();
        for _ in 0..300 {
            let (_, _, err) = run("kubectl", &kc, &["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&probe.to_string()));
            if !err.contains("ServiceUnavailable") {
                last.clear();
                break;
            }
            last = err;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(last.is_empty(), "{} never servable: {last}", crd.spec.names.kind);
    }

    // An MCPServer outside the allowed namespaces, created before the webhook exists.
    let stray: MCPServer = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "stray"}, "spec": {"image": "ghcr.io/acme/stray"}
    }))
    .unwrap();
    create_when_served(&Api::namespaced(admin.clone(), &outside), &stray).await;

    // Webhook serving certificate on the host, trusted through the chart's caBundle.
    let ca = controlplane::Authority::new("webhook-test-ca").unwrap();
    let first_pair = ca.serving(&[], &[]).unwrap();
    let cert_dir = work.join("certs");
    write_secret_volume(&cert_dir, "v1", &first_pair);
    let webhook_port = controlplane::free_port().unwrap();
    let fullname = format!("thv-{}", &release_ns);
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "fullnameOverride": fullname,
            "operator": {"rbac": {"scope": "namespace", "allowedNamespaces": [team, quota_team, race_team]}},
            "webhook": {"url": format!("https://127.0.0.1:{webhook_port}"), "caBundle": ca.cert_pem()},
            "tenancy": {"policy": {
                "contact": "#platform",
                "defaults": {"allowedRegistries": ["ghcr.io/stackloklabs", "ghcr.io/acme"],
                             "proxyResources": {"defaults": {"requests": {"cpu": "50m"}}, "max": {"cpu": "1"}}},
                "namespaces": {quota_team.clone(): {"maxMCPServers": 2}, race_team.clone(): {"maxMCPServers": 5}}
            }}
        }))
        .unwrap(),
    )
    .unwrap();
    let chart = root.join("deploy/charts/toolhive-operator");
    let (ok, _, err) = run(
        "helm",
        &kc,
        &["upgrade", "-i", "toolhive-operator", chart.to_str().unwrap(), "-n", &release_ns, "-f", values.to_str().unwrap()],
        None,
    );
    assert!(ok, "operator chart: {err}");

    // The policy file as the chart renders it.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), &release_ns);
    let policy_cm = cms.get(&format!("{fullname}-tenancy-policy")).await.unwrap();
    let policy_path = work.join("tenancy-policy.yaml");
    std::fs::write(&policy_path, &policy_cm.data.unwrap()["tenancy-policy.yaml"]).unwrap();

    // The operator binary, authenticated as the chart's ServiceAccount.
    let sa_kc = impersonating_kubeconfig(&kc, &work, &release_ns, &fullname);
    let watched = format!("{team},{quota_team},{race_team}");
    let operator = Operator::spawn(
        &sa_kc,
        &work,
        "operator",
        &[
            "--leader-elect".into(),
            "--leader-lease-seconds=4".into(),
            format!("--webhook-bind-address=127.0.0.1:{webhook_port}"),
            format!("--webhook-cert-dir={}", cert_dir.display()),
            format!("--tenancy-policy={}", policy_path.display()),
        ],
        &[("POD_NAMESPACE", &release_ns), ("WATCH_NAMESPACE", &watched)],
    );
    wait_ready(&operator).await;
    let guide = Guide {
        kubeconfig: kc,
        team,
        quota_team,
        race_team,
        outside,
        release_ns,
        cluster_name: format!("toolhive-operator-{fullname}"),
        fullname,
        webhook_port,
        ca,
        first_pair,
        cert_dir,
        operator: operator.endpoints.clone(),
        control: Mutex::new(mpsc::channel().0),
    };
    (guide, operator)
}

pub async fn create_when_served(api: &Api<MCPServer>, obj: &MCPServer) {
    for _ in 0..100 {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("create {}: {e}", obj.name_any()),
        }
    }
    panic!("MCPServers never served");
}

/// An MCPServer object for the typed client.
pub fn server(name: &str, spec: serde_json::Value) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}
