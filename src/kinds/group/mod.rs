//! MCPGroup: a named set of MCPServers in one namespace (`spec.groupRef`). Its
//! status lists the servers that name it; an MCPServer's `GroupRefValidated`
//! condition says whether the group it names exists and is Ready. The group changes
//! nothing an MCPServer runs (the reference's RunConfig does not carry it either).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Client, CustomResource, CustomResourceExt, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::runtime::cache::Cache;
use crate::shared::conditions::condition;
use crate::shared::error::Error;

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
pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpgroups.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1 sharing one schema, as the
/// MCPServer's.
pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPGroup::crd()).expect("crd serializes"))
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

/// Who belongs to a group: the names of its members, given its namespace and name.
pub type Members = Arc<dyn Fn(&str, &str) -> Vec<String> + Send + Sync>;

struct GroupContext {
    client: Client,
    members: Members,
}

/// Keeps every MCPGroup's status in one scope current: on a change to the group, or
/// when `member_changes` names it (a member joined, changed or left). The kinds that
/// join groups say who the members are; a group knows nothing of them.
pub async fn run(
    client: Client,
    groups: Cache<MCPGroup>,
    member_changes: impl futures::Stream<Item = ObjectRef<MCPGroup>> + Send + 'static,
    members: Members,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(GroupContext { client, members });
    let results = Controller::for_shared_stream(groups.everything_then_changes(), groups.store().clone())
        .reconcile_on(member_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::runtime::status::retry_status_write, ctx);
    crate::runtime::status::drive(results).await;
}

async fn reconcile(group: Arc<MCPGroup>, ctx: Arc<GroupContext>) -> Result<Action, Error> {
    let ns = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let servers = (ctx.members)(&ns, &name);
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
