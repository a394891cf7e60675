//! Pure functions that build the objects an MCPServer owns. No I/O here, so every
//! name, label and field is unit-tested directly.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec},
    core::v1::{
        Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
        LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
        SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    },
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    util::intstr::IntOrString,
};
use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{MCPServer, MCPServerSpec, PermissionProfileType, ProxyMode, RESTARTED_AT_ANNOTATION, SessionAffinity, Transport};
use crate::authz::MCPAuthzConfigSpec;
use crate::externalauth::{MCPExternalAuthConfigSpec, RunnerTokenExchange};
use crate::oidc::{MCPOIDCConfigSpec, TokenValidation};
use crate::telemetry::{MCPTelemetryConfigSpec, RunnerTelemetry};
use crate::toolconfig::MCPToolConfigSpec;
use crate::webhookconfig::{MCPWebhookConfigSpec, RunnerWebhook};

pub const RUNCONFIG_SCHEMA_VERSION: &str = "v0.1.0";
pub const RUNCONFIG_KEY: &str = "runconfig.json";
pub const RUNCONFIG_MOUNT_PATH: &str = "/etc/runconfig";
pub const PROFILE_MOUNT_DIR: &str = "/etc/toolhive/profiles";
pub const PROXY_CONTAINER: &str = "toolhive";
/// Annotation on every child: hash of what the operator last applied, so a child that
/// already matches is never written again.
pub const SPEC_HASH_ANNOTATION: &str = "toolhive.stacklok.dev/applied-hash";
/// Pod-template annotation carrying the RunConfig hash: a RunConfig change rolls the proxy.
pub const RUNCONFIG_HASH_ANNOTATION: &str = "toolhive.stacklok.dev/runconfig-hash";
/// The MCPServer generation on the proxy pod, read by the runner (THV_MCPSERVER_GENERATION).
pub const GENERATION_ANNOTATION: &str = "toolhive.stacklok.dev/mcpserver-generation";

/// Names of the objects the operator creates for an MCPServer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNames {
    pub runconfig: String,
    pub proxy_runner: String,
    pub mcp_service_account: String,
    pub deployment: String,
    pub service: String,
}

impl ChildNames {
    pub fn for_server(name: &str) -> Self {
        Self {
            runconfig: format!("{name}-runconfig"),
            proxy_runner: format!("{name}-proxy-runner"),
            mcp_service_account: format!("{name}-sa"),
            deployment: name.to_string(),
            service: format!("mcp-{name}-proxy"),
        }
    }
}

impl ChildNames {
    /// Whether `child` is one of these names.
    pub fn owns(&self, child: &str) -> bool {
        [&self.runconfig, &self.proxy_runner, &self.mcp_service_account, &self.deployment, &self.service]
            .iter()
            .any(|n| n.as_str() == child)
    }
}

pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".into(), "mcpserver".into()),
        ("app.kubernetes.io/name".into(), "mcpserver".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("toolhive".into(), "true".into()),
        ("toolhive-name".into(), name.into()),
    ])
}

/// Selector for everything the operator owns (used by its child watches).
pub const MANAGED_SELECTOR: &str = "toolhive=true";
/// The label naming the MCPServer an object (or pod) belongs to.
pub const NAME_LABEL: &str = "toolhive-name";

/// The proxy Service's address inside the cluster: `http://<service>.<ns>.svc.cluster.local:<port>`.
pub fn service_base_url(server: &MCPServer) -> String {
    let name = server.metadata.name.as_deref().unwrap_or_default();
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    format!("http://mcp-{name}-proxy.{ns}.svc.cluster.local:{}", server.proxy_port())
}

pub fn service_url(server: &MCPServer) -> String {
    let name = server.metadata.name.as_deref().unwrap_or_default();
    let base = service_base_url(server);
    match effective_proxy_mode(server) {
        ProxyMode::StreamableHttp => format!("{base}/mcp"),
        ProxyMode::Sse => format!("{base}/sse#{name}"),
    }
}

/// The protocol clients see: the transport itself for HTTP transports, proxyMode for stdio.
pub fn effective_proxy_mode(server: &MCPServer) -> ProxyMode {
    match server.spec.transport {
        Transport::Stdio => server.spec.proxy_mode,
        Transport::StreamableHttp => ProxyMode::StreamableHttp,
        Transport::Sse => ProxyMode::Sse,
    }
}

/// The ServiceAccount the MCP server pod runs as.
pub fn mcp_service_account(server: &MCPServer) -> String {
    match &server.spec.service_account {
        Some(sa) if !sa.is_empty() => sa.clone(),
        _ => ChildNames::for_server(server.metadata.name.as_deref().unwrap_or_default()).mcp_service_account,
    }
}

/// The pod-template patch the runner applies to the MCP StatefulSet: the user's
/// podTemplateSpec with the ServiceAccount the operator decided (never the tenant's
/// choice of another account in its place).
pub fn pod_template_patch(server: &MCPServer) -> Value {
    let mut patch = match &server.spec.pod_template_spec {
        Some(Value::Object(fields)) => Value::Object(fields.clone()),
        _ => json!({}),
    };
    if !patch.get("spec").is_some_and(Value::is_object) {
        patch["spec"] = json!({});
    }
    // The shape the runner is given by the reference too: metadata and containers present.
    if !patch.get("metadata").is_some_and(Value::is_object) {
        patch["metadata"] = json!({});
    }
    if !patch["spec"].get("containers").is_some_and(Value::is_array) {
        patch["spec"]["containers"] = json!([]);
    }
    patch["spec"]["serviceAccountName"] = json!(mcp_service_account(server));
    // Secrets reach the MCP container as environment from secretKeyRef, set by the
    // kubelet: the runner never reads a Secret (its Role grants none).
    if !server.spec.secrets.is_empty() {
        let env: Vec<Value> = server
            .spec
            .secrets
            .iter()
            .map(|s| {
                let target = if s.target_env_name.is_empty() { &s.key } else { &s.target_env_name };
                json!({"name": target, "valueFrom": {"secretKeyRef": {"name": s.name, "key": s.key}}})
            })
            .collect();
        let containers = patch["spec"]["containers"].as_array_mut().expect("made an array above");
        let index = match containers.iter().position(|c| c.get("name").and_then(Value::as_str) == Some(MCP_CONTAINER)) {
            Some(i) => i,
            None => {
                containers.push(json!({"name": MCP_CONTAINER}));
                containers.len() - 1
            }
        };
        let container = &mut containers[index];
        let mut all = container.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
        all.extend(env);
        container["env"] = Value::Array(all);
    }
    patch
}

/// The MCP server's container in the runner's StatefulSet (what a pod patch names).
const MCP_CONTAINER: &str = "mcp";

