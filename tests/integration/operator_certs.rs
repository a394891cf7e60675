//! `webhook.certificates.mode: operator` on the real control plane: the chart creates
//! an empty Secret and leaves the caBundle out; the operator, running as the chart's
//! ServiceAccount with the chart's flags (two replicas racing), issues a CA and serving
//! certificate into the Secret, publishes the CA in both webhook configurations and
//! both serve the pair; a
//! serving certificate near its end, then a CA near its end, are renewed with the
//! webhook answering throughout; the chart grants nothing beyond that Secret and
//! those two configurations.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::common::*;

const VALIDATE: &str = "/validate-toolhive-stacklok-dev-v1beta1-mcpserver";

#[tokio::test]
async fn operator_issues_renews_and_publishes_webhook_certificates() {
    let _webhooks = webhook_registration_lock().await;
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.clone();
    let team = cp.namespace(&admin, "certs-team").await.unwrap();
    let release_ns = cp.namespace(&admin, "certs-system").await.unwrap();
    let work = tempdir(&release_ns);
    let port = controlplane::free_port().unwrap();
    let full = format!("thv-{release_ns}");
    let webhook = format!("{full}-webhook");
    let secret_name = format!("{webhook}-ca");
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "fullnameOverride": full,
            "operator": {"rbac": {"scope": "namespace", "allowedNamespaces": [team]}},
            "webhook": {"url": format!("https://127.0.0.1:{port}"), "certificates": {"mode": "operator"}},
            // Resource defaults keep a mutating webhook registered, so the CA is
            // published in both configurations.
            "tenancy": {"policy": {"defaults": {"proxyResources": {"defaults": {"requests": {"cpu": "10m"}}}}}},
        }))
        .unwrap(),
    )
    .unwrap();
    let (ok, _, err) =
        run("helm", &kc, &["upgrade", "-i", "thv", chart.to_str().unwrap(), "-n", &release_ns, "-f", values.to_str().unwrap()], None);
    assert!(ok, "operator chart: {err}");

    // What the chart renders: an empty Secret, no caBundle, and the flags.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &release_ns);
    assert!(secrets.get(&secret_name).await.unwrap().data.unwrap_or_default().is_empty());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let bundles = || async {
        let m = mutating.get(&webhook).await.unwrap();
        let v = validating.get(&webhook).await.unwrap();
        let mut out: Vec<Option<String>> = Vec::new();
        out.extend(m.webhooks.unwrap_or_default().into_iter().map(|w| w.client_config.ca_bundle.map(|b| String::from_utf8(b.0).unwrap())));
        out.extend(v.webhooks.unwrap_or_default().into_iter().map(|w| w.client_config.ca_bundle.map(|b| String::from_utf8(b.0).unwrap())));
        out
    };
    // One mutating webhook (MCPServers), five validating (MCPServers, MCPRemoteProxies,
    // VirtualMCPServers, VirtualMCPCompositeToolDefinitions, EmbeddingServers).
    assert_eq!(bundles().await, vec![None; 6], "the chart leaves the caBundle to the operator");
    let args =
        run_ok("kubectl", &kc, &["get", "deployment", "-n", &release_ns, &full, "-o", "jsonpath={.spec.template.spec.containers[0].args}"]);
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let mut op_args: Vec<String> =
        args.iter().filter(|a| a.starts_with("--webhook-cert-") || a.starts_with("--webhook-configuration")).cloned().collect();
    assert_eq!(op_args.len(), 3, "{args:?}");
    assert!(op_args.contains(&"--webhook-cert-hosts=127.0.0.1".to_string()), "{args:?}");
    op_args.push("--webhook-cert-check-seconds=1".into());

    // Two replicas of the operator as the chart's ServiceAccount, started together so
    // they race to issue the first pair; both must end up serving the Secret's.
    let sa_kc = impersonating_kubeconfig(&kc, &work, &release_ns, &full);
    let env = [("POD_NAMESPACE", release_ns.as_str()), ("WATCH_NAMESPACE", team.as_str())];
    let port2 = controlplane::free_port().unwrap();
    let replica = |tag: &str, port: u16| {
        let mut args = op_args.clone();
        args.push(format!("--webhook-bind-address=127.0.0.1:{port}"));
        Operator::spawn(&sa_kc, &work, tag, &args, &env)
    };
    let op = replica("operator", port);
    let _op2 = replica("operator-2", port2);

    // Issued, published in both configurations, served; a request verified with the
    // published bundle (as the API server verifies it) is answered.
    let stored = |s: Secret| {
        let data = s.data.unwrap_or_default();
        let text = |k: &str| data.get(k).map(|b| String::from_utf8(b.0.clone()).unwrap()).unwrap_or_default();
        (text("ca.crt"), text("tls.crt"))
    };
    let serving_in_step = |expect_ca_count: usize| {
        let secrets = secrets.clone();
        let secret_name = secret_name.clone();
        let bundles = &bundles;
        async move {
            let (ca, crt) = stored(secrets.get(&secret_name).await.ok()?);
            if ca.matches("BEGIN CERTIFICATE").count() != expect_ca_count
                || bundles().await.iter().any(|b| b.as_deref() != Some(ca.as_str()))
            {
                return None;
            }
            for p in [port, port2] {
                if served_certificate(p, &ca).await? != certificate_der(&crt) {
                    return None;
                }
            }
            Some((ca, crt))
        }
    };
    let (ca, first) = eventually("the operator to issue, publish and serve a certificate", &op, || serving_in_step(1)).await;
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u"}}).to_string();
    assert_eq!(admission_on_new_connection(port, &ca, VALIDATE, &review).await, Ok(200));

    // A serving certificate near its end is renewed under the same CA.
    let expire = |key: &'static str| {
        let secrets = secrets.clone();
        let secret_name = secret_name.clone();
        async move {
            // An hour left: inside the renewal window, still valid.
            let soon = (jiff::Timestamp::now().as_second() + 3600).to_string();
            let patch = json!({"metadata": {"annotations": {key: soon}}});
            secrets.patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    expire("toolhive.stacklok.dev/serving-not-after").await;
    let (same_ca, second) =
        eventually("a renewed serving certificate", &op, || async { serving_in_step(1).await.filter(|(_, crt)| *crt != first) }).await;
    assert_eq!(same_ca, ca, "a serving renewal keeps the CA");
    assert_eq!(admission_on_new_connection(port, &ca, VALIDATE, &review).await, Ok(200));

    // A CA near its end: a new CA, with the old one still in the bundle.
    expire("toolhive.stacklok.dev/ca-not-after").await;
    let (bundle, third) =
        eventually("a new CA published beside the old one", &op, || async { serving_in_step(2).await.filter(|(_, crt)| *crt != second) })
            .await;
    assert!(bundle.ends_with(&ca), "the old CA stays trusted: {bundle}");
    assert_eq!(admission_on_new_connection(port, &bundle, VALIDATE, &review).await, Ok(200));
    assert!(served_certificate(port, &ca).await.is_none(), "the new certificate is signed by the new CA only");
    assert_ne!(third, first);

    // Least privilege: nothing beyond its Secret and its two configurations.
    let as_operator = cp.client_as_service_account(&release_ns, &full).await.unwrap();
    let its_secrets: Api<Secret> = Api::namespaced(as_operator.clone(), &release_ns);
    assert!(its_secrets.get(&secret_name).await.is_ok());
    assert!(its_secrets.list(&Default::default()).await.is_err(), "cannot list Secrets");
    let other: Secret = serde_json::from_value(json!({"metadata": {"name": "other"}, "stringData": {"k": "v"}})).unwrap();
    secrets.create(&Default::default(), &other).await.unwrap();
    assert!(its_secrets.get("other").await.is_err(), "cannot read another Secret");
    let its_configs: Api<ValidatingWebhookConfiguration> = Api::all(as_operator);
    assert!(its_configs.get(&webhook).await.is_ok());
    assert!(its_configs.list(&Default::default()).await.is_err(), "cannot list webhook configurations");
    let noop = json!({"metadata": {"labels": {"x": "y"}}});
    assert!(its_configs.patch("some-other-webhook", &PatchParams::default(), &Patch::Merge(&noop)).await.is_err());

    run_ok("helm", &kc, &["uninstall", "thv", "-n", &release_ns]);
}
