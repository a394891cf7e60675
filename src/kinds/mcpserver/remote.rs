//! MCPRemoteProxy: a remote (or SaaS) MCP server reached through a proxy runner in
//! the cluster, with the authentication, authorization, tool filtering, audit and
//! telemetry an MCPServer gets. It lives beside MCPServer because it is the same
//! workload without the MCP container: the controller projects a proxy onto an
//! MCPServer (`as_server`), resolves and builds children with the MCPServer code,
//! and the builders part ways only where a remote proxy differs (names, labels,
//! runner RBAC, the RunConfig's remote URL and headers).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::{CustomResource, CustomResourceExt, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::{
    AuditConfig, AuthServerRef, AuthzConfig, ContainerResources, DNS_SUBDOMAIN, GroupRef, MCPServer, MCPServerSpec, MCPServerStatus,
    NameRef, OidcConfigRef, Phase, ProxyMode, ResourceOverrides, SessionAffinity, SessionStorageConfig, TelemetryConfigRef, Transport,
};
use crate::kinds::externalauth::MCPExternalAuthConfigSpec;
use crate::kinds::serverentry::HeaderForward;
use crate::shared::refs::SecretKeyRef;
use k8s_openapi::api::core::v1::EnvVar;

/// A remote MCP server proxied inside the cluster.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPRemoteProxy",
    plural = "mcpremoteproxies",
    singular = "mcpremoteproxy",
    shortname = "rp",
    shortname = "mcprp",
    category = "toolhive",
    namespaced,
    status = "MCPRemoteProxyStatus",
    doc = "MCPRemoteProxy proxies a remote MCP server inside the cluster, with the authentication, authorization, tool filtering and telemetry of an MCPServer.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Remote URL", type_ = "string", json_path = ".spec.remoteUrl"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MCPRemoteProxySpec {
    /// URL of the remote MCP server (http or https).
    #[schemars(regex(pattern = r"^https?://"))]
    pub remote_url: String,
    /// Allow a private address or an in-cluster (`*.cluster.local`) name. Loopback,
    /// link-local, metadata and API server endpoints stay refused.
    #[serde(default)]
    pub allow_private_endpoint: bool,
    /// Port the proxy listens on; its Service exposes it as port "http".
    #[serde(default = "default_proxy_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub proxy_port: i32,
    /// How the remote server speaks MCP (and so how clients reach the proxy).
    #[serde(default)]
    pub transport: RemoteTransport,
    /// Reference to a shared MCPOIDCConfig in this namespace. Without any
    /// authentication source the proxy forwards every request that reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_config_ref: Option<OidcConfigRef>,
    /// Reference to an MCPExternalAuthConfig in this namespace: how the proxy
    /// authenticates to the remote server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth_config_ref: Option<NameRef>,
    /// Reference to the resource configuring an embedded OAuth 2.0/OIDC authorization server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_server_ref: Option<AuthServerRef>,
    /// Headers added to each request sent to the remote server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_forward: Option<HeaderForward>,
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
    /// Reference to a shared MCPTelemetryConfig in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_config_ref: Option<TelemetryConfigRef>,
    /// CPU and memory for the proxy container.
    #[serde(default, skip_serializing_if = "ContainerResources::is_empty")]
    pub resources: ContainerResources,
    /// Name of an existing ServiceAccount for the proxy pod. Refused for now: the
    /// proxy runs as the account the operator makes and binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account: Option<String>,
    /// A PodTemplateSpec merged into the proxy pod. Refused for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub pod_template_spec: Option<serde_json::Value>,
    /// Trust X-Forwarded-* headers from a reverse proxy when building endpoint URLs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_proxy_headers: bool,
    /// Path prefix prepended to SSE endpoint URLs (for ingresses that strip a prefix).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_prefix: String,
    /// Extra labels, annotations, environment and pull secrets for the objects the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_overrides: Option<ResourceOverrides>,
    /// Reference to the MCPGroup (same namespace) this proxy belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ref: Option<GroupRef>,
    /// Whether the proxy Service pins a client to one pod (ClientIP) or not (None).
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Replicas of the proxy Deployment; unset leaves scaling to an autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Session storage for horizontally scaled proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_storage: Option<SessionStorageConfig>,
}

