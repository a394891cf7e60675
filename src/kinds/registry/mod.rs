//! MCPRegistry: served so that existing manifests apply, never run. ToolHive has
//! deprecated it in favour of its standalone registry server, whose image no Go
//! module served here builds. The operator does not watch it (no watch, no memory);
//! instead the CRD says what happens: every version is deprecated with a warning
//! kubectl prints on each request, and the status defaults to `Failed` with the
//! reason, so `kubectl get mcpregistries` shows it without a controller writing it.

use k8s_openapi::api::core::v1::{LocalObjectReference, SecretKeySelector};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What `kubectl` prints for every MCPRegistry request, and the status says.
pub const NOT_RUN: &str = "MCPRegistry is deprecated and not run by this operator: deploy the ToolHive registry server on its own (its toolhive-registry-server chart) and point clients at it";

/// A registry of MCP servers (deprecated; stored, never run here).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPRegistry",
    plural = "mcpregistries",
    singular = "mcpregistry",
    shortname = "mcpreg",
    shortname = "registry",
    category = "toolhive",
    namespaced,
    status = "MCPRegistryStatus",
    doc = "MCPRegistry describes a registry server of MCP servers. Deprecated: stored but not run by this operator.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPRegistrySpec {
    /// The registry server's configuration file, as written.
    #[serde(rename = "configYAML")]
    #[schemars(length(min = 1))]
    pub config_yaml: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_list")]
    pub volumes: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "free_form_list")]
    pub volume_mounts: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "pgpassSecretRef")]
    pub pgpass_secret_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub pod_template_spec: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPRegistryStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default)]
    pub ready_replicas: i32,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpregistries.yaml";

/// The CRD: both versions deprecated with `NOT_RUN`, and a status that defaults to
/// Failed with the reason (the API server fills it in on every read).
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(MCPRegistry::crd()).expect("crd serializes");
    let schema = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    schema["default"] = json!({});
    schema["properties"]["phase"]["default"] = json!("Failed");
    schema["properties"]["phase"]["enum"] = json!(["Pending", "Ready", "Failed", "Terminating"]);
    schema["properties"]["message"]["default"] = json!(NOT_RUN);
    let mut crd = crate::shared::crd::with_deprecated_version(value);
    for version in &mut crd.spec.versions {
        version.deprecated = Some(true);
        version.deprecation_warning = Some(match version.name.as_str() {
            crate::shared::crd::STORAGE_VERSION => NOT_RUN.to_string(),
            _ => format!("toolhive.stacklok.dev/v1alpha1 is deprecated; {NOT_RUN}"),
        });
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_warns_and_the_status_defaults_to_not_run() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mcpreg", "registry"]));
        for version in crd["spec"]["versions"].as_array().unwrap() {
            assert_eq!(version["deprecated"], true);
            assert!(version["deprecationWarning"].as_str().unwrap().contains("not run by this operator"));
            let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
            assert_eq!((status["default"].clone(), status["properties"]["phase"]["default"].clone()), (json!({}), json!("Failed")));
        }
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["configYAML"]));
        assert_eq!(spec["properties"]["configYAML"]["minLength"], 1);
    }
}
