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

use crate::runtime::cache::Cache;
use crate::shared::conditions::condition;
use crate::shared::error::Error;
use crate::shared::problem::ConditionReport;

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
    /// The MCPRemoteProxies that name this group, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_proxies: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remote_proxy_count: i32,
    /// The MCPServerEntries that name this group, by name.
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
/// The condition of a member (MCPServer, MCPServerEntry) saying whether the group it
/// names exists and is Ready.
pub const CONDITION_GROUP_REF_VALIDATED: &str = "GroupRefValidated";

/// Where a member's `spec.groupRef` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRefState {
    NotFound,
    NotReady,
    Valid,
}

impl GroupRefState {
    /// The state of a reference to the group `name` in `ns`, from the group cache.
    pub fn of(groups: &Store<MCPGroup>, ns: &str, name: &str) -> GroupRefState {
        match groups.get(&ObjectRef::new(name).within(ns)) {
            None => GroupRefState::NotFound,
            Some(g) if g.status.as_ref().and_then(|s| s.phase) != Some(GroupPhase::Ready) => GroupRefState::NotReady,
            Some(_) => GroupRefState::Valid,
        }
    }

    /// The GroupRefValidated condition.
    pub fn condition(self, group: &str) -> ConditionReport {
        let report = |status, reason, message: String| ConditionReport::new(CONDITION_GROUP_REF_VALIDATED, status, reason, message);
        match self {
            GroupRefState::Valid => report(true, "GroupRefIsValid", format!("MCPGroup {group} exists and is Ready")),
            GroupRefState::NotReady => report(false, "GroupRefNotReady", format!("MCPGroup {group} is not Ready")),
            GroupRefState::NotFound => report(false, "GroupRefNotFound", format!("MCPGroup {group} does not exist in this namespace")),
        }
    }
}

/// The objects in `ns` whose `group_of` is `group` (deleted ones left out): a group's
/// members of one kind.
pub fn members_in<'a, K: kube::Resource>(
    objects: &'a [Arc<K>],
    ns: &'a str,
    group: &'a str,
    group_of: impl Fn(&K) -> Option<&str> + 'a,
) -> impl Iterator<Item = &'a Arc<K>> + 'a {
    objects
        .iter()
        .filter(move |o| o.meta().namespace.as_deref() == Some(ns) && o.meta().deletion_timestamp.is_none())
        .filter(move |o| group_of(o) == Some(group))
}

/// Which member list of a group's status a kind's members are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    Server,
    RemoteProxy,
    Entry,
}

/// The groups of `ns` a change to the member `name` concerns: the group it names now
/// (`now`), and every group whose status still lists it, so a member that left (by an
/// edit or its deletion) is dropped from the list of the group it left.
pub fn groups_concerned(groups: &Store<MCPGroup>, ns: &str, name: &str, kind: MemberKind, now: Option<&str>) -> Vec<ObjectRef<MCPGroup>> {
    let lists = |g: &MCPGroup| {
        g.status.as_ref().is_some_and(|s| {
            let listed = match kind {
                MemberKind::Server => &s.servers,
                MemberKind::RemoteProxy => &s.remote_proxies,
                MemberKind::Entry => &s.entries,
            };
            listed.iter().any(|n| n == name)
        })
    };
    let mut out: Vec<ObjectRef<MCPGroup>> = groups
        .state()
        .iter()
        .filter(|g| g.metadata.namespace.as_deref() == Some(ns) && (g.metadata.name.as_deref() == now || lists(g)))
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect();
    // A group not cached yet is still named: its reconcile sees it once it is.
    if let Some(now) = now.filter(|n| !out.iter().any(|r| r.name == *n)) {
        out.push(ObjectRef::new(now).within(ns));
    }
    out
}

/// The names of a group's members of one kind (`members_in`), sorted.
pub fn members_named<K: kube::Resource>(objects: &[Arc<K>], ns: &str, group: &str, group_of: impl Fn(&K) -> Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = members_in(objects, ns, group, group_of).map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    names.sort();
    names
}

/// A group's members of each kind, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupMembers {
    pub servers: Vec<String>,
    pub remote_proxies: Vec<String>,
    pub entries: Vec<String>,
}
pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpgroups.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1 sharing one schema, as the
/// MCPServer's.
pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPGroup::crd()).expect("crd serializes"))
}

