//! The `MCPServer` API (`toolhive.stacklok.dev`). The CRD YAML in the CRDs chart is
//! generated from these types by `cargo run --bin crdgen`; a unit test fails when the
//! committed file and the types disagree.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::kinds::authz::{AuthzConfig, AuthzConfigType, ConfigMapKeyRef, InlineAuthz};
pub use crate::kinds::oidc::OidcConfigRef;
pub use crate::shared::crd::*;
pub use crate::shared::refs::{ABSOLUTE_PATH, CONFIG_KEY, DNS_LABEL, DNS_SUBDOMAIN, ENV_NAME, SecretKeyRef};

pub const FINALIZER: &str = "mcpserver.toolhive.stacklok.dev/finalizer";
pub const RESTARTED_AT_ANNOTATION: &str = "mcpserver.toolhive.stacklok.dev/restarted-at";

/// Desired state of an MCP server run by the ToolHive proxy runner.
// Each printcolumn names a type; clippy reads the repeated `type_` as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPServer",
    plural = "mcpservers",
    singular = "mcpserver",
    shortname = "mcpserver",
    shortname = "mcpservers",
    category = "toolhive",
    namespaced,
    status = "MCPServerStatus",
    doc = "MCPServer runs one Model Context Protocol server behind the ToolHive proxy runner.",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// Container image of the MCP server, e.g. ghcr.io/stackloklabs/osv-mcp/server:latest.
    pub image: String,

    /// How clients talk to the MCP server: stdio, streamable-http or sse.
    #[serde(default)]
    pub transport: Transport,

    /// For stdio servers only: the protocol the proxy exposes (sse or streamable-http).
    /// Ignored for the HTTP transports.
    #[serde(default)]
    pub proxy_mode: ProxyMode,

    /// Port the proxy runner listens on; the proxy Service exposes it as port "http".
    #[serde(default = "default_proxy_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub proxy_port: i32,

    /// Port the MCP server itself listens on (HTTP transports). Defaults to the proxy port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub mcp_port: Option<i32>,

    /// Extra command-line arguments passed to the MCP server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables set in the MCP server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<PlainEnvVar>,

    /// Host paths mounted into the MCP server container. Tenancy policy usually forbids these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volumes: Vec<HostPathVolume>,

    /// CPU and memory for the proxy runner container.
    #[serde(default, skip_serializing_if = "ContainerResources::is_empty")]
    pub resources: ContainerResources,

    /// Secret keys exposed to the MCP server as environment variables (one entry per
    /// Secret and key, so two keys of one Secret may both be used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name", "key"]))]
    pub secrets: Vec<SecretRef>,

    /// Name of an existing ServiceAccount for the MCP server pod. When unset the operator
    /// creates `<name>-sa`. The proxy runners' own accounts (`*-proxy-runner`) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account: Option<String>,

    /// Which permission profile (filesystem and network access) the MCP server runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_profile: Option<PermissionProfileRef>,

    /// A PodTemplateSpec merged into the MCP server pod; the MCP container is named `mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub pod_template_spec: Option<Value>,

    /// Extra labels, annotations, environment and pull secrets for the objects the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_overrides: Option<ResourceOverrides>,

    /// Reference to a shared MCPOIDCConfig in this namespace. Without any authentication
    /// source the proxy accepts every request that reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_config_ref: Option<OidcConfigRef>,

    /// Inline or ConfigMap-backed authorization policy. Mutually exclusive with authzConfigRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_config: Option<AuthzConfig>,

    /// Reference to a shared MCPAuthzConfig in this namespace. Mutually exclusive with authzConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz_config_ref: Option<NameRef>,

    /// Audit logging of MCP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,

    /// Reference to an MCPToolConfig in this namespace (tool filtering and renaming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config_ref: Option<NameRef>,

    /// Reference to an MCPExternalAuthConfig in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<NameRef>,

    /// Reference to an MCPWebhookConfig in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_config_ref: Option<NameRef>,

    /// Reference to the resource configuring an embedded OAuth 2.0/OIDC authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_server_ref: Option<AuthServerRef>,

    /// Reference to a shared MCPTelemetryConfig in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_config_ref: Option<TelemetryConfigRef>,

    /// Reference to the MCPGroup (same namespace) this server belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ref: Option<GroupRef>,

    /// Trust X-Forwarded-* headers from a reverse proxy when building endpoint URLs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_proxy_headers: bool,

    /// Path prefix prepended to SSE endpoint URLs (for ingresses that strip a prefix).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_prefix: String,

    /// Whether the proxy Service pins a client to one pod (ClientIP) or not (None).
    #[serde(default)]
    pub session_affinity: SessionAffinity,

    /// Replicas of the proxy runner Deployment; unset leaves scaling to an autoscaler.
    /// Zero stops the server (phase Stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Replicas of the MCP server backend, passed to the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backend_replicas: Option<i32>,

    /// Session storage for horizontally scaled proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_storage: Option<SessionStorageConfig>,

    /// Rate limits the proxy enforces on tool calls; requires redis session storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<crate::kinds::mcpserver::ratelimit::RateLimitConfig>,

    /// Largest request body the proxy accepts, in bytes (0: the runner's default).
    /// Refused for now: see `schema::UNSUPPORTED_FIELDS`.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub max_request_body_size: i64,

    /// How long the proxy may spend reading a whole request, as a duration ("1m").
    /// Refused for now: see `schema::UNSUPPORTED_FIELDS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub proxy_read_timeout: Option<String>,

    /// Set only on the MCPServer an MCPRemoteProxy is projected onto
    /// (`remote::as_server`): never read from or written to the API.
    #[serde(skip)]
    #[schemars(skip)]
    pub remote: Option<Box<super::remote::RemoteTarget>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The proxy port when the spec names none (the CRD's default).
pub const DEFAULT_PROXY_PORT: i32 = 8080;

fn default_proxy_port() -> i32 {
    DEFAULT_PROXY_PORT
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Transport {
    #[default]
    #[serde(rename = "stdio")]
    Stdio,
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProxyMode {
    #[serde(rename = "sse")]
    Sse,
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Sse => "sse",
            ProxyMode::StreamableHttp => "streamable-http",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionAffinity {
    #[default]
    ClientIP,
    None,
}

/// An environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PlainEnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    pub value: String,
}

/// A hostPath volume mounted into the MCP server container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolume {
    /// Volume name, unique within the list.
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,
    /// Absolute path on the node (no ':').
    #[schemars(length(max = 4096), regex(pattern = ABSOLUTE_PATH))]
    pub host_path: String,
    /// Absolute path inside the container (no ':').
    #[schemars(length(max = 4096), regex(pattern = ABSOLUTE_PATH))]
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Compute resources of a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ContainerResources {
    /// Upper bounds.
    #[serde(default, skip_serializing_if = "ResourceAmounts::is_empty")]
    pub limits: ResourceAmounts,
    /// Amounts the scheduler reserves.
    #[serde(default, skip_serializing_if = "ResourceAmounts::is_empty")]
    pub requests: ResourceAmounts,
}

impl ContainerResources {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.requests.is_empty()
    }

    /// As a container's resources; None when nothing is set.
    pub fn requirements(&self) -> Option<k8s_openapi::api::core::v1::ResourceRequirements> {
        fn quantities(list: &ResourceAmounts) -> Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>> {
            let map: BTreeMap<_, _> = [("cpu", &list.cpu), ("memory", &list.memory)]
                .into_iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, q)| (k.to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.clone())))
                .collect();
            (!map.is_empty()).then_some(map)
        }
        (!self.is_empty()).then(|| k8s_openapi::api::core::v1::ResourceRequirements {
            limits: quantities(&self.limits),
            requests: quantities(&self.requests),
            ..Default::default()
        })
    }
}

