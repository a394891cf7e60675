//! MCPServerEntry through a real API server, reconciled by an operator running as the
//! chart's ServiceAccount (namespace mode): ToolHive v0.66.0's example entries apply;
//! a public URL in a Ready group is Valid and listed in the group; a metadata
//! endpoint, a private endpoint without the opt-in, a missing group, external auth
//! config or CA bundle each fail the entry with their reason; creating what was
//! missing makes it Valid; the group's count follows entries as they come and go.

use std::process::{Command, Stdio};

use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};
use toolhive_operator::kinds::{
    externalauth::MCPExternalAuthConfig,
    group::MCPGroup,
    serverentry::{EntryPhase, MCPServerEntry},
    toolconfig::MCPToolConfig,
};

use super::common::{eventually, run};
use super::guide::guide;
use super::release::{install_release, ready};

/// ToolHive's module source at the version the API follows (its examples).
pub fn upstream_source() -> std::path::PathBuf {
    let script = controlplane::repo_root().join("scripts/upstream-source.sh");
    let out = Command::new(&script).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8(out.stdout).unwrap().trim().into()
}

fn entry(name: &str, spec: Value) -> MCPServerEntry {
    serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServerEntry",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

fn condition(entry: &MCPServerEntry, type_: &str) -> Option<(String, String, String)> {
    let c = entry.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn entries_are_checked_listed_in_their_group_and_the_upstream_examples_apply() {
    let _crds = guide();
    let cp = controlplane::shared();
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.as_path();
    let ca = controlplane::Authority::new("entries-webhook-ca").unwrap();
    let install = install_release(&admin, kc, &ca, "entries", json!({}), json!({})).await;
    ready(&install).await;
    let ns = install.team.clone();
    let entries: Api<MCPServerEntry> = Api::namespaced(admin.clone(), &ns);
    let groups: Api<MCPGroup> = Api::namespaced(admin.clone(), &ns);
    let post = PostParams::default();

    // Configuration objects alone in a namespace: nothing there names one of their
    // kind, so their kinds are not watched there yet and they get no status.
    let tools: Api<MCPToolConfig> = Api::namespaced(admin.clone(), &ns);
    let auths: Api<MCPExternalAuthConfig> = Api::namespaced(admin.clone(), &ns);
    tools
        .create(&post, &serde_json::from_value(json!({"metadata": {"name": "alone"}, "spec": {"toolsFilter": ["read"]}})).unwrap())
        .await
        .unwrap();
    auths
        .create(&post, &serde_json::from_value(json!({"metadata": {"name": "alone-auth"}, "spec": {"type": "unauthenticated"}})).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(tools.get("alone").await.unwrap().status.is_none(), "a kind nothing names is not watched");
    assert!(auths.get("alone-auth").await.unwrap().status.is_none(), "a kind nothing names is not watched");

    // Every MCPServerEntry of ToolHive v0.66.0's examples, with what it names (the
    // examples' other kinds: not served here yet), in the team's namespace.
    let examples = upstream_source().join("examples/operator/mcp-server-entries");
    let mut example_entries = 0;
    for file in std::fs::read_dir(&examples).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut object: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            if !["MCPServerEntry", "MCPGroup", "MCPExternalAuthConfig", "ConfigMap"].contains(&kind.as_str()) {
                continue;
            }
            object["metadata"]["namespace"] = json!(ns);
            let (ok, _, err) = run("kubectl", kc, &["apply", "--server-side", "-f", "-"], Some(&object.to_string()));
            assert!(ok, "{kind} {} of {}: {err}", object["metadata"]["name"], examples.display());
            example_entries += usize::from(kind == "MCPServerEntry");
        }
    }
    assert!(example_entries >= 5, "only {example_entries} example entries found in {}", examples.display());

    groups.create(&post, &serde_json::from_value(json!({"metadata": {"name": "tools"}, "spec": {}})).unwrap()).await.unwrap();
    let good = json!({"remoteUrl": "https://mcp.example.com/mcp", "transport": "streamable-http", "groupRef": {"name": "tools"}});
    entries.create(&post, &entry("public", good.clone())).await.unwrap();
    let failing = [
        (
            "metadata",
            json!({"remoteUrl": "http://169.254.169.254/latest", "transport": "sse", "groupRef": {"name": "tools"}}),
            "RemoteURLValidated",
            "RemoteURLInvalid",
        ),
        (
            "private",
            json!({"remoteUrl": "http://mcp.other.svc.cluster.local:8080", "transport": "sse", "groupRef": {"name": "tools"}}),
            "RemoteURLValidated",
            "RemoteURLInvalid",
        ),
        (
            "no-group",
            json!({"remoteUrl": "https://mcp.example.com", "transport": "sse", "groupRef": {"name": "absent"}}),
            "GroupRefValidated",
            "GroupRefNotFound",
        ),
        (
            "no-auth",
            json!({"remoteUrl": "https://mcp.example.com", "transport": "sse", "groupRef": {"name": "tools"},
            "externalAuthConfigRef": {"name": "later-auth"}}),
            "ExternalAuthConfigValidated",
            "AuthConfigNotFound",
        ),
        (
            "no-ca",
            json!({"remoteUrl": "https://mcp.example.com", "transport": "sse", "groupRef": {"name": "tools"},
            "caBundleRef": {"configMapRef": {"name": "absent-ca", "key": "ca.crt"}}}),
            "CABundleRefValidated",
            "CABundleRefNotFound",
        ),
    ];
    for (name, spec, _, _) in &failing {
        entries.create(&post, &entry(name, spec.clone())).await.unwrap();
    }

    let public = eventually("the public entry to be Valid", &install.operator, || async {
        let e = entries.get("public").await.ok()?;
        (e.status.as_ref()?.phase == Some(EntryPhase::Valid)).then_some(e)
    })
    .await;
    assert_eq!(condition(&public, "Valid").map(|c| c.1), Some("ConfigValid".into()));
    for (name, _, type_, reason) in &failing {
        let failed = eventually(&format!("entry {name} to fail"), &install.operator, || async {
            let e = entries.get(name).await.ok()?;
            (e.status.as_ref()?.phase == Some(EntryPhase::Failed)).then_some(e)
        })
        .await;
        let (status, got, message) = condition(&failed, type_).unwrap_or_else(|| panic!("{name}: no {type_}"));
        assert_eq!((status.as_str(), got.as_str()), ("False", *reason), "{name}: {message}");
    }
    let (_, _, why) = condition(&entries.get("private").await.unwrap(), "RemoteURLValidated").unwrap();
    assert!(why.contains("set allowPrivateEndpoint: true"), "{why}");

    // Entries here name external auth configurations: that kind is watched now, and
    // the lone one gets its status; no entry names a tool configuration.
    eventually("the lone external auth config's status once an entry names one", &install.operator, || async {
        let status = auths.get("alone-auth").await.ok()?.status?;
        (status.conditions.first()?.status == "True" && status.config_hash.len() == 16).then_some(())
    })
    .await;
    assert!(tools.get("alone").await.unwrap().status.is_none(), "no entry names a tool configuration");

    // What was missing appears: the entry turns Valid (a watched kind at once).
    let auth: MCPExternalAuthConfig = serde_json::from_value(json!({"metadata": {"name": "later-auth"},
        "spec": {"type": "unauthenticated"}}))
    .unwrap();
    Api::<MCPExternalAuthConfig>::namespaced(admin.clone(), &ns).create(&post, &auth).await.unwrap();
    eventually("no-auth to turn Valid", &install.operator, || async {
        (entries.get("no-auth").await.ok()?.status?.phase == Some(EntryPhase::Valid)).then_some(())
    })
    .await;

    // The group lists its entries (public, no-auth, metadata, private, no-ca name it).
    let listed = |expected: Vec<&'static str>| {
        let groups = groups.clone();
        async move {
            let status = groups.get("tools").await.ok()?.status?;
            (status.entries == expected && status.entry_count == i32::try_from(expected.len()).unwrap()).then_some(())
        }
    };
    eventually("the group to list its entries", &install.operator, || listed(vec!["metadata", "no-auth", "no-ca", "private", "public"]))
        .await;
    entries.delete("metadata", &DeleteParams::default()).await.unwrap();
    eventually("the group to drop a deleted entry", &install.operator, || listed(vec!["no-auth", "no-ca", "private", "public"])).await;

    run("helm", kc, &["uninstall", &install.release, "-n", &install.release_ns], None);
}