/// The group's status for these members; an unchanged group yields an identical status.
pub fn desired_status(group: &MCPGroup, members: GroupMembers, now: Time) -> MCPGroupStatus {
    let previous = group.status.clone().unwrap_or_default();
    let generation = group.metadata.generation;
    let checked = "the group's MCPServers were listed";
    let count = |names: &Vec<String>| i32::try_from(names.len()).unwrap_or(i32::MAX);
    MCPGroupStatus {
        observed_generation: generation,
        phase: Some(GroupPhase::Ready),
        server_count: count(&members.servers),
        servers: members.servers,
        remote_proxy_count: count(&members.remote_proxies),
        remote_proxies: members.remote_proxies,
        entry_count: count(&members.entries),
        entries: members.entries,
        conditions: vec![condition(
            &previous.conditions,
            CONDITION_SERVERS_CHECKED,
            "True",
            "ListMCPServersCheckSucceeded",
            checked,
            generation,
            &now,
        )],
    }
}

/// Who belongs to a group: its members, given its namespace and name.
pub type Members = Arc<dyn Fn(&str, &str) -> GroupMembers + Send + Sync>;

struct GroupContext {
    client: Client,
    members: Members,
}

/// Keeps every MCPGroup's status current: on a change to the group, or
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
    let members = (ctx.members)(&ns, &name);
    let desired = desired_status(&group, members, Time(jiff::Timestamp::now()));
    if group.status.as_ref() != Some(&desired) {
        crate::runtime::status::apply_status::<MCPGroup>(&ctx.client, &ns, &name, &desired).await?;
        info!(namespace = %ns, name = %name, servers = desired.server_count, entries = desired.entry_count, "MCPGroup status written");
    }
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_member_change_concerns_its_group_now_and_every_group_that_still_lists_it() {
        let (store, mut writer) = kube::runtime::reflector::store::<MCPGroup>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        for (ns, name, servers) in [("a", "left", vec!["moved"]), ("a", "joined", vec![]), ("b", "elsewhere", vec!["moved"])] {
            let group = json!({"metadata": {"name": name, "namespace": ns}, "spec": {}, "status": {"servers": servers}});
            writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(serde_json::from_value(group).unwrap()));
        }
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let names = |now: Option<&str>, kind: MemberKind| {
            let mut names: Vec<String> = groups_concerned(&store, "a", "moved", kind, now).into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(names(Some("joined"), MemberKind::Server), ["joined", "left"], "the group it joined and the one it left");
        assert_eq!(names(None, MemberKind::Server), ["left"], "moved out of every group: the one that lists it");
        assert_eq!(names(None, MemberKind::Entry), Vec::<String>::new(), "an entry of that name is listed nowhere");
        assert_eq!(names(Some("not-cached"), MemberKind::Server), ["left", "not-cached"]);
    }

    #[test]
    fn status_counts_members_and_keeps_its_transition_time() {
        let group: MCPGroup = serde_json::from_value(json!({"metadata": {"name": "tools", "generation": 2}, "spec": {}})).unwrap();
        let t0 = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let members =
            GroupMembers { servers: vec!["a".into(), "b".into()], remote_proxies: vec!["saas".into()], entries: vec!["remote".into()] };
        let first = desired_status(&group, members.clone(), t0.clone());
        assert_eq!(
            (first.server_count, first.entry_count, first.phase, first.observed_generation),
            (2, 1, Some(GroupPhase::Ready), Some(2))
        );
        assert_eq!(first.entries, ["remote"]);
        assert_eq!((first.remote_proxies.as_slice(), first.remote_proxy_count), (["saas".to_string()].as_slice(), 1));
        let later = MCPGroup { status: Some(first.clone()), ..group };
        assert_eq!(desired_status(&later, members, Time("2026-02-01T00:00:00Z".parse().unwrap())), first);
        let text = serde_json::to_value(desired_status(&later, GroupMembers::default(), t0)).unwrap();
        for omitted in ["serverCount", "servers", "remoteProxyCount", "remoteProxies", "entryCount", "entries"] {
            assert!(text.get(omitted).is_none(), "empty {omitted} is omitted, as the reference does: {text}");
        }
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
