//! The RunConfig: what the proxy runner reads from `/etc/runconfig/runconfig.json`.

use super::*;

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
    /// An MCPRemoteProxy's remote server: the runner forwards to it, running no
    /// MCP server of its own.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_forward: Option<crate::kinds::mcpserver::remote::RunnerHeaderForward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_auth_config: Option<crate::kinds::mcpserver::remote::RunnerRemoteAuth>,
    /// The environment carrying a remote proxy's Secret-backed header values and
    /// bearer token (set on the proxy container, not in runconfig.json).
    #[serde(skip)]
    pub remote_secret_env: Vec<EnvVar>,
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
    pub audit_config: Option<RunnerAudit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_config: Option<crate::kinds::mcpserver::ratelimit::RateLimitConfig>,
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
    pub embedded_auth_server_config: Option<crate::kinds::externalauth::authserver::RunnerAuthServer>,
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
pub(super) fn builtin_profile(name: &str) -> Option<PermissionProfile> {
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

/// The runner's audit settings when `spec.audit.enabled`: the reference's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerAudit {
    pub detect_application_errors: bool,
    pub max_data_size: i64,
}

impl Default for RunnerAudit {
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

/// The Redis password, by reference to its Secret, as the runner reads it: the
/// spec's own, or the platform's for the platform's Redis (see `session_redis`).
pub(super) fn redis_password_env(spec: &MCPServerSpec, settings: &ProxySettings) -> Option<EnvVar> {
    let secret = match &spec.session_storage {
        None => settings.default_redis.as_ref().and(settings.default_redis_password.as_ref())?,
        Some(_) => spec.redis_sessions()?.password_ref.as_ref()?,
    };
    Some(crate::shared::refs::secret_env("THV_SESSION_REDIS_PASSWORD", secret))
}

/// The Redis the proxies keep sessions in: the one the spec names, else (for a spec
/// that names no session storage at all) the platform's default, if any.
pub(super) fn session_redis(spec: &MCPServerSpec, settings: &ProxySettings) -> Option<SessionRedis> {
    if spec.session_storage.is_none() {
        let address = settings.default_redis.clone()?;
        return Some(SessionRedis { address, db: 0, key_prefix: String::new() });
    }
    let storage = spec.redis_sessions()?;
    Some(SessionRedis { address: storage.address.clone(), db: storage.db, key_prefix: storage.key_prefix.clone() })
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
    let audit_config = spec.audit.as_ref().filter(|a| a.enabled).map(|_| RunnerAudit::default());
    let telemetry_config =
        resolved.telemetry.as_ref().map(|t| crate::kinds::telemetry::runner_telemetry(&telemetry_service_name(server), t));
    let mut oidc_config = oidc_validation(server, resolved);
    let embedded_auth_server_config = resolved.auth_server.as_ref().zip(oidc_config.as_mut()).map(|(config, validation)| {
        let runner = crate::kinds::externalauth::authserver::runner_config(
            config,
            &validation.resource_url,
            validation.scopes.as_deref().unwrap_or_default(),
        );
        // The scopes the proxy advertises: those the server offers.
        validation.scopes.get_or_insert_with(|| crate::kinds::externalauth::authserver::DEFAULT_SCOPES.map(String::from).to_vec());
        runner
    });
    let token_exchange_config = resolved.external_auth.as_ref().and_then(crate::kinds::externalauth::token_exchange);
    let (validating_webhooks, mutating_webhooks) =
        resolved.webhooks.as_ref().map(crate::kinds::webhookconfig::runner_webhooks).unwrap_or_default();
    let authz_config = match (&spec.authz_config, &resolved.authz) {
        (Some(inline), _) => crate::kinds::authz::from_inline(inline),
        (None, Some(shared)) => Some(crate::kinds::authz::from_shared(shared)),
        (None, None) => None,
    };
    let mut rc = RunConfig {
        schema_version: RUNCONFIG_SCHEMA_VERSION,
        name: name.to_string(),
        // MCPServer names are DNS labels: safe as they are for the runner's names.
        container_name: name.to_string(),
        base_name: name.to_string(),
        image: spec.image.clone(),
        remote_url: String::new(),
        header_forward: None,
        remote_auth_config: None,
        remote_secret_env: Vec::new(),
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
        authz_config_path: crate::kinds::mcpserver::configmaps::policy_configmap(server)
            .map(|_| crate::kinds::authz::POLICY_FILE.to_string())
            .unwrap_or_default(),
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
        rate_limit_config: spec.rate_limiting.as_ref().map(crate::kinds::mcpserver::ratelimit::RateLimitConfig::for_runner),
        rate_limit_namespace: spec.rate_limiting.as_ref().and(server.metadata.namespace.clone()),
        scaling_config: match (spec.backend_replicas, session_redis(spec, settings)) {
            (None, None) => None,
            (backend_replicas, session_redis) => Some(ScalingConfig { backend_replicas, session_redis }),
        },
    };
    if let Some(remote) = &spec.remote {
        // No MCP server to run: no image, port or environment of one; the runner
        // is told only the transport, as the reference tells it.
        rc.remote_url = remote.url.clone();
        let credentials = crate::kinds::mcpserver::remote::credentials(name, remote, resolved.external_auth.as_ref());
        rc.header_forward = credentials.header_forward;
        rc.remote_auth_config = credentials.remote_auth_config;
        rc.remote_secret_env = credentials.env;
        rc.target_port = None;
        rc.env_vars = BTreeMap::from([("MCP_TRANSPORT".to_string(), transport.to_string())]);
        rc.mcpserver_generation = None;
    }
    rc.middleware_configs = middleware_configs(&rc);
    rc
}

pub(super) fn profile_key(profile: &crate::kinds::mcpserver::api::PermissionProfileRef) -> String {
    if profile.key.is_empty() { "permissions.json".into() } else { profile.key.clone() }
}
