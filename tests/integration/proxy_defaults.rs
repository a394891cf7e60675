//! What the platform's chart values and a server's own overrides put into its proxy,
//! through a real API server and the chart's own RBAC: default pull secrets and the
//! default Redis's password (`defaultImagePullSecrets`, `defaultRedis.existingSecret`),
//! the proxy pod's placement (`nodeSelector`, `tolerations`, `affinity`), pods/attach
//! for stdio proxies only, one proxy for a stdio server, fields this release refuses
//! rather than ignores, and a `kubectl rollout restart` that survives reconciles.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::ServiceAccount,
    rbac::v1::{PolicyRule, Role},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use toolhive_operator::kinds::mcpserver::api::MCPServer;

use super::common::{eventually, run_ok};
use super::guide::{guide, server};
use super::release::{install_release_with, ready};

const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

fn attaches(role: &Role) -> bool {
    role.rules.iter().flatten().any(|r: &PolicyRule| r.resources.iter().flatten().any(|res| res == "pods/attach"))
}

#[tokio::test]
async fn platform_defaults_and_placement_reach_the_proxy_and_stdio_proxies_alone_may_attach() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("defaults-webhook-ca").unwrap();
    let operator_values = json!({
        "defaultImagePullSecrets": ["regcred", {"name": "shared"}],
        "defaultRedis": {"addr": "redis.platform:6379", "existingSecret": "redis-auth"}
    });
    let policy = json!({"defaults": {"allowedRegistries": ["ghcr.io/acme"]}});
    let install = install_release_with(&admin, kc, &ca, "defaults", json!({}), policy, operator_values).await;
    ready(&install).await;
    let servers: Api<MCPServer> = install.servers(&admin);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &install.team);
    let roles: Api<Role> = Api::namespaced(admin.clone(), &install.team);
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &install.team);

    // Fields the proxy runner this release drives cannot carry out: refused, by name.
    for (field, spec) in [
        ("spec.maxRequestBodySize", json!({"image": "ghcr.io/acme/tool", "maxRequestBodySize": 1024})),
        ("spec.proxyReadTimeout", json!({"image": "ghcr.io/acme/tool", "proxyReadTimeout": "1m"})),
        (
            "spec.sessionStorage.tls",
            json!({"image": "ghcr.io/acme/tool", "sessionStorage": {"provider": "redis", "address": "r:6379", "tls": {}}}),
        ),
    ] {
        let refused = eventually(&format!("{field} to be refused"), &install.operator, || async {
            match servers.create(&PostParams::default(), &server("refused", spec.clone())).await {
                Err(kube::Error::Api(e)) => Some(e.message),
                Ok(_) => panic!("{field} was accepted"),
                Err(_) => None,
            }
        })
        .await;
        assert!(refused.contains(&format!("{field} (")) && refused.contains("is not supported by this operator release"), "{refused}");
    }

    let http_spec = json!({
        "image": "ghcr.io/acme/tool", "transport": "streamable-http", "mcpPort": 8080,
        "resourceOverrides": {"proxyDeployment": {
            "imagePullSecrets": [{"name": "team-pull"}, {"name": "shared"}],
            "nodeSelector": {"pool": "mcp"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mcp", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["mcp"]}]}]}}}
        }}
    });
    servers.create(&PostParams::default(), &server("http", http_spec)).await.unwrap();
    servers.create(&PostParams::default(), &server("stdio", json!({"image": "ghcr.io/acme/tool", "replicas": 3}))).await.unwrap();

    let http = eventually("the http proxy Deployment", &install.operator, || async { deployments.get_opt("http").await.ok()? }).await;
    let pod = serde_json::to_value(http.spec.unwrap().template.spec.unwrap()).unwrap();
    let pull = json!([{"name": "team-pull"}, {"name": "shared"}, {"name": "regcred"}]);
    assert_eq!(pod["imagePullSecrets"], pull, "the server's own first, then the platform's it does not name");
    assert_eq!(pod["nodeSelector"], json!({"pool": "mcp"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["key"],
        "pool"
    );
    let password = pod["containers"][0]["env"].as_array().unwrap().iter().find(|e| e["name"] == "THV_SESSION_REDIS_PASSWORD").cloned();
    assert_eq!(password.map(|e| e["valueFrom"]["secretKeyRef"].clone()), Some(json!({"name": "redis-auth", "key": "redis-password"})));
    for account in ["http-proxy-runner", "http-sa"] {
        let sa = eventually(account, &install.operator, || async { accounts.get_opt(account).await.ok()? }).await;
        assert_eq!(serde_json::to_value(sa.image_pull_secrets).unwrap(), pull, "{account}");
    }
    let http_role = eventually("the http proxy Role", &install.operator, || async { roles.get_opt("http-proxy-runner").await.ok()? }).await;
    assert!(!attaches(&http_role), "a streamable-http proxy never attaches to a pod");

    // A stdio server: one proxy whatever spec.replicas says, and the condition says why.
    let stdio_role =
        eventually("the stdio proxy Role", &install.operator, || async { roles.get_opt("stdio-proxy-runner").await.ok()? }).await;
    assert!(attaches(&stdio_role), "a stdio proxy attaches to its server's pod");
    let stdio = eventually("the stdio proxy Deployment", &install.operator, || async { deployments.get_opt("stdio").await.ok()? }).await;
    assert_eq!(stdio.spec.unwrap().replicas, Some(1));
    let capped = eventually("StdioReplicaCapped", &install.operator, || async {
        let status = servers.get("stdio").await.ok()?.status?;
        status.conditions.into_iter().find(|c| c.type_ == "StdioReplicaCapped")
    })
    .await;
    assert_eq!((capped.status.as_str(), capped.reason.as_str()), ("True", "StdioTransportCapAt1"));

    // `kubectl rollout restart`, then a spec change the operator applies: the restart
    // annotation stays (the operator applies only the fields it owns).
    run_ok("kubectl", kc, &["rollout", "restart", "deployment/http", "-n", &install.team]);
    let patch = json!({"spec": {"args": ["--verbose"]}});
    servers.patch("http", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let template = eventually("the proxy Deployment to carry the new generation", &install.operator, || async {
        let d = deployments.get("http").await.ok()?;
        let template = d.spec?.template;
        let annotations: Value = serde_json::to_value(template.metadata.as_ref()?.annotations.clone()?).ok()?;
        (annotations[toolhive_operator::kinds::mcpserver::resources::GENERATION_ANNOTATION] == "2").then_some(annotations)
    })
    .await;
    assert!(template.get(RESTARTED_AT).is_some(), "the rollout restart annotation was dropped: {template}");

    run_ok("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns]);
}
