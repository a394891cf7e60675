//! The VirtualMCPServer API: one MCP endpoint over the servers of an MCPGroup. The
//! shape is ToolHive's (field names, enums, defaults, short names, columns); what
//! this operator does not carry out yet is stored as written and refused by
//! `unsupported` (at admission and in the status), never accepted and ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kinds::authz::AuthzConfig;
use crate::kinds::mcpserver::api::{DNS_SUBDOMAIN, NameRef};
use crate::kinds::oidc::OidcConfigRef;

/// One MCP endpoint aggregating the tools of an MCPGroup's servers.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "VirtualMCPServer",
    plural = "virtualmcpservers",
    singular = "virtualmcpserver",
    shortname = "vmcp",
    shortname = "virtualmcp",
    category = "toolhive",
    namespaced,
    status = "VirtualMCPServerStatus",
    doc = "VirtualMCPServer serves the tools of an MCPGroup's servers behind one MCP endpoint.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Backends", type_ = "integer", json_path = ".status.backendCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status")
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMCPServerSpec {
    /// How clients authenticate to the endpoint: say `anonymous` when nobody must.
    pub incoming_auth: IncomingAuth,
    /// How the endpoint authenticates to the group's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing_auth: Option<OutgoingAuth>,
    /// Client request headers forwarded to every backend. Refused for now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_headers: Vec<String>,
    /// Type of the endpoint's Service.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Whether the Service pins a client to one pod (ClientIP) or not (None).
    #[serde(default)]
    pub session_affinity: crate::kinds::mcpserver::api::SessionAffinity,
    /// An existing ServiceAccount for the endpoint's pod; unset: the operator makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account: Option<String>,
    /// A PodTemplateSpec merged into the endpoint's pod. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub pod_template_spec: Option<Value>,
    /// The MCPGroup (same namespace) whose servers, remote proxies and entries are served.
    pub group_ref: NameRef,
    /// The endpoint's configuration (aggregation, operational settings, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub config: Option<Value>,
    /// A shared MCPTelemetryConfig (same namespace). Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_config_ref: Option<crate::kinds::mcpserver::api::TelemetryConfigRef>,
    /// An EmbeddingServer (same namespace): turns the tool optimizer on, with its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_server_ref: Option<NameRef>,
    /// An embedded OAuth authorization server. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub auth_server_config: Option<Value>,
    /// Narrows the embedded authorization server's upstream chain. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub auth_server_upstream_filter: Option<Value>,
    /// Replicas of the endpoint's Deployment; unset leaves scaling to an autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Session storage for several replicas. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub session_storage: Option<Value>,
    /// Pull secrets for the endpoint's pod and its ServiceAccount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How clients authenticate to the endpoint, and what they may call.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncomingAuth {
    #[serde(rename = "type")]
    pub auth_type: IncomingAuthType,
    /// The shared MCPOIDCConfig (same namespace) tokens are validated against (type oidc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_config_ref: Option<OidcConfigRef>,
    /// Cedar policies deciding which tools a caller may list and call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_config: Option<AuthzConfig>,
    /// A shared MCPAuthzConfig (same namespace), of type cedarv1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_config_ref: Option<NameRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IncomingAuthType {
    #[default]
    #[serde(rename = "anonymous")]
    Anonymous,
    #[serde(rename = "oidc")]
    Oidc,
}

/// How the endpoint authenticates to the group's servers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingAuth {
    /// discovered: from each backend's own external auth config; inline: as given here.
    #[serde(default)]
    pub source: OutgoingAuthSource,
    /// Authentication for backends named in no `backends` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<BackendAuth>,
    /// Authentication per backend (by the backend's name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendAuth>,
}

impl OutgoingAuth {
    /// How the backend `name` is called, with the path of the field that says so: its
    /// own entry, else the default; None: as the backend's own external auth config
    /// says (discovered).
    pub fn for_backend(&self, name: &str) -> Option<(String, &BackendAuth)> {
        let (path, auth) = match self.backends.get(name) {
            Some(auth) => (format!("spec.outgoingAuth.backends.{name}"), auth),
            None => ("spec.outgoingAuth.default".to_string(), self.default.as_ref()?),
        };
        (auth.auth_type == BackendAuthType::ExternalAuthConfigRef).then_some((path, auth))
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OutgoingAuthSource {
    #[default]
    #[serde(rename = "discovered")]
    Discovered,
    #[serde(rename = "inline")]
    Inline,
}

/// One backend's authentication: as its own external auth config says
/// (discovered), or by the MCPExternalAuthConfig named here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'externalAuthConfigRef' ? has(self.externalAuthConfigRef) : !has(self.externalAuthConfigRef)",
     "message": "externalAuthConfigRef is required when type is externalAuthConfigRef, and must not be set otherwise"}
]))]
pub struct BackendAuth {
    #[serde(rename = "type")]
    pub auth_type: BackendAuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<NameRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackendAuthType {
    #[default]
    #[serde(rename = "discovered")]
    Discovered,
    #[serde(rename = "externalAuthConfigRef")]
    ExternalAuthConfigRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMCPServerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VirtualPhase>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Where clients reach the endpoint, inside the cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The group's members the endpoint serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub discovered_backends: Vec<DiscoveredBackend>,
    /// How many backends can be routed to (ready ones).
    #[serde(default)]
    pub backend_count: i32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VirtualPhase {
    Pending,
    Ready,
    Degraded,
    Failed,
}

impl VirtualPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            VirtualPhase::Pending => "Pending",
            VirtualPhase::Ready => "Ready",
            VirtualPhase::Degraded => "Degraded",
            VirtualPhase::Failed => "Failed",
        }
    }
}

