//! The `MCPServer` API (`toolhive.stacklok.dev`). The CRD YAML in the CRDs chart is
//! generated from these types by `cargo run --bin crdgen`; a unit test fails when the
//! committed file and the types disagree.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const GROUP: &str = "toolhive.stacklok.dev";
pub const STORAGE_VERSION: &str = "v1beta1";
pub const DEPRECATED_VERSION: &str = "v1alpha1";
pub const DEPRECATION_WARNING: &str = "toolhive.stacklok.dev/v1alpha1 is deprecated; use v1beta1";
pub const FINALIZER: &str = "mcpserver.toolhive.stacklok.dev/finalizer";
pub const RESTARTED_AT_ANNOTATION: &str = "mcpserver.toolhive.stacklok.dev/restarted-at";

/// A DNS-1123 subdomain: the name of a Secret, ConfigMap or ServiceAccount. Names
/// become references, paths and strings for the runner, so anything else (a `/`, a
/// `,`, `..`) is refused by the API server before it reaches the operator.
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label: a volume name.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A key of a Secret or ConfigMap.
pub const CONFIG_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// An absolute path, without the ':' that separates the runner's `host:container`.
pub const ABSOLUTE_PATH: &str = r"^/[^:]*$";
/// An environment variable name the runner can pass on.
pub const ENV_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

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
    pub env: Vec<EnvVar>,

    /// Host paths mounted into the MCP server container. Tenancy policy usually forbids these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,

    /// CPU and memory for the proxy runner container.
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,

    /// Secret keys exposed to the MCP server as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[schemars(schema_with = "preserve_unknown_object")]
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
    pub rate_limiting: Option<crate::ratelimit::RateLimitConfig>,
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
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value.
    pub value: String,
}

/// A hostPath volume mounted into the MCP server container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
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
pub struct ResourceRequirements {
    /// Upper bounds.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
    /// Amounts the scheduler reserves.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.requests.is_empty()
    }
}

/// CPU and memory quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResourceList {
    /// CPU quantity, e.g. "500m".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// Memory quantity, e.g. "64Mi".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
}

impl ResourceList {
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
    pub env: Vec<EnvVar>,
    /// Pull secrets for the proxy runner, set on its Deployment and ServiceAccount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<NameRef>,
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

/// A reference to a shared MCPOIDCConfig with per-server overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfigRef {
    /// Name of the MCPOIDCConfig in this namespace (a name, never a path to another
    /// namespace).
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
    /// The audience a token must carry to reach this server.
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Scopes advertised for this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Protected resource URL advertised to clients.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_url: String,
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
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionStorageProvider {
    #[default]
    #[serde(rename = "memory")]
    Memory,
    #[serde(rename = "redis")]
    Redis,
}

/// A key of a Secret in this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
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

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    }))
    .expect("static schema")
}

/// Why `spec.podTemplateSpec` is not a pod template: the path inside it and the error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PodTemplateError {
    /// Below `spec.podTemplateSpec` ("." for the template itself).
    pub path: String,
    pub message: String,
}

impl MCPServerSpec {
    /// `spec.podTemplateSpec` typed. It is a patch over the pod the runner builds, so
    /// it may leave out the container list a whole template requires.
    pub fn pod_template(&self) -> Result<Option<k8s_openapi::api::core::v1::PodTemplateSpec>, PodTemplateError> {
        let Some(template) = &self.pod_template_spec else { return Ok(None) };
        parse_pod_template(template).map(Some)
    }
}

pub fn parse_pod_template(template: &Value) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec, PodTemplateError> {
    let mut template = template.clone();
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("containers").or_insert_with(|| Value::Array(Vec::new()));
    }
    serde_path_to_error::deserialize(&template)
        .map_err(|e| PodTemplateError { path: e.path().to_string(), message: e.into_inner().to_string() })
}

impl MCPServer {
    pub fn proxy_port(&self) -> i32 {
        self.spec.proxy_port
    }
    pub fn mcp_port(&self) -> i32 {
        self.spec.mcp_port.unwrap_or(self.spec.proxy_port)
    }
}

