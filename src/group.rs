//! MCPGroup: a named set of MCPServers in one namespace (`spec.groupRef`). Its
//! status lists the servers that name it; an MCPServer's `GroupRefValidated`
//! condition says whether the group it names exists and is Ready. The group changes
//! nothing an MCPServer runs (the reference's RunConfig does not carry it either).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Client, CustomResource, CustomResourceExt, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::api::MCPServer;
use crate::error::Error;
use crate::runtime::cache::Cache;
use crate::status::condition;

/// A named group of MCPServers in one namespace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPGroup",
    plural = "mcpgroups",
    singular = "mcpgroup",
    shortname = "mcpg",
    shortname = "mcpgroup",
    category = "toolhive",
    namespaced,
    status = "MCPGroupStatus",
    doc = "MCPGroup names a set of MCPServers in one namespace; each server joins with spec.groupRef.",
    printcolumn(name = "Servers", type_ = "integer", json_path = ".status.serverCount"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Checked", type_ = "string", json_path = ".status.conditions[?(@.type=='MCPServersChecked')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPGroupSpec {
    /// What the group is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GroupPhase>,
    /// The MCPServers that name this group, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub server_count: i32,
    /// Kept for the API's sake: this operator runs no MCPRemoteProxy or MCPServerEntry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_proxies: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remote_proxy_count: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entry_count: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GroupPhase {
    Ready,
    Pending,
    Failed,
}

pub const CONDITION_SERVERS_CHECKED: &str = "MCPServersChecked";
pub const CONDITION_GROUP_REF_VALIDATED: &str = "GroupRefValidated";
pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpgroups.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1 sharing one schema, as the
/// MCPServer's.
pub fn crd() -> CustomResourceDefinition {
    crate::api::with_deprecated_version(serde_json::to_value(MCPGroup::crd()).expect("crd serializes"))
}

/// The names of the servers in `ns` that name `group`, sorted (deleted ones left out).
pub fn members(servers: &[Arc<MCPServer>], ns: &str, group: &str) -> Vec<String> {
    let mut names: Vec<String> = servers
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns) && s.metadata.deletion_timestamp.is_none())
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|g| g.name == group))
        .map(|s| s.name_any())
        .collect();
    names.sort();
    names
}

/// The group's status for these members; an unchanged group yields an identical status.
pub fn desired_status(group: &MCPGroup, servers: Vec<String>, now: Time) -> MCPGroupStatus {
    let previous = group.status.clone().unwrap_or_default();
    let generation = group.metadata.generation;
    let checked = "the group's MCPServers were listed";
    MCPGroupStatus {
        observed_generation: generation,
        phase: Some(GroupPhase::Ready),
        server_count: i32::try_from(servers.len()).unwrap_or(i32::MAX),
        servers,
        conditions: vec![condition(
            &previous.conditions,
            CONDITION_SERVERS_CHECKED,
            "True",
            "ListMCPServersCheckSucceeded",
            checked,
            generation,
            &now,
        )],
        ..Default::default()
    }
}

/// Where an MCPServer's `spec.groupRef` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRefState {
    NotFound,
    NotReady,
    Valid,
}

impl GroupRefState {
    /// The state of `server`'s group reference, from the group cache; None without one.
    pub fn of(server: &MCPServer, groups: &Store<MCPGroup>) -> Option<(String, GroupRefState)> {
        let name = server.spec.group_ref.as_ref()?.name.clone();
        let ns = server.namespace().unwrap_or_default();
        let state = match groups.get(&ObjectRef::new(&name).within(&ns)) {
            None => GroupRefState::NotFound,
            Some(g) if g.status.as_ref().and_then(|s| s.phase) != Some(GroupPhase::Ready) => GroupRefState::NotReady,
            Some(_) => GroupRefState::Valid,
        };
        Some((name, state))
    }

