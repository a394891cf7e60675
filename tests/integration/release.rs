//! One namespace-mode release of the operator chart on the shared control plane,
//! with its operator running on the host as the chart's ServiceAccount: what the
//! tests of several installs, webhook access and policy rollout start from.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{Api, Client, api::PostParams};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::MCPServer;

use super::common::{Operator, eventually, impersonating_kubeconfig, run, tempdir, write_secret_volume};
use super::guide::server;

/// One install: its release (named after its namespace), its team namespace and its
/// operator process, authenticated as the chart's ServiceAccount.
pub struct Install {
    pub release: String,
    pub release_ns: String,
    pub team: String,
    pub values: PathBuf,
    /// The policy file the operator reads (the chart's ConfigMap, as mounted).
    pub policy_path: PathBuf,
    /// The webhook's port on 127.0.0.1.
    pub port: u16,
    pub operator: Operator,
}

impl Install {
    /// The stem the chart gives this release's cluster-scoped objects.
    pub fn cluster_name(&self) -> String {
        format!("{}-toolhive-operator", self.release)
    }

    pub fn servers(&self, client: &Client) -> Api<MCPServer> {
        Api::namespaced(client.clone(), &self.team)
    }
}

/// Installs a namespace-mode release for `unit` (its own namespace and team
/// namespace) with `policy` and more `webhook` values, and starts its operator on the
/// host with what the chart's Deployment would mount (the policy, and the webhook
/// client CA when the chart renders one).
pub async fn install_release(
    admin: &Client,
    kc: &Path,
    ca: &controlplane::Authority,
    unit: &str,
    webhook: serde_json::Value,
    policy: serde_json::Value,
) -> Install {
    install_release_with(admin, kc, ca, unit, webhook, policy, json!({})).await
}

/// As `install_release`, with more `operator` values; the operator on the host gets
/// the plain environment variables the chart renders into its Deployment.
pub async fn install_release_with(
    admin: &Client,
    kc: &Path,
    ca: &controlplane::Authority,
    unit: &str,
    webhook: serde_json::Value,
    policy: serde_json::Value,
    operator_values: serde_json::Value,
) -> Install {
    let cp = controlplane::shared();
    let release_ns = cp.namespace(admin, &format!("{unit}-sys")).await.unwrap();
    let team = cp.namespace(admin, &format!("{unit}-team")).await.unwrap();
    let release = release_ns.clone();
    let work = tempdir(&release_ns);
    let port = controlplane::free_port().unwrap();
    let cert_dir = work.join("certs");
    write_secret_volume(&cert_dir, "v1", &ca.serving(&[], &[]).unwrap());
    let mut webhook_values = json!({"url": format!("https://127.0.0.1:{port}"), "caBundle": ca.cert_pem()});
    webhook_values.as_object_mut().unwrap().extend(webhook.as_object().cloned().unwrap_or_default());
    let mut operator = json!({"rbac": {"scope": "namespace", "allowedNamespaces": [team]}});
    operator.as_object_mut().unwrap().extend(operator_values.as_object().cloned().unwrap_or_default());
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "operator": operator,
            "webhook": webhook_values,
            "tenancy": {"policy": policy}
        }))
        .unwrap(),
    )
    .unwrap();
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let (ok, _, err) =
        run("helm", kc, &["upgrade", "-i", &release, chart.to_str().unwrap(), "-n", &release_ns, "-f", values.to_str().unwrap()], None);
    assert!(ok, "install {release}: {err}");

    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &release_ns);
    let policy = cms.get("toolhive-operator-tenancy-policy").await.unwrap();
    let policy_path = work.join("tenancy-policy.yaml");
    std::fs::write(&policy_path, &policy.data.unwrap()["tenancy-policy.yaml"]).unwrap();
    let mut args = vec![
        "--leader-elect".into(),
        "--leader-lease-seconds=4".into(),
        format!("--webhook-bind-address=127.0.0.1:{port}"),
        format!("--webhook-cert-dir={}", cert_dir.display()),
        format!("--tenancy-policy={}", policy_path.display()),
    ];
    if let Some(client_ca) = cms.get_opt("toolhive-operator-webhook-client-ca").await.unwrap() {
        let path = work.join("webhook-client-ca.crt");
        std::fs::write(&path, &client_ca.data.unwrap()["ca.crt"]).unwrap();
        args.push(format!("--webhook-client-ca={}", path.display()));
    }
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &release_ns).get("toolhive-operator").await.unwrap();
    let rendered: Vec<(String, String)> = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("TOOLHIVE_DEFAULT_") || e.name == "VMCP_IMAGE")
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    let mut env: Vec<(&str, &str)> = vec![("POD_NAMESPACE", &release_ns), ("WATCH_NAMESPACE", &team)];
    env.extend(rendered.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    let sa_kc = impersonating_kubeconfig(kc, &work, &release_ns, "toolhive-operator");
    let operator = Operator::spawn(&sa_kc, &work, "operator", &args, &env);
    Install { release, release_ns, team, values, policy_path, port, operator }
}

pub async fn ready(install: &Install) {
    eventually("the operator to be ready", &install.operator, || async { install.operator.ready().then_some(()) }).await;
}

pub async fn running(install: &Install, admin: &Client, name: &str) {
    let api = install.servers(admin);
    eventually(&format!("{}/{name} to be reconciled", install.team), &install.operator, || async {
        api.get_opt(name).await.ok()??.status?.url.contains(name).then_some(())
    })
    .await;
}

/// Creates an MCPServer `name` of an allowed image in the install's team namespace.
pub async fn create(install: &Install, admin: &Client, name: &str) -> Result<MCPServer, kube::Error> {
    install.servers(admin).create(&PostParams::default(), &server(name, json!({"image": "ghcr.io/acme/tool"}))).await
}