/// Fields removed from the API, the field that replaces each, and its old JSON type.
/// They stay in the schema only so the API server can refuse them with a message
/// naming the replacement (instead of silently pruning them).
pub const REMOVED_FIELDS: &[(&str, &str)] = &[
    ("port", "spec.proxyPort"),
    ("targetPort", "spec.mcpPort"),
    ("tools", "spec.toolConfigRef"),
    ("oidcConfig", "spec.oidcConfigRef"),
    ("telemetry", "spec.telemetryConfigRef"),
];

/// A field of the v1beta1 API this operator does not implement yet. Such fields are
/// refused (CRD rule and webhook) instead of accepted and ignored: an MCPServer that
/// asked for authentication or authorization must never run without it.
pub struct Unsupported {
    /// The field under `spec`.
    pub field: &'static str,
    /// What it would have configured.
    pub what: &'static str,
    /// Whether a spec sets it (in a form this operator does not implement).
    pub set_in: fn(&MCPServerSpec) -> bool,
}

impl Unsupported {
    /// The CRD rule that refuses it, given its schema: absent, or for a list, empty.
    pub fn rule(&self, schema: &Value) -> String {
        match schema["type"].as_str() {
            Some("array") => format!("!has(self.{0}) || size(self.{0}) == 0", self.field),
            _ => format!("!has(self.{})", self.field),
        }
    }

    /// Why it is refused, as the user reads it.
    pub fn message(&self) -> String {
        format!(
            "spec.{} ({}) is not supported by this operator release; remove it, or the server would run without it",
            self.field, self.what
        )
    }
}

pub const UNSUPPORTED_FIELDS: &[Unsupported] = &[
    // Host paths mounted into the MCP server: a way out of the pod's isolation that
    // the Pod Security Standards refuse in podTemplateSpec; not carried out here.
    Unsupported { field: "volumes", what: "host path mounts", set_in: |s| !s.volumes.is_empty() },
];

impl MCPServerSpec {
    /// The UNSUPPORTED_FIELDS this spec sets.
    pub fn unsupported_fields(&self) -> Vec<&'static Unsupported> {
        UNSUPPORTED_FIELDS.iter().filter(|u| (u.set_in)(self)).collect()
    }

    /// The spec's session storage when it is Redis.
    pub fn redis_sessions(&self) -> Option<&SessionStorageConfig> {
        self.session_storage.as_ref().filter(|s| s.provider == SessionStorageProvider::Redis)
    }
}

