//! Two namespace-mode installs on one control plane, as business units share a cluster:
//! releases with other names in other namespaces, both with the chart's default
//! `fullnameOverride`. Each install's cluster-scoped objects carry its release name, its
//! admission applies only to the namespaces it serves, so one operator down blocks only
//! its own teams, and upgrading or uninstalling one leaves the other's objects alone.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingWebhookConfiguration};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::{Api, Client, ResourceExt, api::PostParams};
use serde_json::json;

use super::common::{eventually, run, run_ok};
use super::guide::{Guide, guide, server};
use super::release::{Install, create, install_release, ready, running};

async fn install(admin: &Client, kc: &Path, ca: &controlplane::Authority, unit: &str, elsewhere: &str) -> Install {
    let policy = json!({"contact": format!("#{unit}-platform"), "defaults": {"allowedRegistries": ["ghcr.io/acme"]}});
    let webhook = json!({"unservedNamespaces": {"servedElsewhere": [elsewhere]}});
    install_release(admin, kc, ca, unit, webhook, policy).await
}

/// resourceVersions of an install's cluster-scoped objects, to see they are untouched.
async fn cluster_objects(admin: &Client, install: &Install) -> Vec<Option<String>> {
    let stem = install.cluster_name();
    let webhook = format!("{stem}-webhook");
    vec![
        Api::<ClusterRole>::all(admin.clone()).get_opt(&format!("{stem}-manager-role")).await.unwrap().and_then(|o| o.resource_version()),
        Api::<ValidatingWebhookConfiguration>::all(admin.clone()).get_opt(&webhook).await.unwrap().and_then(|o| o.resource_version()),
        Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .get_opt(&format!("{webhook}-unserved"))
            .await
            .unwrap()
            .and_then(|o| o.resource_version()),
    ]
}

#[tokio::test]
async fn two_installs_share_a_cluster_and_stay_out_of_each_others_way() {
    let g = guide(); // the CRDs, installed once for the binary
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("two-installs-ca").unwrap();
    // Namespaces are made with a unique suffix: each install names the other's team
    // namespace before it exists, so `b` is made first and named to `a` afterwards.
    let mut b = install(&admin, kc, &ca, "unit-b", "unit-a-placeholder").await;
    let a = install(&admin, kc, &ca, "unit-a", &b.team).await;
    let (ok, _, err) = run(
        "helm",
        kc,
        &[
            "upgrade",
            &b.release,
            chart().as_str(),
            "-n",
            &b.release_ns,
            "-f",
            b.values.to_str().unwrap(),
            "--set",
            &format!("webhook.unservedNamespaces.servedElsewhere={{{}}}", a.team),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_ne!(a.cluster_name(), b.cluster_name());
    assert!(cluster_objects(&admin, &a).await.iter().all(Option::is_some), "install a's cluster-scoped objects exist");
    assert!(cluster_objects(&admin, &b).await.iter().all(Option::is_some), "install b's cluster-scoped objects exist");
    ready(&a).await;
    ready(&b).await;

    // Each team creates; each operator reconciles its own, and each webhook answers
    // only for its own namespaces (a's policy allows only ghcr.io/acme).
    create(&a, &admin, "alpha").await.unwrap();
    create(&b, &admin, "beta").await.unwrap();
    running(&a, &admin, "alpha").await;
    running(&b, &admin, "beta").await;
    let refused = a.servers(&admin).create(&PostParams::default(), &server("bad", json!({"image": "docker.io/x/y"}))).await.unwrap_err();
    assert!(refused.to_string().contains("registry \"docker.io\" is not allowed"), "{refused}");

    // A namespace neither serves: admitted, with each install's warning.
    let nobody = cp.namespace(&admin, "unit-none").await.unwrap();
    let warnings: Vec<String> = [(&a, "unit-a"), (&b, "unit-b")]
        .iter()
        .map(|(install, unit)| format!(
            "metadata.namespace: namespace \"{nobody}\" is not served by the ToolHive operator {} in {} (it serves {}): this MCPServer will not run; ask #{unit}-platform",
            install.release, install.release_ns, install.team
        ))
        .collect();
    let lost = Guide::manifest("lost", &nobody, "{image: ghcr.io/acme/tool}");
    // (The API server takes up new admission policies within a second or so.)
    eventually("both installs to warn", &a.operator, || async {
        let (ok, _, err) = run("kubectl", kc, &["apply", "--dry-run=server", "-f", "-"], Some(&lost));
        assert!(ok, "{err}");
        warnings.iter().all(|w| err.contains(w)).then_some(())
    })
    .await;
    // Neither warns in the other's namespace (b's policy, changed by the upgrade
    // above, also takes a moment to reach the API server).
    let gamma = Guide::manifest("gamma", &a.team, "{image: ghcr.io/acme/tool}");
    eventually("b to stop warning in a's namespace", &b.operator, || async {
        let (ok, _, err) = run("kubectl", kc, &["apply", "--dry-run=server", "-f", "-"], Some(&gamma));
        assert!(ok, "{err}");
        (!err.contains(&b.release)).then_some(())
    })
    .await;

    // Operator b down: b's namespace is blocked (its webhook fails closed), a's is not.
    b.operator.kill();
    let blocked = create(&b, &admin, "while-down").await.unwrap_err();
    assert!(blocked.to_string().contains("failed calling webhook"), "{blocked}");
    create(&a, &admin, "alpha-2").await.unwrap();
    running(&a, &admin, "alpha-2").await;
    b.operator.start();
    ready(&b).await;
    eventually("b's webhook to answer again", &b.operator, || async { create(&b, &admin, "beta-2").await.ok() }).await;
    running(&b, &admin, "beta-2").await;

    // Upgrading a (a new contact) leaves b's cluster-scoped objects as they were.
    let before = cluster_objects(&admin, &b).await;
    let (ok, _, err) = run(
        "helm",
        kc,
        &["upgrade", &a.release, chart().as_str(), "-n", &a.release_ns, "--reuse-values", "--set", "tenancy.policy.contact=#elsewhere"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(cluster_objects(&admin, &b).await, before, "b untouched by a's upgrade");

    // Uninstalling a removes a's and keeps b's; b goes on serving.
    run_ok("helm", kc, &["uninstall", &a.release, "-n", &a.release_ns]);
    assert!(cluster_objects(&admin, &a).await.iter().all(Option::is_none), "a's cluster-scoped objects removed");
    assert_eq!(cluster_objects(&admin, &b).await, before, "b untouched by a's uninstall");
    create(&b, &admin, "beta-3").await.unwrap();
    running(&b, &admin, "beta-3").await;
    let _ = g;
}

fn chart() -> String {
    controlplane::repo_root().join("deploy/charts/toolhive-operator").to_str().unwrap().to_string()
}