/// The RunConfig the ToolHive proxy runner reads from `/etc/runconfig/runconfig.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    pub schema_version: &'static str,
    pub name: String,
    /// The name the runner gives the MCP server's workload (its StatefulSet); the
    /// runner refuses to start without it.
    pub container_name: String,
    /// The name the runner's own resources are derived from.
    pub base_name: String,
    pub image: String,
    pub transport: &'static str,
    pub host: String,
    pub port: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i32>,
    pub proxy_mode: &'static str,
    pub container_labels: BTreeMap<String, String>,
    /// JSON text of [`pod_template_patch`], given to the runner as `--k8s-pod-patch`
    /// (not in runconfig.json: the flag is where the runner reads it).
    #[serde(skip)]
    pub k8s_pod_template_patch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcpserver_generation: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd_args: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_profile_name_or_path: Option<String>,
    /// The built-in profile, resolved (the runner prefers it to the name); none for a
    /// profile in a ConfigMap, which the runner reads from its mounted path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_profile: Option<PermissionProfile>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub trust_proxy_headers: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_config: Option<AuditConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_config: Option<crate::ratelimit::RateLimitConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_config: Option<ScalingConfig>,
    /// The proxy's request chain, in order (see [`middleware_configs`]).
    pub middleware_configs: Vec<Middleware>,
    /// From the MCPToolConfig: the tools let through, and renamed ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools_filter: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tools_override: BTreeMap<String, ToolRename>,
    /// From the MCPTelemetryConfig.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_config: Option<RunnerTelemetry>,
    /// From the MCPOIDCConfig: how the proxy checks each request's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_config: Option<TokenValidation>,
    /// The CA bundle and token file the runner uses to reach the OIDC provider.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub thv_ca_bundle: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwks_auth_token_file: String,
    /// The authorizer (inline policies or the MCPAuthzConfig), as the runner reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_config: Option<Value>,
    /// Policies the runner reads from a file: a ConfigMap mounted (spec.authzConfig
    /// of type configMap).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub authz_config_path: String,
    /// From the MCPWebhookConfig.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validating_webhooks: Vec<RunnerWebhook>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutating_webhooks: Vec<RunnerWebhook>,
    /// From the MCPExternalAuthConfig: the caller's token exchanged for the backend's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_exchange_config: Option<RunnerTokenExchange>,
    /// The authorization server the runner runs for its clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_auth_server_config: Option<crate::authserver::RunnerAuthServer>,
}

/// A resolved permission profile as the runner reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PermissionProfile {
    pub name: &'static str,
    pub network: ProfileNetwork,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileNetwork {
    pub outbound: ProfileOutbound,
    /// No inbound rules: an empty object, as the runner writes it.
    pub inbound: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileOutbound {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_allow_all: bool,
}

/// The built-in profiles: `none` (no outbound network) and `network` (any), the
/// runner's default when a server names no profile.
fn builtin_profile(name: &str) -> Option<PermissionProfile> {
    let (name, insecure_allow_all) = match name {
        "none" | "stdio" => ("none", false),
        "network" => ("network", true),
        _ => return None,
    };
    Some(PermissionProfile {
        name,
        network: ProfileNetwork { outbound: ProfileOutbound { insecure_allow_all }, inbound: serde_json::Map::new() },
    })
}

/// A tool's new name and description, as the runner reads them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolRename {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One step of the proxy's request chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Middleware {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub parameters: Value,
}

/// The largest request body the proxy accepts (the runner's bodylimit step).
const MAX_REQUEST_BODY_BYTES: u64 = 8 << 20;

/// The chain the runner puts every request through, in the reference's order: a body
/// limit, the audit log when asked for, authentication (anonymous without an
/// MCPOIDCConfig), token exchange, tool filtering, MCP parsing, telemetry, webhooks,
/// authorization, panic recovery. Derived from the RunConfig's own fields, as the
/// runner derives it, so the chain always does what the RunConfig says. Not the
/// runner's usage-metrics step, which reports usage to the runner's vendor: a
/// platform's tenants' proxies do not phone home unless the platform says so (the
/// reference adds it unless TOOLHIVE_USAGE_METRICS_ENABLED=false or it runs in CI).
pub fn middleware_configs(rc: &RunConfig) -> Vec<Middleware> {
    let step = |kind, parameters| Middleware { kind, parameters };
    let mut chain = vec![step("bodylimit", json!({"max_bytes": MAX_REQUEST_BODY_BYTES}))];
    if let Some(audit) = &rc.audit_config {
        chain.push(step("audit", json!({"config_data": audit, "transport_type": rc.transport})));
    }
    // Without an MCPOIDCConfig the proxy authenticates no one (every request is let
    // through as a local user): the reference's default.
    chain.push(step("auth", rc.oidc_config.as_ref().map(|o| json!({"oidc_config": o})).unwrap_or_else(|| json!({}))));
    // Right after authentication, with the embedded authorization server: the caller's
    // token (one it issued) swapped for the upstream provider's, or, when that is not
    // wanted, the caller's credentials dropped before the MCP server.
    if let Some(server) = &rc.embedded_auth_server_config {
        if server.disable_upstream_token_injection {
            chain.push(step("strip-auth", json!({})));
        } else {
            chain.push(step("upstreamswap", json!({"config": {"provider_name": crate::authserver::provider_name(server)}})));
        }
    }
    // Then the token exchange: the caller's token is what gets exchanged.
    if let Some(exchange) = &rc.token_exchange_config {
        chain.push(step("tokenexchange", json!({"token_exchange_config": exchange})));
    }
    // Tool filtering: what tools/list shows, and what tools/call may reach.
    if !rc.tools_filter.is_empty() || !rc.tools_override.is_empty() {
        // Both keys of every override, empty ones too (the RunConfig's own field omits them).
        let overrides: BTreeMap<&str, Value> =
            rc.tools_override.iter().map(|(k, o)| (k.as_str(), json!({"name": o.name, "description": o.description}))).collect();
        let parameters = json!({"filter_tools": rc.tools_filter, "tools_override": overrides});
        chain.extend([step("tool-filter", parameters.clone()), step("tool-call-filter", parameters)]);
    }
    chain.push(step("mcp-parser", json!({})));
    // After parsing: spans and metrics carry the MCP method and tool.
    if let Some(telemetry) = &rc.telemetry_config {
        chain.push(step("telemetry", json!({"config": telemetry, "server_name": rc.name, "transport": rc.transport})));
    }
    // After parsing (the tool's name) and telemetry (its span notes the refusal).
    if let Some(limits) = &rc.rate_limit_config {
        let redis = rc.scaling_config.as_ref().and_then(|s| s.session_redis.as_ref());
        let mut parameters = json!({"namespace": rc.rate_limit_namespace, "server_name": rc.name, "config": limits});
        if let Some(redis) = redis {
            parameters["redis_addr"] = json!(redis.address);
            if redis.db != 0 {
                parameters["redis_db"] = json!(redis.db);
            }
        }
        chain.push(step("ratelimit", parameters));
    }
    // Webhooks: the mutating ones change the request, then the validating ones judge
    // what will be sent.
    for (kind, webhooks) in [("mutating-webhook", &rc.mutating_webhooks), ("validating-webhook", &rc.validating_webhooks)] {
        if !webhooks.is_empty() {
            chain.push(step(kind, json!({"webhooks": webhooks, "server_name": rc.name, "transport": rc.transport})));
        }
    }
    // Last before recovery: decisions see the authenticated caller and the parsed call.
    if let Some(authz) = &rc.authz_config {
        chain.push(step("authorization", json!({"config_data": authz})));
    } else if !rc.authz_config_path.is_empty() {
        chain.push(step("authorization", json!({"config_path": rc.authz_config_path})));
    }
    chain.push(step("recovery", Value::Null));
    chain
}

