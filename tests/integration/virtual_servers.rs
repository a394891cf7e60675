//! VirtualMCPServer through a real API server, the webhook called over TLS, the
//! operator running as the chart's ServiceAccount (namespace mode, so the API
//! server's RBAC proves the chart grants what the controller uses):
//! - ToolHive v0.66.0's simplest example applies and gets the reference's children,
//!   with the group's backends listed in the vMCP's configuration file, the chart's
//!   `vmcpImage`, and no Role or API token for the vMCP pod;
//! - backends joining and leaving the group (created, deleted, or moved by an edit)
//!   change the file (and so roll the pod);
//! - a server naming a group that does not exist is Failed with the field;
//! - what this release does not carry out is refused at admission with its path, and
//!   every VirtualMCPServer of v0.66.0's examples either applies or is refused so;
//! - composite tools from VirtualMCPCompositeToolDefinitions reach the vMCP's file,
//!   a missing one fails the server that names it, one that cannot run is refused.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
    rbac::v1::Role,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use toolhive_operator::kinds::{
    mcpserver::api::MCPServer,
    serverentry::MCPServerEntry,
    telemetry::MCPTelemetryConfig,
    virtualmcp::{
        api::{VirtualMCPServer, VirtualPhase},
        definition::VirtualMCPCompositeToolDefinition,
    },
};

use super::common::{eventually, run};
use super::guide::guide;
use super::release::{install_release_with, ready};
use super::server_entries::upstream_source;

const VMCP_IMAGE: &str = "registry.example.com/toolhive/vmcp:test";

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": kind, "metadata": {"name": name}, "spec": spec}))
        .unwrap()
}

/// The backends the vMCP's configuration file lists, by name.
async fn listed_backends(configmaps: &Api<ConfigMap>, name: &str) -> Option<Vec<(String, String)>> {
    let data = configmaps.get_opt(&format!("{name}-vmcp-config")).await.ok()??.data?;
    let config: Value = serde_yaml_ng::from_str(data.get("config.yaml")?).ok()?;
    let backends = config["backends"].as_array()?;
    Some(backends.iter().map(|b| (b["name"].as_str().unwrap_or("").into(), b["url"].as_str().unwrap_or("").into())).collect())
}