fn default_proxy_port() -> i32 {
    super::api::DEFAULT_PROXY_PORT
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RemoteTransport {
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

impl RemoteTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteTransport::StreamableHttp => "streamable-http",
            RemoteTransport::Sse => "sse",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MCPRemoteProxyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Where clients in the cluster reach the proxy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpremoteproxies.yaml";

/// The CRD: v1beta1 (storage) and the deprecated v1alpha1, one schema; authzConfig
/// and authzConfigRef exclude each other.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(MCPRemoteProxy::crd()).expect("crd serializes");
    let spec = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["x-kubernetes-validations"] = json!([{
        "rule": "!(has(self.authzConfig) && has(self.authzConfigRef))",
        "message": "authzConfig and authzConfigRef are mutually exclusive; use authzConfigRef to reference a shared MCPAuthzConfig"
    }]);
    crate::shared::crd::with_deprecated_version(value)
}

/// What makes the projected MCPServer a remote proxy: where it forwards, what it
/// adds to each request, and the MCPRemoteProxy that owns its children.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTarget {
    pub url: String,
    pub header_forward: Option<HeaderForward>,
    pub owner: OwnerReference,
}

/// Fields of an MCPRemoteProxy this operator does not carry out yet: refused at
/// admission, and a stored proxy naming one runs no replica.
pub fn unsupported_fields(spec: &MCPRemoteProxySpec) -> Vec<(&'static str, &'static str)> {
    let set = [spec.service_account.is_some(), spec.pod_template_spec.is_some()];
    UNSUPPORTED_FIELDS.into_iter().zip(set).filter_map(|(field, set)| set.then_some(field)).collect()
}

/// Each field of [`unsupported_fields`], with what the user is told (the webhook
/// refuses the same list).
pub const UNSUPPORTED_FIELDS: [(&str, &str); 2] = [
    ("spec.serviceAccount", "the proxy runs as the ServiceAccount the operator makes for it; remove it"),
    ("spec.podTemplateSpec", "pod templates of remote proxies are not supported by this release; remove it"),
];

/// The MCPServer a proxy is run as: the same references and proxy settings, no MCP
/// container. None before the proxy is stored (no uid to own children by).
pub fn as_server(proxy: &MCPRemoteProxy) -> Option<MCPServer> {
    let owner = OwnerReference { block_owner_deletion: Some(true), ..proxy.controller_owner_ref(&())? };
    let spec = &proxy.spec;
    let transport = match spec.transport {
        RemoteTransport::StreamableHttp => Transport::StreamableHttp,
        RemoteTransport::Sse => Transport::Sse,
    };
    let status = proxy.status.as_ref().map(|s| MCPServerStatus {
        conditions: s.conditions.clone(),
        observed_generation: s.observed_generation,
        url: s.url.clone(),
        phase: s.phase,
        message: s.message.clone(),
        ready_replicas: None,
    });
    Some(MCPServer {
        metadata: proxy.metadata.clone(),
        spec: MCPServerSpec {
            transport,
            proxy_mode: if transport == Transport::Sse { ProxyMode::Sse } else { ProxyMode::StreamableHttp },
            proxy_port: spec.proxy_port,
            resources: spec.resources.clone(),
            resource_overrides: spec.resource_overrides.clone(),
            oidc_config_ref: spec.oidc_config_ref.clone(),
            authz_config: spec.authz_config.clone(),
            authz_config_ref: spec.authz_config_ref.clone(),
            audit: spec.audit.clone(),
            tool_config_ref: spec.tool_config_ref.clone(),
            external_auth_config_ref: spec.external_auth_config_ref.clone(),
            auth_server_ref: spec.auth_server_ref.clone(),
            telemetry_config_ref: spec.telemetry_config_ref.clone(),
            group_ref: spec.group_ref.clone(),
            trust_proxy_headers: spec.trust_proxy_headers,
            endpoint_prefix: spec.endpoint_prefix.clone(),
            session_affinity: spec.session_affinity,
            replicas: spec.replicas,
            session_storage: spec.session_storage.clone(),
            remote: Some(Box::new(RemoteTarget { url: spec.remote_url.clone(), header_forward: spec.header_forward.clone(), owner })),
            ..Default::default()
        },
        status,
    })
}