    /// (status, reason, message) of the GroupRefValidated condition.
    pub fn condition(self, group: &str) -> (&'static str, &'static str, String) {
        match self {
            GroupRefState::Valid => ("True", "GroupRefIsValid", format!("MCPGroup {group} exists and is Ready")),
            GroupRefState::NotReady => ("False", "GroupRefNotReady", format!("MCPGroup {group} is not Ready")),
            GroupRefState::NotFound => ("False", "GroupRefNotFound", format!("MCPGroup {group} does not exist in this namespace")),
        }
    }
}

struct GroupContext {
    client: Client,
    servers: Store<MCPServer>,
}

/// Keeps every MCPGroup's status in one scope current: on a change to the group, or
/// to an MCPServer that names it (both from the scope's caches). A server moved from
/// one group to another is seen by the old group on its next periodic look.
pub async fn run(
    client: Client,
    groups: Cache<MCPGroup>,
    servers: Cache<MCPServer>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(GroupContext { client, servers: servers.store().clone() });
    let results = Controller::for_shared_stream(groups.everything_then_changes(), groups.store().clone())
        .watches_shared_stream(servers.changes(), |s: Arc<MCPServer>| {
            let ns = s.namespace()?;
            Some(ObjectRef::new(&s.spec.group_ref.as_ref()?.name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::runtime::status::retry_status_write, ctx);
    crate::runtime::status::drive("MCPGroup", results).await;
}

async fn reconcile(group: Arc<MCPGroup>, ctx: Arc<GroupContext>) -> Result<Action, Error> {
    let ns = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let servers = members(&ctx.servers.state(), &ns, &name);
    let desired = desired_status(&group, servers, Time(jiff::Timestamp::now()));
    if group.status.as_ref() != Some(&desired) {
        crate::runtime::status::apply_status::<MCPGroup>(&ctx.client, &ns, &name, &desired).await?;
        info!(namespace = %ns, name = %name, servers = desired.server_count, "MCPGroup status written");
    }
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(ns: &str, name: &str, group: Option<&str>) -> Arc<MCPServer> {
        let mut spec = json!({"image": "x"});
        if let Some(g) = group {
            spec["groupRef"] = json!({"name": g});
        }
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})).unwrap())
    }

    #[test]
    fn members_are_the_servers_of_this_namespace_that_name_the_group() {
        let servers = vec![
            server("a", "z", Some("tools")),
            server("a", "y", Some("tools")),
            server("a", "x", Some("other")),
            server("b", "w", Some("tools")),
            server("a", "v", None),
        ];
        assert_eq!(members(&servers, "a", "tools"), ["y", "z"]);
        assert!(members(&servers, "a", "none").is_empty());
    }

    #[test]
    fn status_counts_members_and_keeps_its_transition_time() {
        let group: MCPGroup = serde_json::from_value(json!({"metadata": {"name": "tools", "generation": 2}, "spec": {}})).unwrap();
        let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let first = desired_status(&group, vec!["a".into(), "b".into()], t0.clone());
        assert_eq!((first.server_count, first.phase, first.observed_generation), (2, Some(GroupPhase::Ready), Some(2)));
        let later = MCPGroup { status: Some(first.clone()), ..group };
        assert_eq!(desired_status(&later, vec!["a".into(), "b".into()], Time("2026-02-01T00:00:00Z".parse().unwrap())), first);
        let text = serde_json::to_value(desired_status(&later, vec![], t0)).unwrap();
        assert!(text.get("serverCount").is_none() && text.get("servers").is_none(), "empty is omitted, as the reference does: {text}");
    }

    #[test]
    fn crd_has_both_versions_and_the_printer_columns() {
        let crd = serde_json::to_value(crd()).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.iter().map(|v| v["name"].as_str().unwrap()).collect::<Vec<_>>(), ["v1beta1", "v1alpha1"]);
        let columns: Vec<&str> =
            versions[0]["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Servers", "Phase", "Checked", "Age"]);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mcpg", "mcpgroup"]));
    }
}