#[tokio::test]
async fn virtual_servers_get_the_reference_s_children_and_follow_their_group() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("virtual-webhook-ca").unwrap();
    let install = install_release_with(&admin, kc, &ca, "virtual", json!({}), json!({}), json!({"vmcpImage": VMCP_IMAGE})).await;
    ready(&install).await;
    let ns = install.team.clone();
    let post = PostParams::default();

    // v0.66.0's simplest example: a group, a stdio server in it, a VirtualMCPServer.
    let examples = upstream_source().join("examples/operator/virtual-mcps");
    let text = std::fs::read_to_string(examples.join("vmcp_simple_discovered.yaml")).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let Ok(mut object) = <Value as serde::Deserialize>::deserialize(doc) else { continue };
        if object.is_null() {
            continue;
        }
        object["metadata"]["namespace"] = json!(ns);
        let (ok, _, err) = run("kubectl", kc, &["apply", "--server-side", "-f", "-"], Some(&object.to_string()));
        assert!(ok, "{} {}: {err}", object["kind"], object["metadata"]["name"]);
    }
    let virtuals: Api<VirtualMCPServer> = Api::namespaced(admin.clone(), &ns);
    let status = eventually("simple-vmcp reconciled", &install.operator, || async {
        let status = virtuals.get("simple-vmcp").await.ok()?.status?;
        (!status.discovered_backends.is_empty()).then_some(status)
    })
    .await;
    assert_eq!(status.url, format!("http://vmcp-simple-vmcp.{ns}.svc.cluster.local:4483"));
    // No node runs pods here: the server and the vMCP wait for their Deployments.
    assert_eq!(status.phase, Some(VirtualPhase::Pending), "{}", status.message);
    assert_eq!(
        (status.discovered_backends[0].name.as_str(), status.discovered_backends[0].status.as_str()),
        ("yardstick-simple", "unavailable")
    );
    assert_eq!(status.backend_count, 0);
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(condition("BackendsDiscovered"), Some(("True".into(), "BackendsDiscoveredSuccessfully".into())));
    assert_eq!(condition("GroupRefValidated"), Some(("True".into(), "GroupRefValid".into())));
    assert_eq!(condition("Ready"), Some(("False".into(), "DeploymentNotReady".into())));

    // The reference's children, the vMCP reaching each backend through its proxy Service.
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let backends = listed_backends(&configmaps, "simple-vmcp").await.unwrap();
    assert_eq!(backends, [("yardstick-simple".into(), format!("http://mcp-yardstick-simple-proxy.{ns}.svc.cluster.local:8080/mcp"))]);
    let config: Value =
        serde_yaml_ng::from_str(&configmaps.get("simple-vmcp-vmcp-config").await.unwrap().data.unwrap()["config.yaml"]).unwrap();
    assert_eq!(config["incomingAuth"]["authz"]["policies"], json!(["permit(principal, action, resource);"]));
    assert_eq!(config["aggregation"]["conflictResolutionConfig"]["prefixFormat"], "{workload}_");
    assert_eq!(config["operational"]["failureHandling"]["healthCheckInterval"], "30s");
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns).get("simple-vmcp").await.unwrap();
    let pod = deployment.spec.unwrap().template;
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some(VMCP_IMAGE), "the chart's vmcpImage");
    assert_eq!(pod.spec.as_ref().unwrap().service_account_name.as_deref(), Some("simple-vmcp-vmcp"));
    let hash_before = pod.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["toolhive.stacklok.dev/vmcp-config-hash"].clone();
    let service = Api::<Service>::namespaced(admin.clone(), &ns).get("vmcp-simple-vmcp").await.unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 4483);
    // The vMCP calls no Kubernetes API (its backends are in its file): no Role, no token.
    assert!(Api::<Role>::namespaced(admin.clone(), &ns).get_opt("simple-vmcp-vmcp").await.unwrap().is_none());
    assert_eq!(pod.spec.as_ref().unwrap().automount_service_account_token, Some(false));

    // Telemetry from an MCPTelemetryConfig: in the file, its resource and sensitive
    // header in the environment (the header by reference); the vMCP rolls.
    let otel = json!({"openTelemetry": {"enabled": true, "endpoint": "https://collector.obs:4317", "tracing": {"enabled": true},
        "sensitiveHeaders": [{"name": "x-api-key", "secretKeyRef": {"name": "otel-creds", "key": "token"}}]}});
    Api::<MCPTelemetryConfig>::namespaced(admin.clone(), &ns).create(&post, &object("MCPTelemetryConfig", "otel", otel)).await.unwrap();
    let traced = json!({"spec": {"telemetryConfigRef": {"name": "otel", "serviceName": "team-gateway"}}});
    virtuals.patch("simple-vmcp", &PatchParams::default(), &Patch::Merge(&traced)).await.unwrap();
    let telemetry = eventually("the telemetry in the vMCP's file", &install.operator, || async {
        let data = configmaps.get_opt("simple-vmcp-vmcp-config").await.ok()??.data?;
        let config: Value = serde_yaml_ng::from_str(data.get("config.yaml")?).ok()?;
        (config["telemetry"]["endpoint"] == "collector.obs:4317").then(|| config["telemetry"].clone())
    })
    .await;
    assert_eq!((&telemetry["serviceName"], &telemetry["tracingEnabled"]), (&json!("team-gateway"), &json!(true)), "{telemetry}");
    let (hash_before, env) = eventually("the vMCP rolled with the telemetry's environment", &install.operator, || async {
        let template = Api::<Deployment>::namespaced(admin.clone(), &ns).get("simple-vmcp").await.ok()?.spec?.template;
        let hash = template.metadata.as_ref()?.annotations.as_ref()?.get("toolhive.stacklok.dev/vmcp-config-hash")?.clone();
        (hash != hash_before).then(|| (hash, template.spec.unwrap().containers[0].env.clone().unwrap_or_default()))
    })
    .await;
    let var = |name: &str| env.iter().find(|e| e.name == name).cloned();
    assert_eq!(
        var("OTEL_RESOURCE_ATTRIBUTES").unwrap().value.as_deref(),
        Some(format!("service.name=team-gateway,service.namespace={ns}").as_str())
    );
    let header = var("TOOLHIVE_OTEL_HEADER_X_API_KEY").unwrap();
    assert!(header.value.is_none() && header.value_from.unwrap().secret_key_ref.unwrap().name == "otel-creds");

    // A remote entry joins the group; the stdio server leaves it (deleted): the file follows.
    let entries: Api<MCPServerEntry> = Api::namespaced(admin.clone(), &ns);
    let docs = json!({"remoteUrl": "https://docs.example.com/mcp", "transport": "streamable-http", "groupRef": {"name": "my-services"}});
    entries.create(&post, &object("MCPServerEntry", "docs", docs)).await.unwrap();
    eventually("the entry in the vMCP's file", &install.operator, || async {
        let names: Vec<String> = listed_backends(&configmaps, "simple-vmcp").await?.into_iter().map(|(n, _)| n).collect();
        (names == ["docs", "yardstick-simple"]).then_some(())
    })
    .await;
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &ns);
    servers.delete("yardstick-simple", &DeleteParams::default()).await.unwrap();
    eventually("the deleted server out of the vMCP's file", &install.operator, || async {
        let names: Vec<String> = listed_backends(&configmaps, "simple-vmcp").await?.into_iter().map(|(n, _)| n).collect();
        (names == ["docs"]).then_some(())
    })
    .await;
    // A server moved into the group by an edit joins the file; moved out, it leaves.
    let moved = json!({"image": "ghcr.io/acme/tool:v1", "transport": "streamable-http"});
    servers.create(&post, &object("MCPServer", "moved", moved)).await.unwrap();
    let names =
        || async { listed_backends(&configmaps, "simple-vmcp").await.map(|b| b.into_iter().map(|(n, _)| n).collect::<Vec<String>>()) };
    let into_group = json!({"spec": {"groupRef": {"name": "my-services"}}});
    servers.patch("moved", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(into_group)).await.unwrap();
    eventually("the server moved in, in the file", &install.operator, || async { (names().await? == ["docs", "moved"]).then_some(()) })
        .await;
    let out_of_group = json!({"spec": {"groupRef": null}});
    servers.patch("moved", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(out_of_group)).await.unwrap();
    eventually("the server moved out, out of the file", &install.operator, || async { (names().await? == ["docs"]).then_some(()) }).await;
    let groups: Api<toolhive_operator::kinds::group::MCPGroup> = Api::namespaced(admin.clone(), &ns);
    eventually("the server moved out, out of the group's list", &install.operator, || async {
        let status = groups.get("my-services").await.ok()?.status?;
        (status.servers.is_empty() && status.server_count == 0).then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let hash_after = deployments.get("simple-vmcp").await.unwrap().spec.unwrap().template.metadata.unwrap().annotations.unwrap()
        ["toolhive.stacklok.dev/vmcp-config-hash"]
        .clone();
    assert_ne!(hash_before, hash_after, "a new file rolls the vMCP pod");

    // A group that does not exist: Failed, naming the field; its Deployment runs nothing.
    let lost = json!({"groupRef": {"name": "nope"}, "incomingAuth": {"type": "anonymous"}});
    virtuals.create(&post, &object("VirtualMCPServer", "lost", lost)).await.unwrap();
    let message = eventually("the VirtualMCPServer naming no group Failed", &install.operator, || async {
        let status = virtuals.get("lost").await.ok()?.status?;
        (status.phase == Some(VirtualPhase::Failed)).then_some(status.message)
    })
    .await;
    assert!(message.contains("spec.groupRef: MCPGroup nope does not exist"), "{message}");
    let replicas = eventually("the failed server's Deployment", &install.operator, || async {
        deployments.get_opt("lost").await.ok()?.and_then(|d| d.spec?.replicas)
    })
    .await;
    assert_eq!(replicas, 0);

    // Refused at admission, with the field and why.
    let refused = virtuals
        .create(
            &post,
            &object(
                "VirtualMCPServer",
                "composite",
                json!({"groupRef": {"name": "my-services"}, "incomingAuth": {"type": "anonymous"},
                    "config": {"compositeTools": [{"name": "both", "description": "loops", "steps": [
                        {"id": "a", "tool": "x.y", "dependsOn": ["b"]}, {"id": "b", "tool": "x.z", "dependsOn": ["a"]}]}]}}),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spec.config.compositeTools[0].steps: Invalid value: the steps depend on each other in a cycle"), "{refused}");

    // Audit settings and the callers' headers to forward reach the vMCP's file; an event
    // type the vMCP does not know (it would not start) is refused with its path.
    let audited = json!({"groupRef": {"name": "my-services"}, "incomingAuth": {"type": "anonymous"}, "passthroughHeaders": ["X-Tenant"],
        "config": {"audit": {"enabled": true, "component": "team-vmcp", "eventTypes": ["mcp_tool_call"]}, "passthroughHeaders": ["X-Other"]}});
    virtuals.create(&post, &object("VirtualMCPServer", "audited", audited)).await.unwrap();
    let file = eventually("the audited vMCP's file", &install.operator, || async {
        let data = configmaps.get("audited-vmcp-config").await.ok()?.data?;
        serde_yaml_ng::from_str::<Value>(data.get("config.yaml")?).ok()
    })
    .await;
    let audit = &file["audit"];
    assert_eq!((&audit["component"], &audit["eventTypes"]), (&json!("team-vmcp"), &json!(["mcp_tool_call"])), "{file}");
    // spec.passthroughHeaders replaces spec.config's list, as the reference's does.
    assert_eq!(file["passthroughHeaders"], json!(["X-Tenant"]), "{file}");
    virtuals.delete("audited", &Default::default()).await.unwrap();
    let unknown = json!({"groupRef": {"name": "my-services"}, "incomingAuth": {"type": "anonymous"},
        "config": {"audit": {"enabled": true, "eventTypes": ["tool_call"]}}});
    let refused = virtuals.create(&post, &object("VirtualMCPServer", "misaudited", unknown)).await.unwrap_err().to_string();
    assert!(refused.contains("spec.config.audit.eventTypes[0]"), "{refused}");

    // Composite tools from a VirtualMCPCompositeToolDefinition: a server naming one that
    // does not exist yet is Failed; once it is made (watched on demand), the tool
    // joins the server's inline one in the vMCP's file. One that cannot run is refused.
    let definitions: Api<VirtualMCPCompositeToolDefinition> = Api::namespaced(admin.clone(), &ns);
    let composed = json!({"groupRef": {"name": "my-services"}, "incomingAuth": {"type": "anonymous"},
        "config": {"compositeToolRefs": [{"name": "fetch-twice"}],
            "compositeTools": [{"name": "docs_once", "description": "Reads the docs", "steps": [{"id": "a", "tool": "docs.read"}]}]}});
    virtuals.create(&post, &object("VirtualMCPServer", "composed", composed)).await.unwrap();
    let message = eventually("the server naming a missing definition Failed", &install.operator, || async {
        let status = virtuals.get("composed").await.ok()?.status?;
        (status.phase == Some(VirtualPhase::Failed)).then_some(status.message)
    })
    .await;
    assert!(
        message.contains("spec.config.compositeToolRefs[0]: VirtualMCPCompositeToolDefinition fetch-twice does not exist"),
        "{message}"
    );
    let looped = json!({"name": "loops", "description": "d", "steps": [{"id": "a", "tool": "docs.read", "dependsOn": ["a"]}]});
    let refused = definitions.create(&post, &object("VirtualMCPCompositeToolDefinition", "loops", looped)).await.unwrap_err().to_string();
    assert!(refused.contains("spec.steps: Invalid value: the steps depend on each other in a cycle: a -> a"), "{refused}");
    let twice = json!({"name": "fetch_twice", "description": "Reads the docs twice", "timeout": "1m",
        "parameters": {"type": "object", "properties": {"page": {"type": "string"}}},
        "steps": [{"id": "first", "tool": "docs.read", "arguments": {"page": "{{.params.page}}"}},
                  {"id": "second", "tool": "docs.read", "dependsOn": ["first"], "onError": {"action": "continue"}}]});
    definitions.create(&post, &object("VirtualMCPCompositeToolDefinition", "fetch-twice", twice)).await.unwrap();
    let tools = eventually("the definition's tool in the vMCP's file", &install.operator, || async {
        let data = configmaps.get_opt("composed-vmcp-config").await.ok()??.data?;
        let config: Value = serde_yaml_ng::from_str(data.get("config.yaml")?).ok()?;
        let names: Vec<String> =
            config["compositeTools"].as_array()?.iter().filter_map(|t| Some(t["name"].as_str()?.to_string())).collect();
        (names.len() == 2).then_some(config["compositeTools"].clone())
    })
    .await;
    assert_eq!(tools[0]["name"], "docs_once");
    assert_eq!((tools[1]["name"].as_str(), tools[1]["steps"][1]["dependsOn"][0].as_str()), (Some("fetch_twice"), Some("first")));
    // The status follows the file (written after it, in the same reconcile or its retry).
    eventually("the server no longer Failed once its definition exists", &install.operator, || async {
        let status = virtuals.get("composed").await.ok()?.status?;
        (status.phase != Some(VirtualPhase::Failed)).then_some(())
    })
    .await;

    // Every VirtualMCPServer and composite tool definition of v0.66.0's examples:
    // applied, or refused with a field this release does not carry out or that no
    // schema has (never a schema error).
    let mut verdicts = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&examples).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(mut object) = <Value as serde::Deserialize>::deserialize(doc) else { continue };
            if object["kind"] != "VirtualMCPServer" && object["kind"] != "VirtualMCPCompositeToolDefinition" {
                continue;
            }
            object["metadata"]["namespace"] = json!(ns);
            let (ok, _, err) = run("kubectl", kc, &["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&object.to_string()));
            let name = format!("{} {}", file.file_name().unwrap().to_string_lossy(), object["metadata"]["name"].as_str().unwrap_or(""));
            let refused_so = ["not carried out by this operator release", "unknown field", "not a field of"];
            assert!(ok || refused_so.iter().any(|why| err.contains(why)), "{name}: {err}");
            verdicts.push(format!("{name}: {}", if ok { "applies".to_string() } else { err.trim().to_string() }));
        }
    }
    println!("v0.66.0's VirtualMCPServer examples:\n{}", verdicts.join("\n"));
    assert!(verdicts.len() >= 10, "{verdicts:?}");

    run("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns], None);
}
