//! Cluster mode on a control plane of its own (a cluster-wide operator would act on
//! the other tests' namespaces): the operator chart installed before the CRDs chart,
//! the operator started as the chart's ServiceAccount while the CRD is missing,
//! reconciling once the CRD arrives, `kubectl rollout restart` and the restarted-at
//! annotation, a standby taking over when the leader dies, deleting a namespace that
//! still holds MCPServers, and uninstalling both charts without losing MCPServers.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::ResourceExt;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::{MCPServer, RESTARTED_AT_ANNOTATION};

const TEAM_LABEL: &str = toolhive_operator::webhook::mutate::TEAM_LABEL;

use super::common::{Operator, eventually, eventually_within, impersonating_kubeconfig, run_ok, tempdir};

const RELEASE_NS: &str = "toolhive-system";
const KUBECTL_RESTART: &str = "kubectl.kubernetes.io/restartedAt";

#[test]
fn cluster_mode_late_crd_restarts_and_leader_takeover() {
    // Started on this thread, which outlives the children (they die with it).
    let cp = controlplane::ControlPlane::start(controlplane::Options { controller_manager: true, dir: None, node: false })
        .expect("dedicated control plane");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(scenario(&cp));
}

fn server(name: &str) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": name},
        "spec": {"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http", "mcpPort": 8080, "proxyPort": 8080}
    }))
    .unwrap()
}

async fn converged(api: &Api<MCPServer>, name: &str) -> Option<()> {
    let s = api.get_opt(name).await.ok()??;
    let url = s.status?.url;
    url.ends_with(":8080/mcp").then_some(())
}

