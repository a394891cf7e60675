//! MCPRemoteProxy through a real API server, the webhook called over TLS, the operator
//! running as the chart's ServiceAccount (namespace mode): ToolHive v0.66.0's example
//! proxies apply and each gets its runner's objects (RBAC reading ConfigMaps only) and
//! a status; the tenancy policy's allowedRemoteHosts and the remote URL check refuse
//! at admission with the field path; a proxy joins its group's list; an MCPServer
//! naming a bearer-token config (a remote proxy's kind of auth) is Failed.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Service, ServiceAccount},
    rbac::v1::Role,
};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use toolhive_operator::kinds::{
    group::MCPGroup,
    mcpserver::{
        api::{MCPServer, Phase},
        remote::MCPRemoteProxy,
    },
};

use super::common::{eventually, run};
use super::guide::guide;
use super::release::{install_release, ready};
use super::server_entries::upstream_source;

fn proxy(name: &str, spec: Value) -> MCPRemoteProxy {
    serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPRemoteProxy",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

#[tokio::test]
async fn remote_proxies_get_their_runner_and_are_held_to_the_tenancy_policy() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("remote-proxies-webhook-ca").unwrap();
    let policy = json!({"defaults": {"allowedRemoteHosts": ["mcp.example.com", "api.github.com", "*.saas.example.com"]}});
    let install = install_release(&admin, kc, &ca, "remote", json!({}), policy).await;
    ready(&install).await;
    let ns = install.team.clone();
    let proxies: Api<MCPRemoteProxy> = Api::namespaced(admin.clone(), &ns);
    let post = PostParams::default();

    // Every MCPRemoteProxy of ToolHive v0.66.0's examples, with what it names.
    let examples = upstream_source().join("examples/operator");
    let mut names = Vec::new();
    for file in ["external-auth/mcpremoteproxy_with_bearer_token.yaml", "mcp-servers/mcpremoteproxy_with_oidcconfig_ref.yaml"] {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut object: Value = serde::Deserialize::deserialize(doc).unwrap();
            if object.is_null() {
                continue;
            }
            object["metadata"]["namespace"] = json!(ns);
            let (ok, _, err) = run("kubectl", kc, &["apply", "--server-side", "-f", "-"], Some(&object.to_string()));
            assert!(ok, "{} {} of {file}: {err}", object["kind"], object["metadata"]["name"]);
            if object["kind"] == "MCPRemoteProxy" {
                names.push(object["metadata"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(names, ["api-proxy", "github-proxy"]);

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(admin.clone(), &ns);
    for name in &names {
        let status = eventually(&format!("{name} reconciled"), &install.operator, || async {
            let status = proxies.get(name).await.ok()?.status?;
            (!status.url.is_empty()).then_some(status)
        })
        .await;
        // No node runs pods here: the proxy waits for its Deployment.
        assert_eq!(status.phase, Some(Phase::Pending), "{name}: {}", status.message);
        assert_eq!(status.url, format!("http://mcp-{name}-remote-proxy.{ns}.svc.cluster.local:8080"));
        let deployment = deployments.get(name).await.unwrap();
        let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(container.args.as_deref().unwrap_or_default(), ["run", "--foreground=true", "placeholder-for-remote-proxy"]);
        assert!(services.get_opt(&format!("mcp-{name}-remote-proxy")).await.unwrap().is_some());
        assert!(accounts.get_opt(&format!("{name}-remote-proxy-runner")).await.unwrap().is_some());
        let rules = roles.get(&format!("{name}-remote-proxy-runner")).await.unwrap().rules.unwrap_or_default();
        let resources: Vec<String> = rules.iter().flat_map(|r| r.resources.clone().unwrap_or_default()).collect();
        assert_eq!(resources, ["configmaps"], "{name}: the runner reads no Secret");
    }
    // The bearer token reaches the runner from its Secret, set by the kubelet.
    let deployment = deployments.get("api-proxy").await.unwrap();
    let env = deployment.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap_or_default();
    let token = env.iter().find(|e| e.name == "TOOLHIVE_SECRET_api-bearer-token").expect("the bearer token's variable");
    assert_eq!(token.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|s| s.key.as_str()), Some("token"));

    // Refused at admission, with the field and what to change.
    let refused = |name: &'static str, spec: Value| {
        let proxies = proxies.clone();
        async move { proxies.create(&PostParams::default(), &proxy(name, spec)).await.unwrap_err().to_string() }
    };
    let elsewhere = refused("elsewhere", json!({"remoteUrl": "https://mcp.evil.test/mcp"})).await;
    assert!(elsewhere.contains("spec.remoteUrl: Forbidden: host \"mcp.evil.test\" is not among the remote hosts"), "{elsewhere}");
    let metadata = refused("metadata", json!({"remoteUrl": "http://169.254.169.254/latest"})).await;
    assert!(metadata.contains("spec.remoteUrl: Invalid value: remote URL host 169.254.169.254 is never allowed"), "{metadata}");
    let templated = refused("templated", json!({"remoteUrl": "https://mcp.example.com", "podTemplateSpec": {"spec": {}}})).await;
    assert!(templated.contains("spec.podTemplateSpec: Forbidden"), "{templated}");
    proxies
        .create(&post, &proxy("tenant-saas", json!({"remoteUrl": "https://eu.saas.example.com/mcp", "groupRef": {"name": "tools"}})))
        .await
        .unwrap();

    // The group lists the proxy that names it.
    let groups: Api<MCPGroup> = Api::namespaced(admin.clone(), &ns);
    groups.create(&post, &serde_json::from_value(json!({"metadata": {"name": "tools"}, "spec": {}})).unwrap()).await.unwrap();
    eventually("the group to list its remote proxy", &install.operator, || async {
        let status = groups.get("tools").await.ok()?.status?;
        (status.remote_proxies == ["tenant-saas"] && status.remote_proxy_count == 1).then_some(())
    })
    .await;

    // A bearer token means nothing to an MCPServer's own container: Failed, not ignored.
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &ns);
    let server: MCPServer = serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "bearer-server"},
        "spec": {"image": "ghcr.io/stacklok/tool:v1", "externalAuthConfigRef": {"name": "api-bearer-auth"}}}))
    .unwrap();
    servers.create(&post, &server).await.unwrap();
    let message = eventually("the MCPServer naming a bearer token Failed", &install.operator, || async {
        let status = servers.get("bearer-server").await.ok()?.status?;
        (status.phase == Some(Phase::Failed)).then_some(status.message)
    })
    .await;
    assert!(message.contains("bearerToken authenticates a proxy to a remote MCP server"), "{message}");

    run("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns], None);
}