/// The runner's audit settings when `spec.audit.enabled`: the reference's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditConfig {
    pub detect_application_errors: bool,
    pub max_data_size: i64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { detect_application_errors: true, max_data_size: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_replicas: Option<i32>,
    /// Where the proxies keep sessions (and count rate limits); the password reaches
    /// the proxy as THV_SESSION_REDIS_PASSWORD, never through the RunConfig.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_redis: Option<SessionRedis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRedis {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub db: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_prefix: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The Redis password, by reference to its Secret, as the runner reads it.
fn redis_password_env(spec: &MCPServerSpec) -> Option<EnvVar> {
    Some(crate::sharedconfig::secret_env("THV_SESSION_REDIS_PASSWORD", spec.redis_sessions()?.password_ref.as_ref()?))
}

/// The Redis the proxies keep sessions in: the one the spec names, else (for a spec
/// that names no session storage at all) the platform's default, if any.
fn session_redis(spec: &MCPServerSpec, settings: &ProxySettings) -> Option<SessionRedis> {
    if spec.session_storage.is_none() {
        let address = settings.default_redis.clone()?;
        return Some(SessionRedis { address, db: 0, key_prefix: String::new() });
    }
    let storage = spec.redis_sessions()?;
    Some(SessionRedis { address: storage.address.clone(), db: storage.db, key_prefix: storage.key_prefix.clone() })
}

/// What every proxy gets from the operator's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Image of the ToolHive proxy runner.
    pub runner_image: String,
    /// Address the runner listens on (the RunConfig's `host`).
    pub host: String,
    /// The platform's Redis (host:port) for the sessions of servers that name no
    /// session storage of their own.
    pub default_redis: Option<String>,
}

impl ProxySettings {
    pub fn new(runner_image: impl Into<String>) -> Self {
        Self { runner_image: runner_image.into(), host: DEFAULT_PROXY_HOST.into(), default_redis: None }
    }
}

/// Where the proxy runner listens unless the operator is told otherwise.
pub const DEFAULT_PROXY_HOST: &str = "0.0.0.0";

/// What an MCPServer's references resolved to, for the builders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// spec.toolConfigRef's MCPToolConfig, found and valid.
    pub tools: Option<MCPToolConfigSpec>,
    /// spec.telemetryConfigRef's MCPTelemetryConfig, found and valid.
    pub telemetry: Option<MCPTelemetryConfigSpec>,
    /// spec.oidcConfigRef's MCPOIDCConfig, found and valid.
    pub oidc: Option<MCPOIDCConfigSpec>,
    /// spec.authzConfigRef's MCPAuthzConfig, found and valid.
    pub authz: Option<MCPAuthzConfigSpec>,
    /// spec.webhookConfigRef's MCPWebhookConfig, found and valid.
    pub webhooks: Option<MCPWebhookConfigSpec>,
    /// spec.externalAuthConfigRef's MCPExternalAuthConfig, found and valid.
    pub external_auth: Option<MCPExternalAuthConfigSpec>,
    /// The embedded authorization server (spec.authServerRef, or an
    /// externalAuthConfigRef of that type), found and valid.
    pub auth_server: Option<crate::authserver::EmbeddedAuthServer>,
    /// The resourceVersions of the ConfigMaps the server names for its proxy (policies,
    /// permission profile): in the pod template, so an edit of one rolls the proxy.
    pub configmap_versions: Option<String>,
    /// A reference could not be resolved: the proxy runs no replica, so it never
    /// serves without what the reference configures.
    pub unresolved: bool,
}

pub fn runconfig(server: &MCPServer, settings: &ProxySettings, resolved: &Resolved) -> RunConfig {
    let name = server_name(server);
    let spec = &server.spec;
    let permission_profile = spec.permission_profile.as_ref().map(|profile| match profile.profile_type {
        PermissionProfileType::Builtin => profile.name.clone(),
        PermissionProfileType::ConfigMap => format!("{PROFILE_MOUNT_DIR}/{}", profile_key(profile)),
    });
    let resolved_profile = match &spec.permission_profile {
        None => builtin_profile("network"),
        Some(p) if p.profile_type == PermissionProfileType::Builtin => builtin_profile(&p.name),
        Some(_) => None,
    };
    let transport = spec.transport.as_str();
    // The runner wants the MCP server's port for every transport (stdio included); the
    // server itself is told its port only when it listens on one.
    let target_port = Some(server.mcp_port());
    let listens = spec.transport != Transport::Stdio;
    // The container's labels, as the runner would add them itself. Not the proxy's
    // app/app.kubernetes.io labels: the MCP server's pods are not the proxy's.
    let mut container_labels =
        BTreeMap::from([("toolhive".to_string(), "true".to_string()), ("toolhive-name".to_string(), name.to_string())]);
    container_labels.extend([
        ("toolhive-basename".to_string(), name.to_string()),
        ("toolhive-transport".to_string(), transport.to_string()),
        ("toolhive-port".to_string(), server.proxy_port().to_string()),
    ]);
    // The spec's environment, then what the MCP server must know of its transport
    // (which wins: the server must listen where the proxy expects it).
    let mut env_vars: BTreeMap<String, String> = spec.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    env_vars.insert("MCP_TRANSPORT".into(), transport.into());
    if let Some(port) = target_port.filter(|_| listens) {
        env_vars.insert("MCP_PORT".into(), port.to_string());
        env_vars.insert("FASTMCP_PORT".into(), port.to_string());
    }
    let audit_config = spec.audit.as_ref().filter(|a| a.enabled).map(|_| AuditConfig::default());
    let telemetry_config = resolved.telemetry.as_ref().map(|t| crate::telemetry::runner_telemetry(server, t));
    let mut oidc_config = resolved.oidc.as_ref().and_then(|o| crate::oidc::token_validation(server, o));
    let embedded_auth_server_config = resolved.auth_server.as_ref().zip(oidc_config.as_mut()).map(|(config, validation)| {
        let runner = crate::authserver::runner_config(config, &validation.resource_url, validation.scopes.as_deref().unwrap_or_default());
        // The scopes the proxy advertises: those the server offers.
        validation.scopes.get_or_insert_with(|| crate::authserver::DEFAULT_SCOPES.map(String::from).to_vec());
        runner
    });
    let token_exchange_config = resolved.external_auth.as_ref().and_then(crate::externalauth::token_exchange);
    let (validating_webhooks, mutating_webhooks) =
        resolved.webhooks.as_ref().map(crate::webhookconfig::runner_webhooks).unwrap_or_default();
    let authz_config = match (&spec.authz_config, &resolved.authz) {
        (Some(inline), _) => crate::authz::from_inline(inline),
        (None, Some(shared)) => Some(crate::authz::from_shared(shared)),
        (None, None) => None,
    };
    let mut rc = RunConfig {
        schema_version: RUNCONFIG_SCHEMA_VERSION,
        name: name.to_string(),
        // MCPServer names are DNS labels: safe as they are for the runner's names.
        container_name: name.to_string(),
        base_name: name.to_string(),
        image: spec.image.clone(),
        transport,
        host: settings.host.clone(),
        port: server.proxy_port(),
        target_port,
        proxy_mode: effective_proxy_mode(server).as_str(),
        container_labels,
        k8s_pod_template_patch: pod_template_patch(server).to_string(),
        mcpserver_generation: server.metadata.generation,
        cmd_args: spec.args.clone(),
        env_vars,
        permission_profile_name_or_path: permission_profile,
        permission_profile: resolved_profile,
        trust_proxy_headers: spec.trust_proxy_headers,
        endpoint_prefix: spec.endpoint_prefix.clone(),
        middleware_configs: Vec::new(),
        validating_webhooks,
        mutating_webhooks,
        token_exchange_config,
        embedded_auth_server_config,
        authz_config,
        authz_config_path: crate::authz::policy_configmap(server).map(|_| crate::authz::POLICY_FILE.to_string()).unwrap_or_default(),
        telemetry_config,
        thv_ca_bundle: oidc_config.as_ref().map(|o| o.ca_cert_path.clone()).unwrap_or_default(),
        jwks_auth_token_file: oidc_config.as_ref().map(|o| o.auth_token_file.clone()).unwrap_or_default(),
        oidc_config,
        tools_filter: resolved.tools.as_ref().map(|t| t.tools_filter.clone()).unwrap_or_default(),
        tools_override: resolved
            .tools
            .iter()
            .flat_map(|t| &t.tools_override)
            .map(|(k, o)| (k.clone(), ToolRename { name: o.name.clone(), description: o.description.clone() }))
            .collect(),
        audit_config,
        rate_limit_config: spec.rate_limiting.as_ref().map(crate::ratelimit::RateLimitConfig::for_runner),
        rate_limit_namespace: spec.rate_limiting.as_ref().and(server.metadata.namespace.clone()),
        scaling_config: match (spec.backend_replicas, session_redis(spec, settings)) {
            (None, None) => None,
            (backend_replicas, session_redis) => Some(ScalingConfig { backend_replicas, session_redis }),
        },
    };
    rc.middleware_configs = middleware_configs(&rc);
    rc
}

