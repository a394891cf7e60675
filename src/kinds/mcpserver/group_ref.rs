//! An MCPServer's `spec.groupRef`: which group it joins, and its
//! `GroupRefValidated` condition (whether that group exists and is Ready). A group
//! changes nothing a server runs.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::api::MCPServer;
use crate::kinds::group::{GroupPhase, MCPGroup};
use crate::shared::problem::ConditionReport;

pub const CONDITION_GROUP_REF_VALIDATED: &str = "GroupRefValidated";

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
}
