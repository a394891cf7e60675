//! An MCPServer's `spec.groupRef`: which group it joins, and its
//! `GroupRefValidated` condition (whether that group exists and is Ready). A group
//! changes nothing a server runs.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::api::MCPServer;
use crate::kinds::group::MCPGroup;

pub use crate::kinds::group::{CONDITION_GROUP_REF_VALIDATED, GroupRefState};

/// The names of the servers in `ns` that name `group`, sorted (deleted ones left out).
pub fn members(servers: &[Arc<MCPServer>], ns: &str, group: &str) -> Vec<String> {
    crate::kinds::group::members_named(servers, ns, group, group_of)
}

/// The MCPGroup `server` names, if any.
pub fn group_of(server: &MCPServer) -> Option<&str> {
    server.spec.group_ref.as_ref().map(|g| g.name.as_str())
}

/// The state of `server`'s group reference, from the group cache; None without one.
pub fn state(server: &MCPServer, groups: &Store<MCPGroup>) -> Option<(String, GroupRefState)> {
    let name = server.spec.group_ref.as_ref()?.name.clone();
    let state = GroupRefState::of(groups, &server.namespace().unwrap_or_default(), &name);
    Some((name, state))
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