fn profile_key(profile: &crate::api::PermissionProfileRef) -> String {
    if profile.key.is_empty() { "permissions.json".into() } else { profile.key.clone() }
}

/// A short, stable digest of a serializable value (its JSON text).
pub fn hash_of(value: &impl Serialize) -> String {
    let text = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&text).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Drops what the operator's caches never read, so a thousand servers cost little
/// memory: managedFields (often larger than the rest of the metadata) and every
/// annotation not in `keep`.
pub fn slim_metadata(meta: &mut ObjectMeta, keep: &[&str]) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| keep.contains(&k.as_str()));
    }
}

pub fn applied_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(SPEC_HASH_ANNOTATION).map(String::as_str)
}

/// Runs `$body` with `$object` bound to the typed object of a [`Child`], whatever its
/// kind: one place that lists the kinds for every operation generic over them.
macro_rules! each_kind {
    ($child:expr, $object:ident => $body:expr) => {
        match $child {
            $crate::resources::Child::ConfigMap($object) => $body,
            $crate::resources::Child::ServiceAccount($object) => $body,
            $crate::resources::Child::Role($object) => $body,
            $crate::resources::Child::RoleBinding($object) => $body,
            $crate::resources::Child::Deployment($object) => $body,
            $crate::resources::Child::Service($object) => $body,
        }
    };
}
pub(crate) use each_kind;

/// One object the operator keeps for an MCPServer, typed by kind.
// Seven of these live for one reconcile: their sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    ConfigMap(ConfigMap),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    Deployment(Deployment),
    Service(Service),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        fn kind_of<K: k8s_openapi::Resource>(_: &K) -> &'static str {
            K::KIND
        }
        each_kind!(self, o => kind_of(o))
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, o => &o.metadata)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The hash stamped on this child: what the operator applied.
    pub fn hash(&self) -> &str {
        applied_hash(self.meta()).unwrap_or_default()
    }

    /// The object's API resource and its apply body, for a client that is not typed.
    pub fn dynamic(&self) -> (kube::core::ApiResource, Value) {
        use kube::core::ApiResource;
        fn erased<K: Resource<DynamicType = ()> + Serialize>(o: &K) -> (ApiResource, Value) {
            (ApiResource::erase::<K>(&()), serde_json::to_value(o).unwrap_or_default())
        }
        each_kind!(self, o => erased(o))
    }

    fn body_hash(&self) -> String {
        each_kind!(self, o => hash_of(o))
    }

    /// Stamps the hash of the content into the child's annotations.
    fn stamped(mut self) -> Self {
        let hash = self.body_hash();
        self.meta_mut().annotations.get_or_insert_with(BTreeMap::new).insert(SPEC_HASH_ANNOTATION.into(), hash);
        self
    }
}

/// Every child the MCPServer should have, in apply order. None when the server has
/// no uid yet (it has not been stored, so nothing can be owned by it).
pub fn desired_children(server: &MCPServer, settings: &ProxySettings, resolved: &Resolved) -> Option<Vec<Child>> {
    // Foreground deletion of the MCPServer waits for its children, as the reference's do.
    let owner = OwnerReference { block_owner_deletion: Some(true), ..server.controller_owner_ref(&())? };
    let base = Base { server, owner, settings, runconfig: runconfig(server, settings, resolved), resolved };
    let mut out = vec![
        Child::ConfigMap(base.runconfig_configmap()),
        Child::ServiceAccount(base.proxy_service_account()),
        Child::Role(base.proxy_role()),
        Child::RoleBinding(base.proxy_role_binding()),
    ];
    if server.spec.service_account.as_deref().is_none_or(str::is_empty) {
        out.push(Child::ServiceAccount(base.mcp_service_account()));
    }
    out.push(Child::Deployment(base.proxy_deployment()));
    out.push(Child::Service(base.proxy_service()));
    Some(out.into_iter().map(Child::stamped).collect())
}

/// What the builders share: the server and the owner reference every child carries.
struct Base<'a> {
    server: &'a MCPServer,
    owner: OwnerReference,
    settings: &'a ProxySettings,
    /// Built once: the ConfigMap carries it, the Deployment its hash and pod patch.
    runconfig: RunConfig,
    resolved: &'a Resolved,
}

fn server_name(server: &MCPServer) -> &str {
    server.metadata.name.as_deref().unwrap_or_default()
}

fn names(server: &MCPServer) -> ChildNames {
    ChildNames::for_server(server_name(server))
}

/// What the proxy runner needs to run the MCP server: its StatefulSet and Services,
/// to watch its pods, attach to stdio and read logs, and read its RunConfig.
pub fn proxy_role_rules() -> Vec<PolicyRule> {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let manage = ["create", "delete", "get", "list", "patch", "update", "watch"];
    vec![
        rule("apps", "statefulsets", &manage),
        rule("", "services", &manage),
        rule("", "pods", &["get", "list", "watch"]),
        rule("", "pods/log", &["get"]),
        rule("", "pods/attach", &["create", "get"]),
        rule("", "configmaps", &["get", "list", "watch"]),
    ]
}

