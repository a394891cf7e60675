//! MCPToolConfig: which of an MCP server's tools the proxy lets through
//! (`toolsFilter`) and under which names and descriptions (`toolsOverride`). An
//! MCPServer names one with `spec.toolConfigRef` (same namespace). The resolved
//! configuration goes into the server's RunConfig, so an edit rolls the proxy; a
//! missing or invalid one stops the proxy (0 replicas) and fails the server: it
//! never serves without the filter it asked for.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::configkind::ConfigStatus;

/// Tool filtering and renaming for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPToolConfig",
    plural = "mcptoolconfigs",
    singular = "mcptoolconfig",
    shortname = "tc",
    shortname = "toolconfig",
    category = "toolhive",
    namespaced,
    status = "MCPToolConfigStatus",
    doc = "MCPToolConfig filters and renames the tools of the MCPServers that reference it (spec.toolConfigRef, same namespace).",
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPToolConfigSpec {
    /// Only these tools are listed and callable (all when empty). Names are the
    /// server's own, before any override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub tools_filter: Vec<String>,
    /// Per tool (by the server's name for it): the name and description clients see.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools_override: BTreeMap<String, ToolOverride>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolOverride {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Accepted for the API's sake; the proxy runner this release drives does not apply
    /// annotation overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// Tool annotation overrides (also a composite tool's annotations). Unknown keys are
/// refused, not dropped (the CRD schema prunes them before they get here anyway).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolAnnotations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// The status every shared configuration kind keeps (Valid, observedGeneration,
/// configHash).
pub type MCPToolConfigStatus = ConfigStatus;

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcptoolconfigs.yaml";

pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPToolConfig::crd()).expect("crd serializes"))
}

impl MCPToolConfigSpec {
    /// What is wrong with it, if anything: an override must rename or redescribe.
    pub fn problem(&self) -> Option<String> {
        let empty: Vec<&str> =
            self.tools_override.iter().filter(|(_, o)| o.name.is_empty() && o.description.is_empty()).map(|(k, _)| k.as_str()).collect();
        (!empty.is_empty()).then(|| format!("spec.toolsOverride[{}]: set a name or a description", empty.join(", ")))
    }
}

crate::shared::configkind::config_kind!(MCPToolConfig { spec: MCPToolConfigSpec });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::configkind::desired_status;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn config(spec: serde_json::Value) -> MCPToolConfig {
        serde_json::from_value(json!({"metadata": {"name": "tc", "namespace": "a", "generation": 1}, "spec": spec})).unwrap()
    }

    #[test]
    fn an_override_that_changes_nothing_is_invalid_and_says_which() {
        let good = config(json!({"toolsFilter": ["a"], "toolsOverride": {"a": {"name": "b"}}}));
        let t = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let status = desired_status(&good, t.clone());
        assert_eq!((status.conditions[0].status.as_str(), status.config_hash.len()), ("True", 16));
        let bad = config(json!({"toolsOverride": {"a": {}, "b": {"description": "d"}}}));
        let status = desired_status(&bad, t);
        assert_eq!(status.conditions[0].status, "False");
        assert!(status.conditions[0].message.contains("toolsOverride[a]"), "{}", status.conditions[0].message);
    }

    #[test]
    fn crd_is_the_references_shape() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["tc", "toolconfig"]));
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["additionalPrinterColumns"][0]["name"], "Valid");
        assert_eq!(v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["toolsFilter"]["x-kubernetes-list-type"], "set");
        assert_eq!(crd["spec"]["versions"][1]["name"], "v1alpha1");
    }
}