/// The MCPGroup a proxy names, if any.
pub fn group_of(proxy: &MCPRemoteProxy) -> Option<&str> {
    proxy.spec.group_ref.as_ref().map(|g| g.name.as_str())
}

/// The names of the proxies in `ns` that name `group`, sorted (deleted ones left out).
pub fn members(proxies: &[std::sync::Arc<MCPRemoteProxy>], ns: &str, group: &str) -> Vec<String> {
    crate::kinds::group::members_named(proxies, ns, group, group_of)
}

/// The status an MCPRemoteProxy shows for the status its projection would have.
pub fn proxy_status(status: MCPServerStatus) -> MCPRemoteProxyStatus {
    MCPRemoteProxyStatus {
        phase: status.phase,
        url: status.url,
        observed_generation: status.observed_generation,
        conditions: status.conditions,
        message: status.message,
    }
}

/// The environment variable (and the runner's secret name) carrying a header value
/// from a Secret: upper case, `-` and anything else not alphanumeric as `_`.
pub fn header_secret_names(owner: &str, header: &str) -> (String, String) {
    let normalize = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect::<String>();
    let identifier = format!("HEADER_FORWARD_{}_{}", normalize(header), normalize(owner));
    (format!("TOOLHIVE_SECRET_{identifier}"), identifier)
}

/// How a remote proxy authenticates to its remote server and what it adds to each
/// request, as the runner reads it; Secret values reach the runner as environment
/// the kubelet sets (the runner's environment secrets provider reads them), so
/// neither the operator nor the runner reads a Secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteCredentials {
    pub header_forward: Option<RunnerHeaderForward>,
    pub remote_auth_config: Option<RunnerRemoteAuth>,
    pub env: Vec<k8s_openapi::api::core::v1::EnvVar>,
}

/// `remote_auth_config` in the RunConfig: the bearer token, as a secret reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerRemoteAuth {
    pub bearer_token: String,
}

/// `owner`'s headers (spec.headerForward, and an external auth config of type
/// headerInjection) and bearer token (of type bearerToken).
pub fn credentials(owner: &str, remote: &RemoteTarget, external: Option<&MCPExternalAuthConfigSpec>) -> RemoteCredentials {
    let forward = remote.header_forward.clone().unwrap_or_default();
    let mut from_secrets: Vec<(String, SecretKeyRef)> =
        forward.add_headers_from_secret.iter().map(|h| (h.header_name.clone(), h.value_secret_ref.clone())).collect();
    let external = external.filter(|e| crate::kinds::externalauth::remote_only(e.auth_type));
    if let Some(injected) = external.and_then(|e| e.header_injection.as_ref()) {
        from_secrets.retain(|(header, _)| !header.eq_ignore_ascii_case(&injected.header_name));
        from_secrets.push((injected.header_name.clone(), injected.value_secret_ref.clone()));
    }
    let mut env: Vec<EnvVar> = Vec::new();
    let mut add_headers_from_secret = BTreeMap::new();
    for (header, secret) in from_secrets {
        let (var, identifier) = header_secret_names(owner, &header);
        env.push(crate::shared::refs::secret_env(&var, &secret));
        add_headers_from_secret.insert(header, identifier);
    }
    let bearer = external.and_then(|e| e.bearer_token.as_ref()).map(|b| &b.token_secret_ref);
    let remote_auth_config = bearer.map(|secret| {
        env.push(crate::shared::refs::secret_env(format!("TOOLHIVE_SECRET_{}", secret.name), secret));
        RunnerRemoteAuth { bearer_token: format!("{},target=bearer_token", secret.name) }
    });
    if !env.is_empty() {
        env.insert(0, EnvVar { name: "TOOLHIVE_SECRETS_PROVIDER".into(), value: Some("environment".into()), ..Default::default() });
    }
    let headers = RunnerHeaderForward { add_plaintext_headers: forward.add_plaintext_headers, add_headers_from_secret };
    let has_headers = !headers.add_plaintext_headers.is_empty() || !headers.add_headers_from_secret.is_empty();
    RemoteCredentials { header_forward: has_headers.then_some(headers), remote_auth_config, env }
}

