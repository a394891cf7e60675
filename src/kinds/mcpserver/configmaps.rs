//! ConfigMaps a server names for its proxy to read (authorization policies, a
//! permission profile): mounted into the runner, never read by the operator. It
//! watches their metadata only, so a missing one stops the proxy (the runner could
//! not start without it) and an edit rolls it (the runner reads them once, at start).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::kinds::mcpserver::api::{MCPServer, PermissionProfileType};
use crate::kinds::mcpserver::references::References;
use crate::runtime::ondemand::OnDemand;
use crate::shared::problem::Problem;
use std::sync::Arc;

/// Pod-template annotation carrying the named ConfigMaps' resourceVersions: an edit
/// of one rolls the proxy.
pub const VERSIONS_ANNOTATION: &str = "toolhive.stacklok.dev/configmap-versions";

/// The ConfigMap `server`'s policies are read from, if it names one.
pub fn policy_configmap(server: &MCPServer) -> Option<&crate::kinds::authz::ConfigMapKeyRef> {
    let config = server.spec.authz_config.as_ref().filter(|c| c.config_type == crate::kinds::authz::AuthzConfigType::ConfigMap)?;
    config.config_map.as_ref()
}

/// The ConfigMaps `server` names for its proxy, with the field that names each.
pub fn named(server: &MCPServer) -> Vec<(&'static str, &str)> {
    let policies = policy_configmap(server).map(|c| ("spec.authzConfig.configMap", c.name.as_str()));
    let profile = server.spec.permission_profile.as_ref().filter(|p| p.profile_type == PermissionProfileType::ConfigMap);
    let profile = profile.map(|p| ("spec.permissionProfile", p.name.as_str()));
    policies.into_iter().chain(profile).collect()
}

/// Where the metadata of the ConfigMaps servers name is read from.
pub trait NamedConfigMaps {
    fn named_configmap(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<ConfigMap>>>;
}

/// A cache of the scope's ConfigMaps (tests).
impl NamedConfigMaps for Store<PartialObjectMeta<ConfigMap>> {
    fn named_configmap(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<ConfigMap>>> {
        self.get(&ObjectRef::new(name).within(ns))
    }
}

/// The watches started in the namespaces where servers name ConfigMaps.
impl NamedConfigMaps for OnDemand<PartialObjectMeta<ConfigMap>> {
    fn named_configmap(&self, ns: &str, name: &str) -> Option<Arc<PartialObjectMeta<ConfigMap>>> {
        self.get(ns, name)
    }
}

/// `name=resourceVersion` of each ConfigMap `server` names, from ConfigMap metadata;
/// None when it names none. A missing one adds its problem to `out`.
pub fn versions(server: &MCPServer, configmaps: &dyn NamedConfigMaps, out: &mut References) -> Option<String> {
    let ns = server.namespace().unwrap_or_default();
    let mut versions = Vec::new();
    for (field, name) in named(server) {
        match configmaps.named_configmap(&ns, name) {
            Some(configmap) => versions.push(format!("{name}={}", configmap.resource_version().unwrap_or_default())),
            None => out
                .problems
                .push(Problem::at(field, format!("ConfigMap {name} not found in namespace {ns}; the proxy is stopped until it exists"))),
        }
    }
    (!versions.is_empty()).then(|| versions.join(","))
}

/// The mapper for the MCPServer controller: a changed ConfigMap to the servers in
/// the cache that name it.
pub fn readers(
    servers: Store<MCPServer>,
) -> impl Fn(std::sync::Arc<PartialObjectMeta<ConfigMap>>) -> Vec<ObjectRef<MCPServer>> + Send + Sync {
    move |configmap| {
        let (ns, name) = (configmap.namespace(), configmap.name_any());
        let state = servers.state();
        let readers = state.iter().filter(|s| s.namespace() == ns && named(s).iter().any(|(_, n)| *n == name));
        readers.map(|s| ObjectRef::from_obj(s.as_ref())).collect()
    }
}
