//! The EmbeddingServer API: a text-embeddings inference server (HuggingFace's TEI
//! HTTP API: `/health`, `/info`, `/embed`) run as a StatefulSet, optionally with a
//! model cache volume. The shape is ToolHive's (fields, defaults, enums, short names,
//! columns); `podTemplateSpec` is stored as written and refused by `unsupported`.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::mcpserver::api::{ContainerResources, MetadataOverrides, PlainEnvVar};
use crate::shared::refs::SecretKeyRef;

/// An embedding model served over HTTP, for a VirtualMCPServer's tool optimizer.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "EmbeddingServer",
    plural = "embeddingservers",
    singular = "embeddingserver",
    shortname = "emb",
    shortname = "embedding",
    category = "toolhive",
    namespaced,
    status = "EmbeddingServerStatus",
    doc = "EmbeddingServer runs a text-embeddings inference server for a model.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingServerSpec {
    /// The model to serve (a HuggingFace model id).
    #[serde(default = "default_model")]
    pub model: String,
    /// A Secret key holding a HuggingFace token, for gated or private models.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "hfTokenSecretRef")]
    pub hf_token_secret_ref: Option<SecretKeyRef>,
    /// The inference server's image.
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// The port the server listens on and the Service exposes.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Arguments added after `--model-id` and `--port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables of the server's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<PlainEnvVar>,
    #[serde(default, skip_serializing_if = "ContainerResources::is_empty")]
    pub resources: ContainerResources,
    /// A volume per replica where downloaded models are kept across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_cache: Option<ModelCache>,
    /// A PodTemplateSpec merged into the server's pod. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub pod_template_spec: Option<Value>,
    /// Labels and annotations for the StatefulSet, its pods, the Service and the cache volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_overrides: Option<EmbeddingResourceOverrides>,
    #[serde(default = "default_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
}

fn default_model() -> String {
    "BAAI/bge-small-en-v1.5".into()
}

fn default_image() -> String {
    "ghcr.io/huggingface/text-embeddings-inference:cpu-latest".into()
}

fn default_port() -> i32 {
    8080
}

fn default_replicas() -> Option<i32> {
    Some(1)
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    Never,
    #[default]
    IfNotPresent,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
            PullPolicy::IfNotPresent => "IfNotPresent",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCache {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// The StorageClass of the volumes; unset: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Each volume's size, a quantity.
    #[serde(default = "default_cache_size")]
    pub size: String,
    #[serde(default)]
    pub access_mode: AccessMode,
}

fn enabled() -> bool {
    true
}

fn default_cache_size() -> String {
    "10Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    #[default]
    ReadWriteOnce,
    ReadWriteMany,
    ReadOnlyMany,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingResourceOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set: Option<StatefulSetOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<MetadataOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<MetadataOverrides>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Labels and annotations of the server's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_metadata_overrides: Option<MetadataOverrides>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingServerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EmbeddingPhase>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Where clients reach the server, inside the cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EmbeddingPhase {
    Pending,
    /// Pods exist, none ready yet: the model is being fetched and loaded.
    Downloading,
    Ready,
    Failed,
    Terminating,
}

impl EmbeddingPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingPhase::Pending => "Pending",
            EmbeddingPhase::Downloading => "Downloading",
            EmbeddingPhase::Ready => "Ready",
            EmbeddingPhase::Failed => "Failed",
            EmbeddingPhase::Terminating => "Terminating",
        }
    }
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_embeddingservers.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1 sharing one schema.
pub fn crd() -> CustomResourceDefinition {
    let value = serde_json::to_value(EmbeddingServer::crd()).expect("crd serializes");
    crate::shared::crd::with_deprecated_version(value)
}

/// What in the spec cannot run: a quantity that does not parse (the reference would
/// stop on it), or a podTemplateSpec that is not a pod template (it is laid over the
/// StatefulSet's, never left out), each with its field path.
pub fn invalid(spec: &EmbeddingServerSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(Err(e)) = spec.pod_template_spec.as_ref().map(crate::kinds::mcpserver::api::parse_pod_template) {
        out.push(("spec.podTemplateSpec".to_string(), format!("not a pod template at {}: {}", e.path, e.message)));
    }
    let mut quantity = |field: String, text: &str| {
        if !text.is_empty()
            && let Err(e) = crate::shared::quantity::parse(text)
        {
            out.push((field, e.to_string()));
        }
    };
    for (section, amounts) in [("requests", &spec.resources.requests), ("limits", &spec.resources.limits)] {
        quantity(format!("spec.resources.{section}.cpu"), &amounts.cpu);
        quantity(format!("spec.resources.{section}.memory"), &amounts.memory);
    }
    if let Some(cache) = &spec.model_cache {
        quantity("spec.modelCache.size".into(), &cache.size);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_has_the_reference_s_names_defaults_and_columns() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["emb", "embedding"]));
        let version = &crd["spec"]["versions"][0];
        let columns: Vec<&str> =
            version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Status", "Model", "Ready", "URL", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["model"]["default"], "BAAI/bge-small-en-v1.5");
        assert_eq!(spec["port"]["default"], 8080);
        assert_eq!(spec["replicas"]["default"], 1);
        assert_eq!(spec["imagePullPolicy"]["enum"], json!(["Always", "Never", "IfNotPresent"]));
        assert_eq!(crd["spec"]["versions"][1]["name"], "v1alpha1");
    }

    #[test]
    fn quantities_must_parse_and_a_pod_template_must_be_one() {
        let spec: EmbeddingServerSpec = serde_json::from_value(json!({"podTemplateSpec": {"spec": {"containers": "many"}},
            "resources": {"limits": {"memory": "lots"}}, "modelCache": {"size": "10Gi"}}))
        .unwrap();
        let bad: Vec<String> = invalid(&spec).into_iter().map(|(f, _)| f).collect();
        assert_eq!(bad, ["spec.podTemplateSpec", "spec.resources.limits.memory"]);
        let plain: EmbeddingServerSpec = serde_json::from_value(json!({"podTemplateSpec": {"spec": {}}})).unwrap();
        assert!(invalid(&plain).is_empty());
        assert_eq!((plain.model.as_str(), plain.port, plain.replicas), ("BAAI/bge-small-en-v1.5", 8080, Some(1)));
    }
}