/// `header_forward` in the RunConfig.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerHeaderForward {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add_plaintext_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add_headers_from_secret: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(spec: serde_json::Value) -> MCPRemoteProxy {
        let mut p: MCPRemoteProxy = serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPRemoteProxy",
            "metadata": {"name": "saas", "namespace": "team", "uid": "u-1", "generation": 2},
            "spec": spec
        }))
        .unwrap();
        p.metadata.uid = Some("u-1".into());
        p
    }

    #[test]
    fn a_proxy_projects_onto_a_server_owned_by_the_proxy() {
        let p = proxy(json!({"remoteUrl": "https://mcp.example.com/mcp", "transport": "sse", "proxyPort": 9090,
            "toolConfigRef": {"name": "tools"}, "headerForward": {"addPlaintextHeaders": {"X-Tenant": "a"}}}));
        let s = as_server(&p).unwrap();
        assert_eq!((s.spec.transport, s.spec.proxy_port), (Transport::Sse, 9090));
        assert_eq!(s.spec.tool_config_ref.as_ref().unwrap().name, "tools");
        let remote = s.spec.remote.as_ref().unwrap();
        assert_eq!(remote.url, "https://mcp.example.com/mcp");
        assert_eq!((remote.owner.kind.as_str(), remote.owner.uid.as_str()), ("MCPRemoteProxy", "u-1"));
        assert_eq!(serde_json::to_value(&s.spec).unwrap().get("remote"), None, "the projection is never serialized");
    }

    #[test]
    fn header_secrets_get_environment_names_the_runner_resolves() {
        assert_eq!(
            header_secret_names("my-proxy", "X-API-Key"),
            ("TOOLHIVE_SECRET_HEADER_FORWARD_X_API_KEY_MY_PROXY".into(), "HEADER_FORWARD_X_API_KEY_MY_PROXY".into())
        );
    }

    #[test]
    fn headers_and_bearer_tokens_come_from_secrets_the_kubelet_sets() {
        let p = proxy(json!({"remoteUrl": "https://x", "headerForward": {"addPlaintextHeaders": {"X-Tenant": "a"},
            "addHeadersFromSecret": [{"headerName": "X-Key", "valueSecretRef": {"name": "k", "key": "v"}}]}}));
        let remote = *as_server(&p).unwrap().spec.remote.unwrap();
        let injection: MCPExternalAuthConfigSpec = serde_json::from_value(json!({"type": "headerInjection",
            "headerInjection": {"headerName": "x-key", "valueSecretRef": {"name": "other", "key": "v2"}}}))
        .unwrap();
        let c = credentials("saas", &remote, Some(&injection));
        let headers = c.header_forward.unwrap();
        assert_eq!(headers.add_plaintext_headers["X-Tenant"], "a");
        assert_eq!(headers.add_headers_from_secret.keys().collect::<Vec<_>>(), ["x-key"], "the external auth config's header wins");
        assert_eq!(c.env[0].value.as_deref(), Some("environment"));
        assert_eq!(c.env[1].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "other");

        let bearer: MCPExternalAuthConfigSpec =
            serde_json::from_value(json!({"type": "bearerToken", "bearerToken": {"tokenSecretRef": {"name": "saas-token", "key": "t"}}}))
                .unwrap();
        let c = credentials("saas", &RemoteTarget { header_forward: None, ..remote }, Some(&bearer));
        assert_eq!(c.remote_auth_config.unwrap().bearer_token, "saas-token,target=bearer_token");
        assert_eq!(c.env.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["TOOLHIVE_SECRETS_PROVIDER", "TOOLHIVE_SECRET_saas-token"]);
        assert_eq!(c.header_forward, None);
    }

    #[test]
    fn fields_not_carried_out_are_named() {
        assert!(unsupported_fields(&proxy(json!({"remoteUrl": "https://x"})).spec).is_empty());
        let named = unsupported_fields(&proxy(json!({"remoteUrl": "https://x", "serviceAccount": "sa", "podTemplateSpec": {}})).spec);
        assert_eq!(named.iter().map(|(f, _)| *f).collect::<Vec<_>>(), vec!["spec.serviceAccount", "spec.podTemplateSpec"]);
    }
}