/// CPU and memory quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResourceAmounts {
    /// CPU quantity, e.g. "500m".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// Memory quantity, e.g. "64Mi".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
}

impl ResourceAmounts {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty() && self.memory.is_empty()
    }
}

/// A key of a Secret exposed as an environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(max = 253), regex(pattern = CONFIG_KEY))]
    pub key: String,
    /// Environment variable name; defaults to the key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253), regex(pattern = ENV_NAME))]
    pub target_env_name: String,
}

/// Where the permission profile comes from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PermissionProfileRef {
    /// builtin (name is "none" or "network") or configmap (name is a ConfigMap).
    #[serde(default, rename = "type")]
    pub profile_type: PermissionProfileType,
    /// Built-in profile name or ConfigMap name.
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key in the ConfigMap holding the profile (configmap only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253), regex(pattern = CONFIG_KEY))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PermissionProfileType {
    #[default]
    #[serde(rename = "builtin")]
    Builtin,
    #[serde(rename = "configmap")]
    ConfigMap,
}

/// Overrides for the objects the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOverrides {
    /// Overrides for the proxy runner Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_deployment: Option<ProxyDeploymentOverrides>,
    /// Overrides for the proxy Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_service: Option<MetadataOverrides>,
}

/// Overrides for the proxy runner Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyDeploymentOverrides {
    /// Annotations added to the Deployment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels added to the Deployment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Labels and annotations added to the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_metadata_overrides: Option<MetadataOverrides>,
    /// Environment variables of the proxy runner container (not the MCP server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<PlainEnvVar>,
    /// Pull secrets for the proxy runner, set on its Deployment and ServiceAccount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<NameRef>,
    /// Node labels the proxy pod must be scheduled onto.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the proxy pod tolerates (a dedicated node pool, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Node and pod (anti-)affinity of the proxy pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<k8s_openapi::api::core::v1::Affinity>,
}

