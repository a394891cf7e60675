//! Authorization: which authenticated callers may do what (Cedar policies, or an
//! external decision point over HTTP). An MCPServer gives it inline
//! (`spec.authzConfig`, type inline) or names a shared MCPAuthzConfig
//! (`spec.authzConfigRef`, same namespace). Either way the proxy runner gets the
//! authorizer's configuration in the RunConfig's `authz_config` and an `authorization`
//! step; a missing or invalid MCPAuthzConfig stops the proxy, so a server that asked
//! for authorization never serves without it. Policies in a ConfigMap
//! (`spec.authzConfig`, type configMap) are mounted into the runner, which reads them
//! from the file; the operator only watches the ConfigMap's metadata.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath, Volume, VolumeMount};

use crate::shared::configkind::ConfigStatus;

/// An authorizer for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPAuthzConfig",
    plural = "mcpauthzconfigs",
    singular = "mcpauthzconfig",
    shortname = "authzcfg",
    category = "toolhive",
    namespaced,
    status = "MCPAuthzConfigStatus",
    doc = "MCPAuthzConfig is the authorizer of the MCPServers that reference it (spec.authzConfigRef, same namespace).",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct MCPAuthzConfigSpec {
    /// The authorizer: `cedarv1` (Cedar policies) or `httpv1` (a decision point over HTTP).
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub authorizer: String,
    /// The authorizer's own settings (for cedarv1: `policies`, `entities_json`, ...).
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub config: Value,
}

pub type MCPAuthzConfigStatus = ConfigStatus;

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpauthzconfigs.yaml";
/// The version of the runner's authorization configuration format.
const FORMAT_VERSION: &str = "1.0";
const CEDAR: &str = "cedarv1";

pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPAuthzConfig::crd()).expect("crd serializes"))
}

/// The key the runner reads an authorizer's settings under.
fn settings_key(authorizer: &str) -> Option<&'static str> {
    match authorizer {
        CEDAR => Some("cedar"),
        "httpv1" => Some("pdp"),
        _ => None,
    }
}

impl MCPAuthzConfigSpec {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        if settings_key(&self.authorizer).is_none() {
            return Some(format!("spec.type: {:?} is not an authorizer the proxy runner has (cedarv1, httpv1)", self.authorizer));
        }
        let Some(config) = self.config.as_object().filter(|c| !c.is_empty()) else {
            return Some("spec.config: the authorizer's settings are required".into());
        };
        let policies = config.get("policies").and_then(Value::as_array);
        if self.authorizer == CEDAR && !policies.is_some_and(|p| !p.is_empty() && p.iter().all(Value::is_string)) {
            return Some("spec.config.policies: at least one Cedar policy (a list of strings) is required".into());
        }
        None
    }
}

crate::shared::configkind::config_kind!(MCPAuthzConfig { spec: MCPAuthzConfigSpec, reasons: ("ConfigValid", "ConfigInvalid") });

/// A cedarv1 MCPAuthzConfig's settings (policies, entities_json, claim mapping);
/// None for any other authorizer.
pub fn cedar_settings(spec: &MCPAuthzConfigSpec) -> Option<&serde_json::Map<String, Value>> {
    spec.config.as_object().filter(|_| spec.authorizer == CEDAR)
}

/// The runner's authorization configuration from a shared MCPAuthzConfig.
pub fn from_shared(spec: &MCPAuthzConfigSpec) -> Value {
    let key = settings_key(&spec.authorizer).unwrap_or("config");
    json!({"version": FORMAT_VERSION, "type": spec.authorizer, key: spec.config})
}

/// The runner's authorization configuration from `spec.authzConfig` of type inline
/// (Cedar policies); None for type configMap, which the runner reads from its mount.
pub fn from_inline(config: &AuthzConfig) -> Option<Value> {
    let inline = config.inline.as_ref().filter(|_| config.config_type == AuthzConfigType::Inline)?;
    let mut cedar = json!({"policies": inline.policies, "entities_json": inline.entities_json});
    for (key, value) in [
        ("group_claim_name", &config.group_claim_name),
        ("role_claim_name", &config.role_claim_name),
        ("group_entity_type", &config.group_entity_type),
    ] {
        if !value.is_empty() {
            cedar[key] = json!(value);
        }
    }
    Some(json!({"version": FORMAT_VERSION, "type": CEDAR, "cedar": cedar}))
}

/// Where the proxy runner reads policies given in a ConfigMap (`spec.authzConfig`,
/// type configMap): the ConfigMap's key mounted as this file. The operator never
/// reads the ConfigMap; it only sees that it exists and when it changes.
pub const POLICY_FILE_DIR: &str = "/etc/toolhive/authz";
pub const POLICY_FILE: &str = "/etc/toolhive/authz/authz.json";
const POLICY_VOLUME: &str = "authz-config";