async fn scenario(cp: &controlplane::ControlPlane) {
    let kc = cp.kubeconfig.as_path();
    let admin: Client = cp.client().await.unwrap();
    let work = tempdir("cluster-mode");
    let root = controlplane::repo_root();
    let chart = root.join("deploy/charts/toolhive-operator");

    // Operator chart first, in cluster mode (the default), webhook off.
    run_ok(
        "helm",
        kc,
        &[
            "upgrade",
            "-i",
            "toolhive-operator",
            chart.to_str().unwrap(),
            "-n",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            "webhook.enabled=false",
        ],
    );
    let out = run_ok("kubectl", kc, &["get", "clusterrole"]);
    assert!(out.contains("toolhive-operator-manager-role"), "{out}");
    let out = run_ok("kubectl", kc, &["get", "clusterrolebinding"]);
    assert!(out.contains("toolhive-operator-manager-rolebinding"), "{out}");
    let out = run_ok("kubectl", kc, &["get", "serviceaccount", "-n", RELEASE_NS]);
    assert!(out.contains("toolhive-operator"), "{out}");

    // The operator, as the chart's ServiceAccount, before the CRD exists.
    let sa_kc = impersonating_kubeconfig(kc, &work, RELEASE_NS, "toolhive-operator");
    let leader_args = ["--leader-elect".to_string(), "--leader-lease-seconds=4".into(), "--webhook-bind-address=".into()];
    let env = [("POD_NAMESPACE", RELEASE_NS)];
    let mut first = Operator::spawn(&sa_kc, &work, "first", &leader_args, &env);
    eventually("the missing-CRD line", &first, || async {
        first.log_text().contains("install the toolhive-operator-crds Helm chart first").then_some(())
    })
    .await;
    assert!(!first.ready(), "not ready without the CRD");
    assert_eq!(first.log_text().matches("is not installed").count(), 1, "one clear line, not a loop:\n{}", first.log_text());

    // The CRDs chart arrives; the operator starts working without a restart.
    let crds_chart = root.join("deploy/charts/toolhive-operator-crds");
    run_ok("helm", kc, &["upgrade", "-i", "toolhive-operator-crds", crds_chart.to_str().unwrap(), "--wait"]);
    eventually("readiness after the CRD appears", &first, || async { first.ready().then_some(()) }).await;

    // Cluster mode: any namespace.
    let team = cp.namespace(&admin, "anyteam").await.unwrap();
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &team);
    servers.create(&PostParams::default(), &server("osv")).await.unwrap();
    eventually("osv converged", &first, || converged(&servers, "osv")).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &team);
    let template_annotations =
        |d: &Deployment| d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.annotations.clone()).unwrap_or_default();

    // `kubectl rollout restart` bumps the Deployment's generation; the operator
    // re-applies its own fields and leaves kubectl's annotation alone.
    let applied_before = first.metric("toolhive_children_applied_total", &[("kind", "Deployment")]).unwrap();
    run_ok("kubectl", kc, &["rollout", "restart", "deployment/osv", "-n", &team]);
    eventually("the operator to re-apply the restarted Deployment", &first, || async {
        (first.metric("toolhive_children_applied_total", &[("kind", "Deployment")])? > applied_before).then_some(())
    })
    .await;
    let dep = deployments.get("osv").await.unwrap();
    assert!(template_annotations(&dep).contains_key(KUBECTL_RESTART), "rollout restart reverted: {:?}", template_annotations(&dep));

    // The MCPServer's restarted-at annotation rolls the proxy.
    let at = "2026-11-24T01:00:00Z";
    servers
        .patch("osv", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: at}}})))
        .await
        .unwrap();
    eventually("restarted-at reaches the pod template", &first, || async {
        let d = deployments.get("osv").await.ok()?;
        (template_annotations(&d).get(RESTARTED_AT_ANNOTATION).map(String::as_str) == Some(at)).then_some(())
    })
    .await;
    assert!(template_annotations(&deployments.get("osv").await.unwrap()).contains_key(KUBECTL_RESTART));

    // A standby joins, makes no writes, and takes over when the leader dies.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), RELEASE_NS);
    let holder = || async { leases.get_opt("toolhive-operator-leader-election").await.ok()??.spec?.holder_identity };
    assert!(holder().await.unwrap().ends_with(&format!("-{}", first.pid())));
    let second = Operator::spawn(&sa_kc, &work, "second", &leader_args, &env);
    eventually("the standby to come up", &second, || async { (second.metric("leader_election_master_status", &[])? == 0.0).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(second.metric("toolhive_children_applied_total", &[]), Some(0.0), "a standby writes nothing");
    first.kill();
    servers.create(&PostParams::default(), &server("after-takeover")).await.unwrap();
    // Lease of 4 s: the standby must win within the lease duration plus its retry period.
    eventually_within("the standby to take over and reconcile", &second, Duration::from_secs(20), || async {
        converged(&servers, "after-takeover").await
    })
    .await;
    assert!(holder().await.unwrap().ends_with(&format!("-{}", second.pid())));
    assert_eq!(second.metric("leader_election_master_status", &[]), Some(1.0));
    assert!(deployments.get_opt("after-takeover").await.unwrap().is_some());

    // Deleting the namespace with both servers in it: the operator releases its
    // finalizers although the namespace refuses new objects (Events), so the
    // namespace controller can finish.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces.delete(&team, &Default::default()).await.unwrap();
    eventually_within("the namespace to be deleted", &second, Duration::from_secs(90), || async {
        namespaces.get_opt(&team).await.ok()?.is_none().then_some(())
    })
    .await;
    drop(second);

    // The chart's self-managed webhook certificate is made once and kept by upgrades,
    // so the caBundle and the served certificate never change at different moments.
    // (This control plane is the test's own: the webhook, with no backend, blocks nobody else.)
    let chart_path = chart.to_str().unwrap();
    run_ok("helm", kc, &["upgrade", "toolhive-operator", chart_path, "-n", RELEASE_NS, "--reuse-values", "--set", "webhook.enabled=true"]);
    let secret_data =
        || run_ok("kubectl", kc, &["get", "secret", "-n", RELEASE_NS, "toolhive-operator-webhook-tls", "-o", "jsonpath={.data}"]);
    // On this API server the team label and mcpPort are defaulted in-process (a
    // MutatingAdmissionPolicy), so with no resource defaults in the policy the mutating
    // configuration holds no webhook and only the validating one trusts the CA.
    let ca_bundles = || {
        ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"].map(|kind| {
            run_ok("kubectl", kc, &["get", kind, "toolhive-operator-webhook", "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}"])
        })
    };
    let first_secret = secret_data();
    let first_bundles = ca_bundles();
    let ca: serde_json::Value = serde_json::from_str(&first_secret).unwrap();
    let ca = ca["ca.crt"].as_str().unwrap().to_string();
    assert!(!ca.is_empty());
    // Five validating webhooks (MCPServers, MCPRemoteProxies, VirtualMCPServers,
    // VirtualMCPCompositeToolDefinitions, EmbeddingServers), each trusting it.
    assert_eq!(
        first_bundles,
        [String::new(), [ca.as_str(); 5].join(" ")],
        "the validating webhooks trust the Secret's CA; there is no mutating one"
    );
    run_ok(
        "helm",
        kc,
        &["upgrade", "toolhive-operator", chart_path, "-n", RELEASE_NS, "--reuse-values", "--set", "operator.replicaCount=2"],
    );
    assert_eq!(secret_data(), first_secret, "an upgrade keeps the webhook certificate");
    assert_eq!(ca_bundles(), first_bundles, "and the caBundle");

    // The team label and mcpPort are filled in by the API server itself (a
    // MutatingAdmissionPolicy): with no resource defaults in the policy, the mutating
    // webhook has nothing to do and is not called at all. (Its backend is absent here
    // and failures are ignored, so only the in-process policy can label anything.)
    let kept_ns = cp.namespace(&admin, "kept").await.unwrap();
    run_ok(
        "helm",
        kc,
        &[
            "upgrade",
            "toolhive-operator",
            chart_path,
            "-n",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "webhook.url=https://127.0.0.1:1",
            "--set",
            &format!("tenancy.policy.namespaces.{kept_ns}.team=core"),
        ],
    );
    let webhooks =
        run_ok("kubectl", kc, &["get", "mutatingwebhookconfiguration", "toolhive-operator-webhook", "-o", "jsonpath={.webhooks}"]);
    assert!(webhooks.is_empty() || webhooks == "[]", "no mutating webhook to call: {webhooks}");
    let kept: Api<MCPServer> = Api::namespaced(admin.clone(), &kept_ns);
    // A new or changed policy takes a moment to load in the API server.
    let mut unported = server("kept");
    unported.spec.mcp_port = None;
    unported.spec.proxy_port = 9000;
    let http = eventually_within("the defaults policy to label a dry-run create", &first, Duration::from_secs(30), || async {
        let created = kept.create(&PostParams { dry_run: true, ..Default::default() }, &unported).await.ok()?;
        (created.labels().get(TEAM_LABEL).map(String::as_str) == Some("core")).then_some(created)
    })
    .await;
    assert_eq!(http.spec.mcp_port, Some(9000), "mcpPort defaults to proxyPort for HTTP transports");
    let mut stdio = server("kept-stdio");
    stdio.spec.transport = toolhive_operator::kinds::mcpserver::api::Transport::Stdio;
    stdio.spec.mcp_port = None;
    stdio.metadata.labels = Some([(TEAM_LABEL.to_string(), "mine".to_string())].into());
    let stdio = kept.create(&PostParams::default(), &stdio).await.unwrap();
    assert_eq!(stdio.spec.mcp_port, None, "a stdio server listens on no port");
    assert_eq!(stdio.labels().get(TEAM_LABEL).map(String::as_str), Some("mine"), "a label the user set is kept");
    kept.create(&PostParams::default(), &server("kept")).await.unwrap();

    // Uninstalling both charts keeps the CRD, and so every MCPServer (crds.keep).
    let servers: Api<MCPServer> = Api::all(admin.clone());
    let before = servers.list_metadata(&Default::default()).await.unwrap().items.len();
    assert!(before > 0);
    run_ok("helm", kc, &["uninstall", "toolhive-operator", "-n", RELEASE_NS]);
    run_ok("helm", kc, &["uninstall", "toolhive-operator-crds"]);
    assert_eq!(servers.list_metadata(&Default::default()).await.unwrap().items.len(), before, "MCPServers kept");
}