/// Labels and annotations to add.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MetadataOverrides {
    /// Annotations to add or override.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels to add or override.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A reference by name to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NameRef {
    /// Name of the referenced object in this namespace (a name, never a path to
    /// another namespace).
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to an MCPGroup in this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GroupRef {
    /// Name of the MCPGroup.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A reference to a shared MCPTelemetryConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryConfigRef {
    /// Name of the MCPTelemetryConfig in this namespace (a name, never a path to
    /// another namespace).
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
    /// Service name reported for this server; defaults to the MCPServer name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
}

/// A reference to the embedded authorization server configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthServerRef {
    /// Kind of the referenced resource; only MCPExternalAuthConfig today.
    #[serde(default)]
    pub kind: AuthServerKind,
    /// Name of the referenced resource in this namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthServerKind {
    #[default]
    MCPExternalAuthConfig,
}

/// Audit logging.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuditConfig {
    /// Log an audit record for every MCP request.
    #[serde(default)]
    pub enabled: bool,
}

/// Session storage for horizontally scaled proxies: with `redis`, every proxy replica
/// finds every session (and rate limits are counted there).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.provider == 'redis' ? has(self.address) : true", "message": "address is required"}]))]
pub struct SessionStorageConfig {
    /// memory or redis.
    pub provider: SessionStorageProvider,
    /// Redis address (required for redis).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Redis database number.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub db: i32,
    /// Prefix for every key ToolHive writes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_prefix: String,
    /// The Secret key holding the Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretKeyRef>,
    /// TLS to Redis (an empty object: verify against the system roots). Refused for
    /// now: see `schema::UNSUPPORTED_FIELDS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTls>,
}

/// TLS settings of a Redis connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisTls {
    /// The Secret key holding a PEM CA certificate for the Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionStorageProvider {
    #[default]
    #[serde(rename = "memory")]
    Memory,
    #[serde(rename = "redis")]
    Redis,
}

/// Observed state of an MCPServer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// Latest observations (Ready, PodTemplateValid, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where clients reach the MCP server inside the cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Human-readable detail about the phase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Ready proxy replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    Pending,
    Ready,
    Failed,
    Terminating,
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Pending, Phase::Ready, Phase::Failed, Phase::Terminating, Phase::Stopped];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Stopped => "Stopped",
        }
    }
}

impl MCPServer {
    pub fn proxy_port(&self) -> i32 {
        self.spec.proxy_port
    }
    pub fn mcp_port(&self) -> i32 {
        self.spec.mcp_port.unwrap_or(self.spec.proxy_port)
    }
}

pub use super::schema::{CRD_CHART_FILE, PodTemplateError, REMOVED_FIELDS, UNSUPPORTED_FIELDS, Unsupported, crd, parse_pod_template};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_unsupported_field_is_found_by_its_own_accessor() {
        for unsupported in UNSUPPORTED_FIELDS {
            let spec = match unsupported.field {
                "volumes" => json!({"image": "x", "volumes": [{"name": "x", "hostPath": "/x", "mountPath": "/x"}]}),
                "maxRequestBodySize" => json!({"image": "x", "maxRequestBodySize": 1024}),
                "proxyReadTimeout" => json!({"image": "x", "proxyReadTimeout": "1m"}),
                "sessionStorage.tls" => json!({"image": "x", "sessionStorage": {"provider": "redis", "address": "r:6379", "tls": {}}}),
                other => panic!("no sample spec for the unsupported field {other}"),
            };
            assert!(unsupported.value_in(&spec).is_some(), "{} is not found in its sample", unsupported.field);
            let spec: MCPServerSpec = serde_json::from_value(spec).unwrap();
            let found: Vec<&str> = spec.unsupported_fields().iter().map(|u| u.field).collect();
            assert_eq!(found, vec![unsupported.field]);
        }
    }

    #[test]
    fn crd_has_both_versions_sharing_one_schema() {
        let crd = crd();
        let v = &crd.spec.versions;
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].name.as_str(), v[0].storage, v[0].served), ("v1beta1", true, true));
        assert_eq!((v[1].name.as_str(), v[1].storage, v[1].deprecated), ("v1alpha1", false, Some(true)));
        assert_eq!(v[1].deprecation_warning.as_deref(), Some(DEPRECATION_WARNING));
        assert_eq!(v[0].schema, v[1].schema);
        assert_eq!(crd.spec.names.categories, Some(vec!["toolhive".to_string()]));
        let spec = serde_json::to_value(&v[0].schema).unwrap()["openAPIV3Schema"]["properties"]["spec"].clone();
        assert_eq!(spec["required"], json!(["image"]));
        assert_eq!(spec["properties"]["transport"]["default"], "stdio");
        assert_eq!(spec["properties"]["proxyPort"]["default"], 8080);
        assert_eq!(spec["properties"]["proxyPort"]["maximum"], 65535.0);
        assert_eq!(spec["properties"]["env"]["x-kubernetes-list-type"], "map");
        assert!(spec["properties"]["image"]["description"].as_str().is_some_and(|d| !d.is_empty()));
    }
}