/// The schema a removed field keeps, typed as it was so CEL can see it.
fn removed_field_schema(field: &str, replacement: &str) -> Value {
    let description = format!("Removed; use {replacement}. Setting it is refused.");
    match field {
        "port" | "targetPort" => json!({"description": description, "type": "integer"}),
        "tools" => json!({"description": description, "type": "array", "items": {"type": "string"}}),
        _ => json!({"description": description, "type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    }
}

/// CEL rules on the spec that the API server enforces (besides enums and ranges).
const SPEC_RULES: &[(&str, &str)] = &[
    ("!(has(self.authzConfig) && has(self.authzConfigRef))", "authzConfig and authzConfigRef are mutually exclusive; set only one"),
    (
        "!has(self.rateLimiting) || (has(self.sessionStorage) && self.sessionStorage.provider == 'redis')",
        "rateLimiting requires sessionStorage with provider 'redis'",
    ),
    // Per-caller buckets without an authenticated caller would count nobody.
    (
        "!(has(self.rateLimiting) && has(self.rateLimiting.perUser)) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",
        "rateLimiting.perUser requires authentication (oidcConfigRef or externalAuthConfigRef)",
    ),
    (
        "!has(self.rateLimiting) || !has(self.rateLimiting.tools) || self.rateLimiting.tools.all(t, !has(t.perUser)) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",
        "per-tool perUser rate limiting requires authentication (oidcConfigRef or externalAuthConfigRef)",
    ),
];

/// Paths (inside spec) of lists that merge by `name` (server-side apply list-map).
const LIST_MAPS_BY_NAME: &[&[&str]] = &[&["env"], &["volumes"], &["secrets"], &["resourceOverrides", "proxyDeployment", "env"]];

/// The full CRD: v1beta1 (served, storage) and v1alpha1 (served, deprecated) sharing
/// one schema, so the API server needs no conversion.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(MCPServer::crd()).expect("crd serializes");
    let version = &mut value["spec"]["versions"][0];
    {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut rules: Vec<Value> = SPEC_RULES.iter().map(|(rule, message)| json!({"rule": rule, "message": message})).collect();
        for (old, new) in REMOVED_FIELDS {
            spec["properties"][*old] = removed_field_schema(old, new);
            rules.push(json!({"rule": format!("!has(self.{old})"), "message": format!("spec.{old} was removed; use {new}")}));
        }
        for unsupported in UNSUPPORTED_FIELDS {
            rules.push(json!({"rule": unsupported.rule(&spec["properties"][unsupported.field]), "message": unsupported.message()}));
        }
        spec["x-kubernetes-validations"] = json!(rules);
        for path in LIST_MAPS_BY_NAME {
            let mut node = &mut *spec;
            for key in *path {
                node = &mut node["properties"][*key];
            }
            node["x-kubernetes-list-type"] = json!("map");
            node["x-kubernetes-list-map-keys"] = json!(["name"]);
        }
    }
    with_deprecated_version(value)
}

/// Adds the deprecated v1alpha1 version, a copy of v1beta1 (one schema: the API server
/// needs no conversion), and lists conditions by type for server-side apply.
pub fn with_deprecated_version(mut value: Value) -> CustomResourceDefinition {
    value = conditions_by_type(value);
    let mut deprecated = value["spec"]["versions"][0].clone();
    deprecated["name"] = json!(DEPRECATED_VERSION);
    deprecated["storage"] = json!(false);
    deprecated["deprecated"] = json!(true);
    deprecated["deprecationWarning"] = json!(DEPRECATION_WARNING);
    value["spec"]["versions"].as_array_mut().expect("versions").push(deprecated);
    serde_json::from_value(value).expect("crd deserializes")
}

/// Lists a CRD's status conditions by type, for server-side apply.
pub fn conditions_by_type(mut value: Value) -> Value {
    let conditions = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    if conditions.is_object() {
        conditions["x-kubernetes-list-type"] = json!("map");
        conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
    }
    value
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpservers.yaml";

/// The MCPServer CRD as committed in the CRDs chart.
pub fn crd_chart_template() -> String {
    chart_template(crd())
}

/// The CRDs of the kinds MCPServers reference, each with the CRDs chart file it is
/// committed to.
pub fn companion_crds() -> [(&'static str, CustomResourceDefinition); 7] {
    [
        (crate::externalauth::CRD_CHART_FILE, crate::externalauth::crd()),
        (crate::webhookconfig::CRD_CHART_FILE, crate::webhookconfig::crd()),
        (crate::authz::CRD_CHART_FILE, crate::authz::crd()),
        (crate::oidc::CRD_CHART_FILE, crate::oidc::crd()),
        (crate::group::CRD_CHART_FILE, crate::group::crd()),
        (crate::toolconfig::CRD_CHART_FILE, crate::toolconfig::crd()),
        (crate::telemetry::CRD_CHART_FILE, crate::telemetry::crd()),
    ]
}

/// A CRD as committed in the CRDs chart: YAML, wrapped in the chart's install/keep switches.
pub fn chart_template(crd: CustomResourceDefinition) -> String {
    let mut value = serde_json::to_value(crd).expect("crd serializes");
    value["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "toolhive-operator"});
    let body = serde_yaml_ng::to_string(&value).expect("yaml");
    let body = body.replacen(
        "metadata:\n",
        "metadata:\n  annotations:\n    {{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n    {{- end }}\n",
        1,
    );
    format!(
        "# Generated by `cargo run --bin crdgen` from src/api.rs; do not edit by hand.\n{{{{- if .Values.crds.install }}}}\n{body}{{{{- end }}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_types() {
        let path = format!("{}/{CRD_CHART_FILE}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == crd_chart_template(), "{CRD_CHART_FILE} is stale: run `make crds` and commit the result");
        for (file, crd) in companion_crds() {
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(committed == chart_template(crd), "{path} is stale: run `make crds` and commit the result");
        }
    }

    #[test]
    fn each_unsupported_field_is_found_by_its_own_accessor() {
        for unsupported in UNSUPPORTED_FIELDS {
            let value = match unsupported.field {
                "volumes" => json!([{"name": "x", "hostPath": "/x", "mountPath": "/x"}]),
                _ => json!({"name": "x", "provider": "redis"}),
            };
            let spec: MCPServerSpec = serde_json::from_value(json!({"image": "x", unsupported.field: value})).unwrap();
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