/// The proxy's replicas: none at all while the spec asks for something this operator
/// does not implement (an object stored before it was refused at admission), so it
/// never serves without, say, the authentication it asked for.
pub fn proxy_replicas(server: &MCPServer, unresolved: bool) -> Option<i32> {
    if server.spec.unsupported_fields().is_empty() && !unresolved { server.spec.replicas } else { Some(0) }
}

fn quantities(list: &crate::api::ResourceList) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = [("cpu", &list.cpu), ("memory", &list.memory)]
        .into_iter()
        .filter(|(_, q)| !q.is_empty())
        .map(|(k, q)| (k.to_string(), Quantity(q.clone())))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn non_empty<K, V>(map: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

impl Base<'_> {
    /// Name, namespace, labels (+ extra), annotations and owner of a child.
    fn metadata(&self, name: &str, extra_labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> ObjectMeta {
        let mut all_labels = labels(server_name(self.server));
        all_labels.extend(extra_labels.clone());
        ObjectMeta {
            name: Some(name.into()),
            namespace: self.server.metadata.namespace.clone(),
            labels: Some(all_labels),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    fn plain_metadata(&self, name: &str) -> ObjectMeta {
        self.metadata(name, &BTreeMap::new(), &BTreeMap::new())
    }

    fn runconfig_configmap(&self) -> ConfigMap {
        let text = serde_json::to_string_pretty(&self.runconfig).unwrap_or_default();
        // The reference's RunConfig labels too, for whoever selects by them.
        let extra = BTreeMap::from([
            ("toolhive.stacklok.io/component".to_string(), "run-config".to_string()),
            ("toolhive.stacklok.io/managed-by".to_string(), "toolhive-operator".to_string()),
            ("toolhive.stacklok.io/mcp-server".to_string(), server_name(self.server).to_string()),
        ]);
        ConfigMap {
            metadata: self.metadata(&names(self.server).runconfig, &extra, &BTreeMap::new()),
            data: Some(BTreeMap::from([(RUNCONFIG_KEY.to_string(), text)])),
            ..Default::default()
        }
    }

    fn image_pull_secrets(&self) -> Option<Vec<LocalObjectReference>> {
        let overrides = self.server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_deployment.as_ref())?;
        let secrets: Vec<LocalObjectReference> =
            overrides.image_pull_secrets.iter().map(|s| LocalObjectReference { name: s.name.clone() }).collect();
        (!secrets.is_empty()).then_some(secrets)
    }

    fn proxy_service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.plain_metadata(&names(self.server).proxy_runner),
            image_pull_secrets: self.image_pull_secrets(),
            ..Default::default()
        }
    }

    fn mcp_service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.plain_metadata(&names(self.server).mcp_service_account), ..Default::default() }
    }

    fn proxy_role(&self) -> Role {
        Role { metadata: self.plain_metadata(&names(self.server).proxy_runner), rules: Some(proxy_role_rules()) }
    }

    fn proxy_role_binding(&self) -> RoleBinding {
        let name = names(self.server).proxy_runner;
        RoleBinding {
            metadata: self.plain_metadata(&name),
            role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name: name.clone() },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name,
                namespace: self.server.metadata.namespace.clone(),
                ..Default::default()
            }]),
        }
    }

    fn proxy_deployment(&self) -> Deployment {
        let server = self.server;
        let name = server_name(server);
        let names = names(server);
        let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_deployment.as_ref());
        let (dep_labels, dep_annotations) = overrides.map(|d| (d.labels.clone(), d.annotations.clone())).unwrap_or_default();
        let pod_meta = overrides.and_then(|d| d.pod_template_metadata_overrides.clone()).unwrap_or_default();

        let mut pod_annotations = pod_meta.annotations.clone();
        pod_annotations.insert(RUNCONFIG_HASH_ANNOTATION.into(), hash_of(&self.runconfig));
        // The runner learns which MCPServer generation it runs from its own pod.
        if let Some(generation) = server.metadata.generation {
            pod_annotations.insert(GENERATION_ANNOTATION.into(), generation.to_string());
        }
        if let Some(versions) = &self.resolved.configmap_versions {
            pod_annotations.insert(crate::configmaps::VERSIONS_ANNOTATION.into(), versions.clone());
        }
        if let Some(at) = server.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT_ANNOTATION)) {
            pod_annotations.insert(RESTARTED_AT_ANNOTATION.into(), at.clone());
        }
        let mut pod_labels = labels(name);
        pod_labels.extend(pod_meta.labels.clone());

        let args = vec!["run".to_string(), format!("--k8s-pod-patch={}", self.runconfig.k8s_pod_template_patch), server.spec.image.clone()];

        // Telemetry's first, where the reference puts them.
        let telemetry = self.resolved.telemetry.as_ref();
        let mut env_vars = telemetry.map(|t| crate::telemetry::proxy_env(server, t)).unwrap_or_default();
        env_vars.extend([
            env("XDG_CONFIG_HOME", "/tmp"),
            env("HOME", "/tmp"),
            env("TOOLHIVE_RUNTIME", "kubernetes"),
            env("UNSTRUCTURED_LOGS", "false"),
        ]);
        env_vars.extend(self.resolved.oidc.as_ref().and_then(crate::oidc::proxy_env));
        env_vars.extend(self.resolved.external_auth.as_ref().and_then(crate::externalauth::proxy_env));
        env_vars.extend(self.resolved.auth_server.iter().flat_map(crate::authserver::proxy_env));
        env_vars.push(EnvVar {
            name: "THV_MCPSERVER_GENERATION".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{GENERATION_ANNOTATION}']"),
                    api_version: Some("v1".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        env_vars.extend(overrides.into_iter().flat_map(|d| d.env.iter()).map(|e| env(&e.name, &e.value)));
        // After the overrides, and in their place: the password comes from its Secret.
        if let Some(password) = redis_password_env(&server.spec) {
            env_vars.retain(|e| e.name != password.name);
            env_vars.push(password);
        }

        let mut volumes = vec![Volume {
            name: "runconfig".into(),
            config_map: Some(ConfigMapVolumeSource { name: names.runconfig.clone(), ..Default::default() }),
            ..Default::default()
        }];
        let mut mounts = vec![VolumeMount {
            name: "runconfig".into(),
            mount_path: RUNCONFIG_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        }];
        if let Some(profile) = &server.spec.permission_profile
            && profile.profile_type == PermissionProfileType::ConfigMap
        {
            let key = profile_key(profile);
            volumes.push(Volume {
                name: "permission-profile".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: profile.name.clone(),
                    items: Some(vec![KeyToPath { key: key.clone(), path: key, ..Default::default() }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "permission-profile".into(),
                mount_path: PROFILE_MOUNT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let oidc_bundle = self.resolved.oidc.as_ref().and_then(crate::oidc::ca_bundle_volume);
        let webhook_secrets = self.resolved.webhooks.iter().flat_map(crate::webhookconfig::secret_volumes);
        let policies = crate::authz::policy_configmap(server).map(crate::authz::policy_volume);
        let auth_server_keys = self.resolved.auth_server.iter().flat_map(crate::authserver::secret_volumes);
        let extra = oidc_bundle
            .into_iter()
            .chain(telemetry.and_then(crate::telemetry::ca_bundle_volume))
            .chain(webhook_secrets)
            .chain(policies)
            .chain(auth_server_keys);
        for (volume, mount) in extra {
            volumes.push(volume);
            mounts.push(mount);
        }

        // A slow first start (the runner creates the MCP server's StatefulSet and waits
        // for it) gets 90 s from the startup probe before liveness counts.
        let health =
            |initial_delay_seconds: Option<i32>, period_seconds: i32, timeout_seconds: i32, failure_threshold: Option<i32>| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".into()),
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                initial_delay_seconds,
                period_seconds: Some(period_seconds),
                timeout_seconds: Some(timeout_seconds),
                failure_threshold,
                ..Default::default()
            };
        let resources = &server.spec.resources;
        let container = Container {
            name: PROXY_CONTAINER.into(),
            image: Some(self.settings.runner_image.clone()),
            args: Some(args),
            env: Some(env_vars),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: server.proxy_port(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            volume_mounts: Some(mounts),
            startup_probe: Some(health(None, 5, 3, Some(18))),
            readiness_probe: Some(health(Some(5), 5, 3, None)),
            liveness_probe: Some(health(Some(30), 10, 5, None)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                ..Default::default()
            }),
            resources: (!resources.is_empty()).then(|| ResourceRequirements {
                limits: quantities(&resources.limits),
                requests: quantities(&resources.requests),
                ..Default::default()
            }),
            ..Default::default()
        };
        let selector =
            BTreeMap::from([("app".to_string(), "mcpserver".to_string()), ("app.kubernetes.io/instance".to_string(), name.to_string())]);
        Deployment {
            metadata: self.metadata(&names.deployment, &dep_labels, &dep_annotations),
            spec: Some(DeploymentSpec {
                replicas: proxy_replicas(server, self.resolved.unresolved),
                selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..Default::default() }),
                    spec: Some(PodSpec {
                        service_account_name: Some(names.proxy_runner.clone()),
                        containers: vec![container],
                        volumes: Some(volumes),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                            // The authorization server's keys are mounted owner-read-only;
                            // the runner, whatever user its image runs as, reads them as a
                            // member of this group (kubelet gives the group read access).
                            fs_group: self.resolved.auth_server.as_ref().map(|_| crate::authserver::KEYS_GROUP),
                            ..Default::default()
                        }),
                        image_pull_secrets: self.image_pull_secrets(),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn proxy_service(&self) -> Service {
        let server = self.server;
        let name = server_name(server);
        let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_service.clone()).unwrap_or_default();
        let affinity = match server.spec.session_affinity {
            SessionAffinity::ClientIP => "ClientIP",
            SessionAffinity::None => "None",
        };
        let selector =
            BTreeMap::from([("app".to_string(), "mcpserver".to_string()), ("app.kubernetes.io/instance".to_string(), name.to_string())]);
        Service {
            metadata: self.metadata(&names(server).service, &overrides.labels, &overrides.annotations),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: non_empty(selector),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: server.proxy_port(),
                    target_port: Some(IntOrString::Int(server.proxy_port())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                session_affinity: Some(affinity.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MCPServerSpec;

    pub(crate) fn server(spec: Value) -> MCPServer {
        let mut s: MCPServer = serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": "osv", "namespace": "team-a", "uid": "uid-1", "generation": 3},
            "spec": spec,
        }))
        .unwrap();
        s.status = None;
        s
    }

    fn children(s: &MCPServer) -> Vec<Child> {
        desired_children(s, &ProxySettings::new("runner:1"), &Resolved::default()).unwrap()
    }

    /// The proxy Deployment as JSON, as it is applied.
    fn deployment(s: &MCPServer) -> Value {
        let d = children(s).into_iter().find_map(|c| if let Child::Deployment(d) = c { Some(d) } else { None }).unwrap();
        serde_json::to_value(d).unwrap()
    }

    fn osv() -> MCPServer {
        server(json!({"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http",
                      "mcpPort": 8080, "proxyPort": 8080}))
    }

    #[test]
    fn child_names_follow_the_compat_table() {
        let n = ChildNames::for_server("osv");
        assert_eq!(n.runconfig, "osv-runconfig");
        assert_eq!(n.proxy_runner, "osv-proxy-runner");
        assert_eq!(n.mcp_service_account, "osv-sa");
        assert_eq!(n.deployment, "osv");
        assert_eq!(n.service, "mcp-osv-proxy");
    }

    #[test]
    fn url_depends_on_transport_and_port() {
        assert_eq!(service_url(&osv()), "http://mcp-osv-proxy.team-a.svc.cluster.local:8080/mcp");
        let sse = server(json!({"image": "x", "transport": "sse", "proxyPort": 9000}));
        assert_eq!(service_url(&sse), "http://mcp-osv-proxy.team-a.svc.cluster.local:9000/sse#osv");
        let stdio = server(json!({"image": "x", "proxyMode": "sse"}));
        assert_eq!(service_url(&stdio), "http://mcp-osv-proxy.team-a.svc.cluster.local:8080/sse#osv");
    }

    #[test]
    fn runconfig_carries_what_the_runner_reads() {
        let s = server(json!({"image": "img", "transport": "streamable-http", "proxyPort": 8081, "mcpPort": 9090,
            "args": ["--a"], "env": [{"name": "K", "value": "V"}],
            "secrets": [{"name": "s", "key": "token"}, {"name": "s2", "key": "k", "targetEnvName": "T"}],
            "permissionProfile": {"type": "builtin", "name": "network"}}));
        let rc = serde_json::to_value(runconfig(&s, &ProxySettings::new("runner:1"), &Resolved::default())).unwrap();
        assert_eq!(rc["schema_version"], "v0.1.0");
        assert_eq!(rc["name"], "osv");
        assert_eq!(rc["image"], "img");
        assert_eq!(rc["transport"], "streamable-http");
        assert_eq!(rc["port"], 8081);
        assert_eq!(rc["target_port"], 9090);
        assert_eq!(rc["cmd_args"], json!(["--a"]));
        assert_eq!(rc["env_vars"], json!({"K": "V", "MCP_TRANSPORT": "streamable-http", "MCP_PORT": "9090", "FASTMCP_PORT": "9090"}));
        assert_eq!((&rc["container_name"], &rc["base_name"]), (&json!("osv"), &json!("osv")), "the runner needs both");
        assert_eq!(rc["container_labels"]["toolhive-basename"], "osv");
        assert_eq!(rc["container_labels"]["toolhive-transport"], "streamable-http");
        assert_eq!(rc["container_labels"]["toolhive-port"], "8081");
        assert!(rc.get("secrets").is_none(), "the runner reads no Secret");
        let chain: Vec<&str> = rc["middleware_configs"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(chain, ["bodylimit", "auth", "mcp-parser", "recovery"]);
        let audited = server(json!({"image": "img", "audit": {"enabled": true}}));
        let rc_audit = serde_json::to_value(runconfig(&audited, &ProxySettings::new("r"), &Resolved::default())).unwrap();
        assert_eq!(rc_audit["middleware_configs"][1]["type"], "audit");
        assert_eq!(
            rc_audit["middleware_configs"][1]["parameters"]["config_data"],
            json!({"detectApplicationErrors": true, "maxDataSize": 1024})
        );
        let patch = pod_template_patch(&s);
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "mcp", "env": [
                {"name": "token", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}]}]),
            "secrets reach the MCP container from secretKeyRef"
        );
        assert_eq!(rc["container_labels"].as_object().unwrap().len(), 5, "toolhive labels only: {}", rc["container_labels"]);
        assert_eq!(rc["permission_profile_name_or_path"], "network");
        assert_eq!(
            rc["permission_profile"],
            json!({"name": "network", "network": {"outbound": {"insecure_allow_all": true}, "inbound": {}}})
        );
        let none = server(json!({"image": "img", "permissionProfile": {"type": "builtin", "name": "none"}}));
        assert_eq!(
            serde_json::to_value(runconfig(&none, &ProxySettings::new("r"), &Resolved::default())).unwrap()["permission_profile"],
            json!({"name": "none", "network": {"outbound": {}, "inbound": {}}})
        );
        let unset =
            serde_json::to_value(runconfig(&server(json!({"image": "img"})), &ProxySettings::new("r"), &Resolved::default())).unwrap();
        assert_eq!(unset["permission_profile"]["name"], "network", "the runner's default, written out");
        let from_configmap =
            server(json!({"image": "img", "permissionProfile": {"type": "configmap", "name": "profiles", "key": "p.json"}}));
        let rc_cm = serde_json::to_value(runconfig(&from_configmap, &ProxySettings::new("r"), &Resolved::default())).unwrap();
        assert!(rc_cm.get("permission_profile").is_none(), "read by the runner from its mount");
        assert_eq!(rc_cm["permission_profile_name_or_path"], "/etc/toolhive/profiles/p.json");
        assert_eq!(rc["proxy_mode"], "streamable-http");
        assert_eq!(rc["mcpserver_generation"], 3);
        assert_eq!(rc["host"], "0.0.0.0");
        let elsewhere = ProxySettings { host: "127.0.0.1".into(), ..ProxySettings::new("r") };
        assert_eq!(runconfig(&s, &elsewhere, &Resolved::default()).host, "127.0.0.1", "TOOLHIVE_PROXY_HOST reaches the runner");
        let patch = pod_template_patch(&s);
        assert_eq!(patch["spec"]["serviceAccountName"], "osv-sa");
    }

    #[test]
    fn redis_sessions_and_rate_limits_reach_the_runner_and_the_password_only_by_reference() {
        let s = server(json!({"image": "img", "transport": "streamable-http", "backendReplicas": 2,
            "sessionStorage": {"provider": "redis", "address": "redis.team-a:6379", "db": 2, "keyPrefix": "thv:",
                               "passwordRef": {"name": "redis", "key": "password"}},
            "rateLimiting": {"shared": {"maxTokens": 100, "refillPeriod": "60s"},
                             "tools": [{"name": "search", "shared": {"maxTokens": 5, "refillPeriod": "10s"}}]},
            "resourceOverrides": {"proxyDeployment": {"env": [{"name": "THV_SESSION_REDIS_PASSWORD", "value": "plain"}]}}}));
        let rc = serde_json::to_value(runconfig(&s, &ProxySettings::new("r"), &Resolved::default())).unwrap();
        assert_eq!(
            rc["scaling_config"],
            json!({"backend_replicas": 2, "session_redis": {"address": "redis.team-a:6379", "db": 2, "key_prefix": "thv:"}})
        );
        assert_eq!(rc["rate_limit_config"]["shared"]["refillPeriod"], "1m0s", "as Go prints it");
        assert_eq!(rc["rate_limit_namespace"], "team-a");
        let chain = rc["middleware_configs"].as_array().unwrap();
        let kinds: Vec<&str> = chain.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["bodylimit", "auth", "mcp-parser", "ratelimit", "recovery"]);
        assert_eq!(
            chain[3]["parameters"],
            json!({"namespace": "team-a", "server_name": "osv", "config": rc["rate_limit_config"],
                   "redis_addr": "redis.team-a:6379", "redis_db": 2})
        );
        assert!(!rc.to_string().contains("password"), "no password in the RunConfig: {rc}");
        let env = &deployment(&s)["spec"]["template"]["spec"]["containers"][0]["env"];
        let passwords: Vec<&Value> = env.as_array().unwrap().iter().filter(|e| e["name"] == "THV_SESSION_REDIS_PASSWORD").collect();
        assert_eq!(
            passwords,
            [&json!({"name": "THV_SESSION_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}})],
            "from the Secret, and in place of a plain override"
        );
        let platform = ProxySettings { default_redis: Some("redis.platform:6379".into()), ..ProxySettings::new("r") };
        let memory = server(json!({"image": "img", "sessionStorage": {"provider": "memory"}}));
        let rc_memory = serde_json::to_value(runconfig(&memory, &platform, &Resolved::default())).unwrap();
        assert!(rc_memory.get("scaling_config").is_none(), "memory sessions, as asked, even with a platform Redis: {rc_memory}");
        let unset = serde_json::to_value(runconfig(&server(json!({"image": "img"})), &platform, &Resolved::default())).unwrap();
        assert_eq!(unset["scaling_config"], json!({"session_redis": {"address": "redis.platform:6379"}}), "the platform's default");
        let own = serde_json::to_value(runconfig(&s, &platform, &Resolved::default())).unwrap();
        assert_eq!(own["scaling_config"]["session_redis"]["address"], "redis.team-a:6379", "the server's own Redis first");
    }

    #[test]
    fn policies_in_a_configmap_are_mounted_for_the_runner_and_their_edits_roll_the_proxy() {
        let s =
            server(json!({"image": "img", "authzConfig": {"type": "configMap", "configMap": {"name": "policies", "key": "cedar.json"}}}));
        let resolved = Resolved { configmap_versions: Some("policies=41".into()), ..Default::default() };
        let rc = serde_json::to_value(runconfig(&s, &ProxySettings::new("r"), &resolved)).unwrap();
        assert!(rc.get("authz_config").is_none(), "the operator never reads the policies: {rc}");
        assert_eq!(rc["authz_config_path"], "/etc/toolhive/authz/authz.json");
        let chain = rc["middleware_configs"].as_array().unwrap();
        let step = chain.iter().find(|m| m["type"] == "authorization").expect("an authorization step");
        assert_eq!(step["parameters"], json!({"config_path": "/etc/toolhive/authz/authz.json"}));
        let d = desired_children(&s, &ProxySettings::new("r"), &resolved).unwrap();
        let d = d.into_iter().find_map(|c| if let Child::Deployment(d) = c { Some(d) } else { None }).unwrap();
        let d = serde_json::to_value(d).unwrap();
        let pod = &d["spec"]["template"];
        assert_eq!(pod["metadata"]["annotations"][crate::configmaps::VERSIONS_ANNOTATION], "policies=41");
        let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "authz-config").unwrap();
        assert_eq!(volume["configMap"], json!({"name": "policies", "items": [{"key": "cedar.json", "path": "authz.json"}]}));
        let mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(mounts.contains(&json!({"name": "authz-config", "mountPath": "/etc/toolhive/authz", "readOnly": true})), "{mounts:?}");
        let inline = server(
            json!({"image": "img", "authzConfig": {"type": "inline", "inline": {"policies": ["permit(principal, action, resource);"]}}}),
        );
        let rc_inline = serde_json::to_value(runconfig(&inline, &ProxySettings::new("r"), &Resolved::default())).unwrap();
        assert!(rc_inline.get("authz_config_path").is_none() && rc_inline["authz_config"]["cedar"]["policies"][0].is_string());
    }

    #[test]
    fn stdio_server_is_told_no_port_and_uses_custom_service_account() {
        let s = server(json!({"image": "img", "serviceAccount": "mine"}));
        let rc = serde_json::to_value(runconfig(&s, &ProxySettings::new("runner:1"), &Resolved::default())).unwrap();
        assert_eq!(rc["target_port"], 8080, "the runner's target, as the reference writes it");
        assert_eq!(rc["env_vars"], json!({"MCP_TRANSPORT": "stdio"}), "a stdio server listens on no port");
        assert_eq!(rc["proxy_mode"], "streamable-http");
        let kinds: Vec<_> = children(&s).iter().map(|c| (c.kind(), c.name().to_string())).collect();
        assert!(!kinds.contains(&("ServiceAccount", "osv-sa".to_string())));
        let patch = pod_template_patch(&s);
        assert_eq!(patch["spec"]["serviceAccountName"], "mine");
    }

    #[test]
    fn children_have_labels_owner_and_hash() {
        let children = children(&osv());
        let kinds: Vec<_> = children.iter().map(|c| (c.kind(), c.name())).collect();
        assert_eq!(
            kinds,
            vec![
                ("ConfigMap", "osv-runconfig"),
                ("ServiceAccount", "osv-proxy-runner"),
                ("Role", "osv-proxy-runner"),
                ("RoleBinding", "osv-proxy-runner"),
                ("ServiceAccount", "osv-sa"),
                ("Deployment", "osv"),
                ("Service", "mcp-osv-proxy"),
            ]
        );
        for c in &children {
            let meta = c.meta();
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["toolhive-name"], "osv");
            assert_eq!(labels["app.kubernetes.io/instance"], "osv");
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("MCPServer", "uid-1", Some(true)));
            assert_eq!(c.hash().len(), 16);
        }
        let mut unsaved = osv();
        unsaved.metadata.uid = None;
        assert!(
            desired_children(&unsaved, &ProxySettings::new("r"), &Resolved::default()).is_none(),
            "nothing can be owned by a server without a uid"
        );
    }

    #[test]
    fn deployment_runs_the_runner_with_the_image_and_restart_annotation() {
        let mut s = osv();
        s.metadata.annotations = Some(BTreeMap::from([(RESTARTED_AT_ANNOTATION.into(), "2026-01-01T00:00:00Z".into())]));
        let d = deployment(&s);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "toolhive");
        assert_eq!(c["image"], "runner:1");
        let patch = r#"--k8s-pod-patch={"metadata":{},"spec":{"containers":[],"serviceAccountName":"osv-sa"}}"#;
        assert_eq!(c["args"], json!(["run", patch, "ghcr.io/stackloklabs/osv-mcp/server"]));
        let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(env.contains(&"TOOLHIVE_RUNTIME") && env.contains(&"THV_MCPSERVER_GENERATION"), "{env:?}");
        assert_eq!(d["spec"]["template"]["metadata"]["annotations"][GENERATION_ANNOTATION], "3");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/runconfig");
        assert_eq!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION], "2026-01-01T00:00:00Z");
        assert!(d["spec"].get("replicas").is_none(), "unset replicas leave scaling to others");
        assert_eq!(d["apiVersion"], "apps/v1", "typed objects carry their kind");
    }

    #[test]
    fn a_spec_asking_for_what_is_not_implemented_gets_no_serving_proxy() {
        let volumes = json!([{"name": "data", "hostPath": "/srv", "mountPath": "/data"}]);
        let s = server(json!({"image": "img", "replicas": 2, "volumes": volumes}));
        assert_eq!(s.spec.unsupported_fields().iter().map(|u| u.field).collect::<Vec<_>>(), vec!["volumes"]);
        assert_eq!(deployment(&s)["spec"]["replicas"], 0, "never serves without what it asked for");
        let status = crate::status::desired_status(
            &s,
            &Default::default(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(status.phase, Some(crate::api::Phase::Failed));
        assert!(status.message.starts_with("spec.volumes (host path mounts) is not supported"), "{}", status.message);
        assert_eq!(deployment(&server(json!({"image": "img", "replicas": 2})))["spec"]["replicas"], 2);
    }

    #[test]
    fn slim_metadata_keeps_only_what_is_read() {
        let mut meta: ObjectMeta = serde_json::from_value(json!({
            "name": "osv",
            "annotations": {SPEC_HASH_ANNOTATION: "abc", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "MCPServer", "name": "osv", "uid": "u"}]
        }))
        .unwrap();
        slim_metadata(&mut meta, &[SPEC_HASH_ANNOTATION]);
        assert!(meta.managed_fields.is_none());
        assert_eq!(meta.annotations.unwrap().into_keys().collect::<Vec<_>>(), vec![SPEC_HASH_ANNOTATION.to_string()]);
        assert_eq!(meta.owner_references.unwrap().len(), 1, "owner references drive reconciles");
    }

    #[test]
    fn hash_changes_with_spec() {
        let a = children(&osv());
        let mut other = osv();
        other.spec = MCPServerSpec { proxy_port: 9999, ..other.spec };
        let b = children(&other);
        assert_ne!(a[0].hash(), b[0].hash());
        assert_eq!(a[0].hash(), children(&osv())[0].hash());
    }

    #[test]
    fn secrets_join_the_mcp_container_of_a_pod_template() {
        let s = server(json!({"image": "img", "secrets": [{"name": "s", "key": "k", "targetEnvName": "K"}],
            "podTemplateSpec": {"spec": {"containers": [{"name": "mcp", "env": [{"name": "A", "value": "1"}]}]}}}));
        let patch = pod_template_patch(&s);
        let env: Vec<&str> =
            patch["spec"]["containers"][0]["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(env, ["A", "K"]);
        assert_eq!(patch["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn pod_template_patch_is_passed_to_the_runner() {
        // The tenant names another account: the patch the runner receives carries the
        // operator's choice, in the flag as in the RunConfig.
        let s = server(
            json!({"image": "img", "podTemplateSpec": {"spec": {"serviceAccountName": "osv-proxy-runner", "containers": [{"name": "mcp"}]}}}),
        );
        let d = deployment(&s);
        let args = d["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap().clone();
        assert_eq!(args.len(), 3);
        let flag: Value = serde_json::from_str(args[1].as_str().unwrap().strip_prefix("--k8s-pod-patch=").unwrap()).unwrap();
        assert_eq!(flag["spec"]["serviceAccountName"], "osv-sa");
        assert_eq!(flag["spec"]["containers"][0]["name"], "mcp");
        let rc = runconfig(&s, &ProxySettings::new("runner:1"), &Resolved::default());
        assert_eq!(serde_json::from_str::<Value>(&rc.k8s_pod_template_patch).unwrap(), flag);
    }
}
