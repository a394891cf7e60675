//! VirtualMCPCompositeToolDefinition: a composite tool defined once in a namespace
//! and named by VirtualMCPServers (`spec.config.compositeToolRefs`). Its spec is a
//! composite tool (`composite`), checked at admission with its paths; a server naming
//! one that is missing or cannot run is Failed with the reason. Watched only in the
//! namespaces where a VirtualMCPServer names one (`runtime::ondemand`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A composite tool, for VirtualMCPServers of its namespace to name.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "VirtualMCPCompositeToolDefinition",
    plural = "virtualmcpcompositetooldefinitions",
    singular = "virtualmcpcompositetooldefinition",
    shortname = "vmcpctd",
    shortname = "compositetool",
    category = "toolhive",
    namespaced,
    doc = "VirtualMCPCompositeToolDefinition defines a composite tool (a workflow of backend tool calls) for VirtualMCPServers to serve.",
    printcolumn(name = "Workflow", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct VirtualMCPCompositeToolDefinitionSpec {
    /// The composite tool: name, description, parameters, timeout, steps, annotations.
    #[serde(flatten)]
    #[schemars(skip)]
    pub tool: serde_json::Map<String, Value>,
}

pub const CRD_CHART_FILE: &str =
    "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_virtualmcpcompositetooldefinitions.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1. The spec is stored as
/// written, its name and steps required; what it holds is checked at admission.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(VirtualMCPCompositeToolDefinition::crd()).expect("crd serializes");
    value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = json!({
        "description": "The composite tool: name, description, parameters, timeout, steps, annotations.",
        "type": "object",
        "required": ["name", "steps"],
        "properties": {"name": {"type": "string", "minLength": 1}, "steps": {"type": "array", "minItems": 1,
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
        "x-kubernetes-preserve-unknown-fields": true
    });
    crate::shared::crd::with_deprecated_version(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_the_reference_s_names_and_keeps_the_spec_as_written() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["vmcpctd", "compositetool"]));
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["name", "steps"]));
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
        let stored: VirtualMCPCompositeToolDefinition = serde_json::from_value(json!({"metadata": {"name": "t"},
            "spec": {"name": "fetch_twice", "description": "d", "steps": [{"id": "a", "tool": "fetch.fetch"}]}}))
        .unwrap();
        assert_eq!(stored.spec.tool["name"], "fetch_twice");
        assert_eq!(serde_json::to_value(&stored.spec).unwrap()["steps"][0]["id"], "a");
    }
}