/// One member of the group, as the endpoint reaches it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredBackend {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// ready, unavailable or unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// How the endpoint authenticates to it (unauthenticated here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_virtualmcpservers.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1 sharing one schema, with
/// the reference's rules on incoming auth.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(VirtualMCPServer::crd()).expect("crd serializes");
    let spec = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["incomingAuth"]["x-kubernetes-validations"] = json!([
        {"rule": "self.type == 'oidc' ? has(self.oidcConfigRef) : true",
         "message": "spec.incomingAuth.oidcConfigRef is required when type is oidc"},
        {"rule": "!(has(self.authzConfig) && has(self.authzConfigRef))",
         "message": "authzConfig and authzConfigRef are mutually exclusive; use authzConfigRef to reference a shared MCPAuthzConfig"}
    ]);
    let status = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    status["phase"]["default"] = json!("Pending");
    crate::shared::crd::with_deprecated_version(value)
}

/// The spec's fields this operator does not carry out yet, with why: each is refused
/// at admission and fails the server, never accepted and ignored.
pub fn unsupported(spec: &VirtualMCPServerSpec) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut refuse = |present: bool, field: &str, why: &'static str| {
        if present {
            out.push((format!("spec.{field}"), why));
        }
    };
    refuse(
        spec.auth_server_config.is_some(),
        "authServerConfig",
        "the embedded authorization server is not carried out by this operator release; remove it",
    );
    refuse(
        spec.auth_server_upstream_filter.is_some(),
        "authServerUpstreamFilter",
        "the embedded authorization server is not carried out by this operator release; remove it",
    );
    refuse(
        spec.session_storage.is_some(),
        "sessionStorage",
        "shared session storage for the vMCP is not carried out by this operator release; remove it (run one replica)",
    );
    if let Some(authz) = &spec.incoming_auth.authz_config {
        refuse(
            authz.config_type != crate::kinds::authz::AuthzConfigType::Inline,
            "incomingAuth.authzConfig.type",
            "only inline Cedar policies are carried out for the vMCP by this operator release; set type: inline",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_the_reference_s_names_columns_and_rules_in_both_versions() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["vmcp", "virtualmcp"]));
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.iter().map(|v| v["name"].as_str().unwrap()).collect::<Vec<_>>(), ["v1beta1", "v1alpha1"]);
        let columns: Vec<&str> =
            versions[0]["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Phase", "URL", "Backends", "Age", "Ready"]);
        let schema = &versions[0]["schema"]["openAPIV3Schema"];
        assert_eq!(schema["properties"]["spec"]["required"], json!(["groupRef", "incomingAuth"]));
        let incoming = &schema["properties"]["spec"]["properties"]["incomingAuth"];
        assert_eq!(incoming["properties"]["type"]["enum"], json!(["anonymous", "oidc"]));
        assert_eq!(incoming["x-kubernetes-validations"].as_array().unwrap().len(), 2);
        assert_eq!(schema["properties"]["spec"]["properties"]["config"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(schema["properties"]["spec"]["properties"]["serviceType"]["enum"], json!(["ClusterIP", "NodePort", "LoadBalancer"]));
        assert_eq!(schema["properties"]["status"]["properties"]["phase"]["default"], "Pending");
    }

    #[test]
    fn each_field_not_carried_out_is_named_with_its_path() {
        let spec: VirtualMCPServerSpec = serde_json::from_value(json!({
            "groupRef": {"name": "g"},
            "incomingAuth": {"type": "anonymous", "authzConfigRef": {"name": "a"}},
            "outgoingAuth": {"source": "inline", "backends": {"x": {"type": "discovered"}}},
            "sessionStorage": {"provider": "redis"}
        }))
        .unwrap();
        let fields: Vec<String> = unsupported(&spec).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["spec.sessionStorage"], "a shared MCPAuthzConfig and explicit outgoing auth are carried out");
        let plain: VirtualMCPServerSpec =
            serde_json::from_value(json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}})).unwrap();
        assert!(unsupported(&plain).is_empty());
    }
}
