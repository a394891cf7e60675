//! MCPServerEntry: a remote MCP server registered into an MCPGroup, with no proxy in
//! the cluster (whoever aggregates the group reaches it directly). The operator runs
//! nothing for it; it checks what the entry names and says so in its status: the
//! remote URL (never a local, API server or metadata endpoint; private ones only with
//! `allowPrivateEndpoint`), the group, the external auth config and the CA bundle
//! ConfigMap. The Secrets of `headerForward.addHeadersFromSecret` are not looked at:
//! the operator holds no permission on Secrets.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, CustomResource, CustomResourceExt, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::kinds::externalauth::MCPExternalAuthConfig;
use crate::kinds::group::{GroupRefState, MCPGroup};
use crate::runtime::cache::Cache;
use crate::shared::conditions::condition;
use crate::shared::error::Error;
use crate::shared::problem::ConditionReport;
use crate::shared::refs::CaBundleRef;

/// A remote MCP server in an MCPGroup, reached without a proxy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPServerEntry",
    plural = "mcpserverentries",
    singular = "mcpserverentry",
    shortname = "mcpentry",
    category = "toolhive",
    namespaced,
    status = "MCPServerEntryStatus",
    doc = "MCPServerEntry registers a remote MCP server into an MCPGroup without running a proxy for it.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Transport", type_ = "string", json_path = ".spec.transport"),
    printcolumn(name = "Remote URL", type_ = "string", json_path = ".spec.remoteUrl"),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupRef.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerEntrySpec {
    /// URL of the remote MCP server (http or https).
    #[schemars(regex(pattern = r"^https?://"))]
    pub remote_url: String,
    /// How the remote server speaks MCP.
    pub transport: EntryTransport,
    /// The MCPGroup (same namespace) the entry joins.
    pub group_ref: EntryGroupRef,
    /// An MCPExternalAuthConfig (same namespace) for the calls to the remote server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<EntryNameRef>,
    /// Headers added to the calls to the remote server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_forward: Option<HeaderForward>,
    /// A ConfigMap holding the CA bundle that signs the remote server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
    /// Allow a private address or an in-cluster (`*.cluster.local`) name. Loopback,
    /// link-local, metadata and API server endpoints stay refused.
    #[serde(default)]
    pub allow_private_endpoint: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EntryTransport {
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EntryGroupRef {
    /// Name of the MCPGroup.
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct EntryNameRef {
    /// Name of the referenced object in this namespace.
    pub name: String,
}

/// Headers added to each call to the remote server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderForward {
    /// Header name to value, sent as given.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub add_plaintext_headers: std::collections::BTreeMap<String, String>,
    /// Headers whose values come from Secret keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["headerName"]))]
    pub add_headers_from_secret: Vec<HeaderFromSecret>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderFromSecret {
    #[schemars(length(min = 1, max = 255))]
    pub header_name: String,
    pub value_secret_ref: crate::shared::refs::SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerEntryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EntryPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EntryPhase {
    Valid,
    Pending,
    Failed,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpserverentries.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1, one schema; a CA bundle
/// reference must name its ConfigMap.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(MCPServerEntry::crd()).expect("crd serializes");
    let spec = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["caBundleRef"]["x-kubernetes-validations"] = json!([{
        "rule": "has(self.configMapRef) && size(self.configMapRef.name) > 0",
        "message": "caBundleRef.configMapRef.name: name the ConfigMap holding the CA bundle"
    }]);
    crate::shared::crd::with_deprecated_version(value)
}

/// What the entry names, as found in the caches and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub group: GroupRefState,
    /// None: the entry names no external auth config.
    pub external_auth: Option<bool>,
    /// None: the entry names no CA bundle.
    pub ca_bundle: Option<bool>,
}

pub const CONDITION_VALID: &str = "Valid";
pub const CONDITION_REMOTE_URL: &str = "RemoteURLValidated";
pub const CONDITION_EXTERNAL_AUTH: &str = "ExternalAuthConfigValidated";
pub const CONDITION_CA_BUNDLE: &str = "CABundleRefValidated";

/// The entry's status given what it names; an unchanged world yields an identical one.
pub fn desired_status(entry: &MCPServerEntry, found: Found, now: Time) -> MCPServerEntryStatus {
    let spec = &entry.spec;
    let mut reports = vec![match crate::shared::remote_url::check(&spec.remote_url, spec.allow_private_endpoint) {
        Ok(()) => ConditionReport::new(CONDITION_REMOTE_URL, true, "RemoteURLValid", "spec.remoteUrl may be reached"),
        Err(e) => ConditionReport::new(CONDITION_REMOTE_URL, false, "RemoteURLInvalid", format!("spec.remoteUrl: {e}")),
    }];
    reports.push(found.group.condition(&spec.group_ref.name));
    reports.push(match (found.external_auth, &spec.external_auth_config_ref) {
        (Some(true), _) => ConditionReport::new(CONDITION_EXTERNAL_AUTH, true, "AuthConfigValid", "the MCPExternalAuthConfig exists"),
        (Some(false), r) => ConditionReport::new(
            CONDITION_EXTERNAL_AUTH,
            false,
            "AuthConfigNotFound",
            format!(
                "spec.externalAuthConfigRef: MCPExternalAuthConfig {} does not exist in this namespace",
                r.as_ref().map_or("", |r| &r.name)
            ),
        ),
        (None, _) => ConditionReport::new(CONDITION_EXTERNAL_AUTH, true, "AuthConfigNotConfigured", "no external auth config is named"),
    });
    let ca_name = spec.ca_bundle_ref.as_ref().and_then(|b| b.config_map_ref.as_ref()).map_or("", |r| r.name.as_str());
    reports.push(match found.ca_bundle {
        Some(true) => ConditionReport::new(CONDITION_CA_BUNDLE, true, "CABundleRefValid", "the CA bundle ConfigMap exists"),
        Some(false) => ConditionReport::new(
            CONDITION_CA_BUNDLE,
            false,
            "CABundleRefNotFound",
            format!("spec.caBundleRef.configMapRef: ConfigMap {ca_name} does not exist in this namespace"),
        ),
        None => ConditionReport::new(CONDITION_CA_BUNDLE, true, "CABundleRefNotConfigured", "no CA bundle is named"),
    });
    let valid = reports.iter().all(|r| r.status);
    reports.push(if valid {
        ConditionReport::new(CONDITION_VALID, true, "ConfigValid", "everything the entry names is valid")
    } else {
        let failed: Vec<&str> = reports.iter().filter(|r| !r.status).map(|r| r.message.as_str()).collect();
        ConditionReport::new(CONDITION_VALID, false, "ConfigInvalid", failed.join("; "))
    });
    let previous = entry.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = entry.metadata.generation;
    MCPServerEntryStatus {
        observed_generation: generation,
        phase: Some(if valid { EntryPhase::Valid } else { EntryPhase::Failed }),
        conditions: reports.iter().map(|r| condition(previous, r.type_, r.status_str(), r.reason, &r.message, generation, &now)).collect(),
    }
}

/// The names of the entries in `ns` that name `group`, sorted (deleted ones left out).
pub fn members(entries: &[Arc<MCPServerEntry>], ns: &str, group: &str) -> Vec<String> {
    crate::kinds::group::members_named(entries, ns, group, group_of)
}

/// The MCPGroup `entry` joins.
pub fn group_of(entry: &MCPServerEntry) -> Option<&str> {
    Some(entry.spec.group_ref.name.as_str())
}

struct EntryContext {
    client: Client,
    groups: Cache<MCPGroup>,
    external_auth: Cache<MCPExternalAuthConfig>,
}

/// How often an entry is looked at again without a change: a CA bundle ConfigMap is
/// read, not watched, so one created later is seen within this.
const RECHECK: Duration = Duration::from_secs(60);

/// Keeps every MCPServerEntry's status current: on a change to it, to
/// the groups, or to the external auth configs.
pub async fn run(
    client: Client,
    entries: Cache<MCPServerEntry>,
    groups: Cache<MCPGroup>,
    external_auth: Cache<MCPExternalAuthConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let naming_group = {
        let entries = entries.store().clone();
        move |group: Arc<MCPGroup>| {
            let ns = group.namespace().unwrap_or_default();
            members(&entries.state(), &ns, &group.name_any()).into_iter().map(move |e| ObjectRef::new(&e).within(&ns)).collect::<Vec<_>>()
        }
    };
    let naming_auth = {
        let entries = entries.store().clone();
        move |config: Arc<MCPExternalAuthConfig>| {
            let (ns, name) = (config.namespace().unwrap_or_default(), config.name_any());
            entries
                .state()
                .iter()
                .filter(|e| {
                    e.namespace().as_deref() == Some(&ns) && e.spec.external_auth_config_ref.as_ref().is_some_and(|r| r.name == name)
                })
                .map(|e| ObjectRef::from_obj(e.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let ctx = Arc::new(EntryContext { client, groups: groups.clone(), external_auth: external_auth.clone() });
    let results = Controller::for_shared_stream(entries.everything_then_changes(), entries.store().clone())
        .watches_shared_stream(groups.changes(), naming_group)
        .watches_shared_stream(external_auth.changes(), naming_auth)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, crate::runtime::status::retry_status_write, ctx);
    crate::runtime::status::drive(results).await;
}

async fn reconcile(entry: Arc<MCPServerEntry>, ctx: Arc<EntryContext>) -> Result<Action, Error> {
    let (ns, name) = (entry.namespace().unwrap_or_default(), entry.name_any());
    let spec = &entry.spec;
    let external_auth = match &spec.external_auth_config_ref {
        // Watched in this namespace once an entry or a server here names one.
        Some(r) => Some(ctx.external_auth.watched_in(&ns).await.get(&ObjectRef::new(&r.name).within(&ns)).is_some()),
        None => None,
    };
    let ca_bundle = match spec.ca_bundle_ref.as_ref().and_then(|b| b.config_map_ref.as_ref()) {
        None => None,
        Some(r) => Some(Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns).get_metadata_opt(&r.name).await?.is_some()),
    };
    let found = Found { group: GroupRefState::of(ctx.groups.store(), &ns, &spec.group_ref.name), external_auth, ca_bundle };
    let desired = desired_status(&entry, found, Time(jiff::Timestamp::now()));
    if entry.status.as_ref() != Some(&desired) {
        crate::runtime::status::apply_status::<MCPServerEntry>(&ctx.client, &ns, &name, &desired).await?;
        info!(namespace = %ns, name = %name, phase = ?desired.phase, "MCPServerEntry status written");
    }
    Ok(Action::requeue(RECHECK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(spec: serde_json::Value) -> MCPServerEntry {
        serde_json::from_value(json!({"metadata": {"name": "remote", "namespace": "a", "generation": 1}, "spec": spec})).unwrap()
    }

    fn found(group: GroupRefState) -> Found {
        Found { group, external_auth: None, ca_bundle: None }
    }

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    fn reason(status: &MCPServerEntryStatus, type_: &str) -> (String, String) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_public_url_in_a_ready_group_is_valid_and_stays_identical() {
        let e = entry(json!({"remoteUrl": "https://mcp.example.com/mcp", "transport": "streamable-http", "groupRef": {"name": "g"}}));
        let status = desired_status(&e, found(GroupRefState::Valid), now());
        assert_eq!(status.phase, Some(EntryPhase::Valid));
        assert_eq!(reason(&status, CONDITION_VALID), ("True".into(), "ConfigValid".into()));
        assert_eq!(reason(&status, CONDITION_EXTERNAL_AUTH), ("True".into(), "AuthConfigNotConfigured".into()));
        assert_eq!(reason(&status, CONDITION_CA_BUNDLE), ("True".into(), "CABundleRefNotConfigured".into()));
        let later = MCPServerEntry { status: Some(status.clone()), ..e };
        assert_eq!(desired_status(&later, found(GroupRefState::Valid), Time("2026-02-01T00:00:00Z".parse().unwrap())), status);
    }

    #[test]
    fn every_failure_is_named_and_fails_the_entry() {
        let e = entry(json!({"remoteUrl": "http://169.254.169.254/", "transport": "sse", "groupRef": {"name": "g"},
            "externalAuthConfigRef": {"name": "auth"}, "caBundleRef": {"configMapRef": {"name": "ca", "key": "ca.crt"}}}));
        let status =
            desired_status(&e, Found { group: GroupRefState::NotFound, external_auth: Some(false), ca_bundle: Some(false) }, now());
        assert_eq!(status.phase, Some(EntryPhase::Failed));
        assert_eq!(reason(&status, CONDITION_REMOTE_URL), ("False".into(), "RemoteURLInvalid".into()));
        assert_eq!(reason(&status, "GroupRefValidated"), ("False".into(), "GroupRefNotFound".into()));
        assert_eq!(reason(&status, CONDITION_EXTERNAL_AUTH), ("False".into(), "AuthConfigNotFound".into()));
        assert_eq!(reason(&status, CONDITION_CA_BUNDLE), ("False".into(), "CABundleRefNotFound".into()));
        let valid = status.conditions.iter().find(|c| c.type_ == CONDITION_VALID).unwrap();
        assert!(valid.message.contains("spec.remoteUrl: remote URL host 169.254.169.254 is never allowed"), "{}", valid.message);
        assert!(valid.message.contains("MCPExternalAuthConfig auth does not exist"), "{}", valid.message);
    }

    #[test]
    fn a_private_endpoint_needs_the_opt_in() {
        let spec = json!({"remoteUrl": "http://mcp.team.svc.cluster.local:8080", "transport": "sse", "groupRef": {"name": "g"}});
        assert_eq!(desired_status(&entry(spec.clone()), found(GroupRefState::Valid), now()).phase, Some(EntryPhase::Failed));
        let mut allowed = spec;
        allowed["allowPrivateEndpoint"] = json!(true);
        assert_eq!(desired_status(&entry(allowed), found(GroupRefState::Valid), now()).phase, Some(EntryPhase::Valid));
    }

    #[test]
    fn members_are_this_namespace_s_entries_naming_the_group() {
        let e = |ns: &str, name: &str, group: &str| {
            Arc::new(
                serde_json::from_value::<MCPServerEntry>(json!({"metadata": {"name": name, "namespace": ns},
                    "spec": {"remoteUrl": "https://x", "transport": "sse", "groupRef": {"name": group}}}))
                .unwrap(),
            )
        };
        let entries = vec![e("a", "z", "g"), e("a", "y", "g"), e("a", "x", "h"), e("b", "w", "g")];
        assert_eq!(members(&entries, "a", "g"), ["y", "z"]);
    }

    #[test]
    fn crd_is_served_in_both_versions_with_the_reference_s_names_and_columns() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mcpentry"]));
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.iter().map(|v| v["name"].as_str().unwrap()).collect::<Vec<_>>(), ["v1beta1", "v1alpha1"]);
        let columns: Vec<&str> =
            versions[0]["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Phase", "Transport", "Remote URL", "Group", "Age"]);
        let spec = &versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["groupRef", "remoteUrl", "transport"]));
        assert_eq!(spec["properties"]["transport"]["enum"], json!(["streamable-http", "sse"]));
    }
}
