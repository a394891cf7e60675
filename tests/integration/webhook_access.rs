//! Only the API server may call the webhook: the chart's `webhook.clientAuth.caBundle`
//! makes the operator refuse, in the TLS handshake, every client without a certificate
//! that CA signed, and the real API server, given its client certificate in an
//! AdmissionConfiguration (as `controlplane` starts it), still gets its answers.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::PostParams};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::MCPServer;
use toolhive_operator::webhook::VALIDATE_PATH;

use super::common::{
    Operator, admission_on_new_connection, create_review, eventually, impersonating_kubeconfig, run, run_ok, tempdir, write_secret_volume,
};
use super::guide::{guide, server};

#[tokio::test]
async fn only_the_api_server_gets_past_the_webhook_handshake() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let release_ns = cp.namespace(&admin, "access-sys").await.unwrap();
    let team = cp.namespace(&admin, "access-team").await.unwrap();
    let work = tempdir(&release_ns);
    let port = controlplane::free_port().unwrap();
    let ca = controlplane::Authority::new("access-webhook-ca").unwrap();
    let cert_dir = work.join("certs");
    write_secret_volume(&cert_dir, "v1", &ca.serving(&[], &[]).unwrap());
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        serde_json::to_string(&json!({
            "operator": {"rbac": {"scope": "namespace", "allowedNamespaces": [team]}},
            "webhook": {"url": format!("https://127.0.0.1:{port}"), "caBundle": ca.cert_pem(),
                        "clientAuth": {"caBundle": cp.webhook_client_ca_pem}},
            "tenancy": {"policy": {"defaults": {"allowedRegistries": ["ghcr.io/acme"]}}}
        }))
        .unwrap(),
    )
    .unwrap();
    let chart = controlplane::repo_root().join("deploy/charts/toolhive-operator");
    let (ok, _, err) =
        run("helm", kc, &["upgrade", "-i", &release_ns, chart.to_str().unwrap(), "-n", &release_ns, "-f", values.to_str().unwrap()], None);
    assert!(ok, "{err}");

    // What the chart renders: the flag, and the CA in a ConfigMap the pod mounts.
    let args = run_ok(
        "kubectl",
        kc,
        &["get", "deployment", "-n", &release_ns, "toolhive-operator", "-o", "jsonpath={.spec.template.spec.containers[0].args}"],
    );
    assert!(args.contains("--webhook-client-ca=/etc/toolhive/webhook-client-ca/ca.crt"), "{args}");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &release_ns);
    let client_ca = work.join("client-ca.crt");
    std::fs::write(&client_ca, &cms.get("toolhive-operator-webhook-client-ca").await.unwrap().data.unwrap()["ca.crt"]).unwrap();
    let policy = work.join("policy.yaml");
    std::fs::write(&policy, &cms.get("toolhive-operator-tenancy-policy").await.unwrap().data.unwrap()["tenancy-policy.yaml"]).unwrap();

    let sa_kc = impersonating_kubeconfig(kc, &work, &release_ns, "toolhive-operator");
    let operator = Operator::spawn(
        &sa_kc,
        &work,
        "operator",
        &[
            format!("--webhook-bind-address=127.0.0.1:{port}"),
            format!("--webhook-cert-dir={}", cert_dir.display()),
            format!("--webhook-client-ca={}", client_ca.display()),
            format!("--tenancy-policy={}", policy.display()),
        ],
        &[("POD_NAMESPACE", &release_ns), ("WATCH_NAMESPACE", &team)],
    );
    eventually("the operator to be ready", &operator, || async { operator.ready().then_some(()) }).await;

    // Through the API server: the webhook answers (its refusal, with the field path).
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &team);
    let refused = eventually("the webhook to answer through the API server", &operator, || async {
        match servers.create(&PostParams::default(), &server("bad", json!({"image": "docker.io/x/y"}))).await {
            Err(kube::Error::Api(e)) if e.message.contains("registry") => Some(e.message),
            _ => None,
        }
    })
    .await;
    assert!(refused.contains("spec.image: Forbidden: registry \"docker.io\" is not allowed"), "{refused}");
    servers.create(&PostParams::default(), &server("good", json!({"image": "ghcr.io/acme/tool"}))).await.unwrap();

    // Straight to the port, with no client certificate: no answer at all.
    let review = create_review("direct", &team, "direct", json!({"image": "ghcr.io/acme/tool"}));
    let direct = admission_on_new_connection(port, &ca.cert_pem(), VALIDATE_PATH, &review).await;
    assert!(direct.is_err(), "a client without the API server's certificate was answered: {direct:?}");

    run_ok("helm", kc, &["uninstall", &release_ns, "-n", &release_ns]);
}