/// The policy ConfigMap's key, mounted where the runner reads it (the reference's
/// volume, name and path).
pub fn policy_volume(config_map: &ConfigMapKeyRef) -> (Volume, VolumeMount) {
    let items = vec![KeyToPath { key: config_map.key.clone(), path: "authz.json".into(), mode: None }];
    let source = ConfigMapVolumeSource { name: config_map.name.clone(), items: Some(items), ..Default::default() };
    let volume = Volume { name: POLICY_VOLUME.into(), config_map: Some(source), ..Default::default() };
    let mount = VolumeMount { name: POLICY_VOLUME.into(), mount_path: POLICY_FILE_DIR.into(), read_only: Some(true), ..Default::default() };
    (volume, mount)
}

/// Authorization policy: from a ConfigMap or inline Cedar policies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'configMap' ? has(self.configMap) : !has(self.configMap)",
     "message": "configMap must be set when type is 'configMap', and must not be set otherwise"},
    {"rule": "self.type == 'inline' ? has(self.inline) : !has(self.inline)",
     "message": "inline must be set when type is 'inline', and must not be set otherwise"},
    // The proxy reads a ConfigMap's policies as they are: the operator never reads
    // them, so it cannot lay these over them.
    {"rule": "self.type != 'configMap' || (!has(self.groupClaimName) && !has(self.roleClaimName) && !has(self.groupEntityType))",
     "message": "with type configMap, set groupClaimName, roleClaimName and groupEntityType in the ConfigMap's Cedar configuration (group_claim_name, role_claim_name, group_entity_type)"}
]))]
pub struct AuthzConfig {
    /// configMap or inline.
    #[serde(default, rename = "type")]
    pub config_type: AuthzConfigType,
    /// The ConfigMap holding the policy (type configMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKeyRef>,
    /// Cedar policies (type inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineAuthz>,
    /// JWT claim holding group membership.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    pub group_claim_name: String,
    /// JWT claim holding role membership.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    pub role_claim_name: String,
    /// Cedar entity type used for groups and roles from claims.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub group_entity_type: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthzConfigType {
    #[default]
    #[serde(rename = "configMap")]
    ConfigMap,
    #[serde(rename = "inline")]
    Inline,
}

/// A key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    pub name: String,
    /// Key holding the configuration.
    #[serde(default = "default_authz_key")]
    pub key: String,
}

fn default_authz_key() -> String {
    "authz.json".into()
}

/// Inline Cedar authorization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineAuthz {
    /// Cedar policies.
    #[schemars(length(min = 1))]
    pub policies: Vec<String>,
    /// Cedar entities as a JSON string.
    #[serde(default = "default_entities")]
    pub entities_json: String,
}

fn default_entities() -> String {
    "[]".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> MCPAuthzConfigSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_shared_config_names_a_known_authorizer_with_its_settings() {
        let cedar =
            spec(json!({"type": "cedarv1", "config": {"policies": ["permit(principal, action, resource);"], "entities_json": "[]"}}));
        assert_eq!(cedar.problem(), None);
        assert_eq!(from_shared(&cedar)["cedar"]["policies"][0], "permit(principal, action, resource);");
        assert_eq!((from_shared(&cedar)["version"].as_str(), from_shared(&cedar)["type"].as_str()), (Some("1.0"), Some("cedarv1")));
        let http = spec(json!({"type": "httpv1", "config": {"http": {"url": "https://pdp"}}}));
        assert_eq!((http.problem(), from_shared(&http)["pdp"]["http"]["url"].as_str()), (None, Some("https://pdp")));
        assert!(spec(json!({"type": "opa", "config": {"x": 1}})).problem().unwrap().contains("cedarv1, httpv1"));
        assert!(spec(json!({"type": "cedarv1", "config": {}})).problem().unwrap().contains("spec.config"));
        assert!(spec(json!({"type": "cedarv1", "config": {"policies": []}})).problem().unwrap().contains("spec.config.policies"));
    }

    #[test]
    fn inline_policies_become_a_cedar_authorizer_with_their_claim_mapping() {
        let config: AuthzConfig = serde_json::from_value(json!({"type": "inline", "groupClaimName": "groups",
            "inline": {"policies": ["permit(principal, action == Action::\"call_tool\", resource);"]}}))
        .unwrap();
        let out = from_inline(&config).unwrap();
        assert_eq!(
            out["cedar"],
            json!({"policies": ["permit(principal, action == Action::\"call_tool\", resource);"], "entities_json": "[]", "group_claim_name": "groups"})
        );
        let from_configmap: AuthzConfig = serde_json::from_value(json!({"type": "configMap", "configMap": {"name": "p"}})).unwrap();
        assert_eq!(from_inline(&from_configmap), None);
    }
}
