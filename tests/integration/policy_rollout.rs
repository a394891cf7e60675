//! A tenancy rule rolled out as a platform team would: first in warn mode (a server
//! from a registry the policy does not allow is admitted with a warning kubectl
//! prints, and reported on the stored object), then enforced through a helm upgrade
//! (new servers like it are refused; the stored one is checked again and reported,
//! and never changed or deleted by the operator).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::MCPServer;

use super::common::{eventually, run};
use super::guide::{Guide, guide};
use super::release::{Install, install_release, ready, running};

/// The PolicyCompliant condition of `name`: (status, reason, message).
async fn compliance(api: &Api<MCPServer>, name: &str) -> Option<(String, String, String)> {
    let server = api.get_opt(name).await.ok()??;
    let c = server.status?.conditions.into_iter().find(|c| c.type_ == "PolicyCompliant")?;
    Some((c.status, c.reason, c.message))
}

async fn events_with_reason(admin: &Client, ns: &str, object: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let list = events.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(object) && e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
}

/// The chart's policy ConfigMap copied to the operator's file, as the kubelet does for
/// the mounted volume.
async fn sync_policy_file(admin: &Client, install: &Install) {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), &install.release_ns).get("toolhive-operator-tenancy-policy").await.unwrap();
    std::fs::write(&install.policy_path, &cm.data.unwrap()["tenancy-policy.yaml"]).unwrap();
}

#[tokio::test]
async fn a_rule_moves_from_warn_to_enforce_and_stored_servers_are_reported_not_touched() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("rollout-webhook-ca").unwrap();
    let policy = json!({"contact": "#platform", "defaults": {"allowedRegistries": ["ghcr.io/acme"], "enforcement": {"registry": "warn"}}});
    let install = install_release(&admin, kc, &ca, "rollout", json!({}), policy).await;
    ready(&install).await;
    let servers = install.servers(&admin);

    // Warn: admitted, and kubectl prints why it will be refused once enforced.
    let legacy = Guide::manifest("legacy", &install.team, "{image: docker.io/acme/legacy}");
    let (ok, _, err) = eventually("the webhook to warn", &install.operator, || async {
        let (ok, out, err) = run("kubectl", kc, &["apply", "-f", "-"], Some(&legacy));
        err.contains("in warn mode").then_some((ok, out, err))
    })
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning: spec.image: Forbidden: registry \"docker.io\" is not allowed in namespace")
            && err.contains("(policy rule \"registry\" in warn mode)"),
        "{err}"
    );
    running(&install, &admin, "legacy").await;
    let (status, reason, message) = eventually("the stored server to be reported", &install.operator, || async {
        compliance(&servers, "legacy").await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PolicyWarning"));
    assert!(
        message.contains("spec.image: Forbidden: registry \"docker.io\"") && message.contains("(rule registry, warn mode)"),
        "{message}"
    );
    let stored = servers.get("legacy").await.unwrap();
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &install.team).get("legacy").await.unwrap();
    eventually("a PolicyWarning Event", &install.operator, || async {
        (!events_with_reason(&admin, &install.team, "legacy", "PolicyWarning").await.is_empty()).then_some(())
    })
    .await;

    // Enforce, by a helm upgrade.
    let (ok, _, err) = run(
        "helm",
        kc,
        &[
            "upgrade",
            &install.release,
            controlplane::repo_root().join("deploy/charts/toolhive-operator").to_str().unwrap(),
            "-n",
            &install.release_ns,
            "--reuse-values",
            "--set",
            "tenancy.policy.defaults.enforcement.registry=enforce",
        ],
        None,
    );
    assert!(ok, "{err}");
    sync_policy_file(&admin, &install).await;
    // The stored server is checked again (the operator reloads the file within 5 s)
    // and reported, with an Event and the gauge...
    let (_, reason, message) = eventually("the stored server to be checked again", &install.operator, || async {
        compliance(&servers, "legacy").await.filter(|c| c.2.contains("enforce mode"))
    })
    .await;
    assert_eq!(reason, "PolicyViolation");
    assert!(message.contains("(rule registry, enforce mode)"), "{message}");
    let newcomer = Guide::manifest("newcomer", &install.team, "{image: docker.io/acme/legacy}");
    // ...and new servers like it are refused.
    let (ok, _, err) = run("kubectl", kc, &["apply", "-f", "-"], Some(&newcomer));
    assert!(!ok, "a server from a registry the enforced rule forbids was admitted");
    assert!(err.contains("spec.image: Forbidden: registry \"docker.io\" is not allowed"), "{err}");

    eventually("a PolicyViolation Event", &install.operator, || async {
        events_with_reason(&admin, &install.team, "legacy", "PolicyViolation")
            .await
            .iter()
            .any(|m| m.contains("enforce mode"))
            .then_some(())
    })
    .await;
    let findings = install
        .operator
        .metric("toolhive_mcpservers_policy_findings", &[("namespace", install.team.as_str()), ("rule", "registry"), ("mode", "enforce")]);
    assert_eq!(findings, Some(1.0));

    // Untouched: the same spec, generation and finalizers; its proxy still there.
    let now = servers.get("legacy").await.unwrap();
    assert_eq!(now.spec, stored.spec);
    assert_eq!(now.metadata.generation, stored.metadata.generation);
    assert!(now.metadata.deletion_timestamp.is_none());
    let still = Api::<Deployment>::namespaced(admin.clone(), &install.team).get("legacy").await.unwrap();
    assert_eq!(still.uid(), deployment.uid());
    assert_eq!(still.spec, deployment.spec, "the proxy Deployment is left as it was");
}
