//! Only the API server may call the webhook: the chart's `webhook.clientAuth.caBundle`
//! makes the operator refuse, in the TLS handshake, every client without a certificate
//! that CA signed, and the real API server, given its client certificate in an
//! AdmissionConfiguration (as `controlplane` starts it), still gets its answers.

use kube::{Api, api::PostParams};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::MCPServer;
use toolhive_operator::webhook::VALIDATE_PATH;

use super::common::{admission_on_new_connection, create_review, eventually, run_ok};
use super::guide::{guide, server};
use super::release::{install_release, ready};

#[tokio::test]
async fn only_the_api_server_gets_past_the_webhook_handshake() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("access-webhook-ca").unwrap();
    let webhook = json!({"clientAuth": {"caBundle": cp.webhook_client_ca_pem}});
    let policy = json!({"defaults": {"allowedRegistries": ["ghcr.io/acme"]}});
    let install = install_release(&admin, kc, &ca, "access", webhook, policy).await;

    // What the chart renders: the flag, and the CA in a ConfigMap the pod mounts (the
    // operator here is started with that ConfigMap's CA).
    let args = run_ok(
        "kubectl",
        kc,
        &["get", "deployment", "-n", &install.release_ns, "toolhive-operator", "-o", "jsonpath={.spec.template.spec.containers[0].args}"],
    );
    assert!(args.contains("--webhook-client-ca=/etc/toolhive/webhook-client-ca/ca.crt"), "{args}");
    ready(&install).await;

    // Through the API server: the webhook answers (its refusal, with the field path).
    let servers: Api<MCPServer> = install.servers(&admin);
    let refused = eventually("the webhook to answer through the API server", &install.operator, || async {
        match servers.create(&PostParams::default(), &server("bad", json!({"image": "docker.io/x/y"}))).await {
            Err(kube::Error::Api(e)) if e.message.contains("registry") => Some(e.message),
            _ => None,
        }
    })
    .await;
    assert!(refused.contains("spec.image: Forbidden: registry \"docker.io\" is not allowed"), "{refused}");
    servers.create(&PostParams::default(), &server("good", json!({"image": "ghcr.io/acme/tool"}))).await.unwrap();

    // Straight to the port, with no client certificate: no answer at all.
    let review = create_review("direct", &install.team, "direct", json!({"image": "ghcr.io/acme/tool"}));
    let direct = admission_on_new_connection(install.port, &ca.cert_pem(), VALIDATE_PATH, &review).await;
    assert!(direct.is_err(), "a client without the API server's certificate was answered: {direct:?}");

    run_ok("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns]);
}
