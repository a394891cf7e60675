//! Resolution: what an MCPServer's references come to, from a read-only view of the
//! caches. Pure (no API call, no clock), so each kind's resolution is unit-tested
//! without a cluster.

use kube::runtime::reflector::Store;

use crate::kinds::authz::MCPAuthzConfig;
use crate::kinds::externalauth::MCPExternalAuthConfig;
use crate::kinds::group::MCPGroup;
use crate::kinds::mcpserver::api::MCPServer;
use crate::kinds::mcpserver::group_ref::GroupRefState;
use crate::kinds::mcpserver::references::{self, References};
use crate::kinds::mcpserver::resources::Resolved;
use crate::kinds::oidc::MCPOIDCConfig;
use crate::kinds::telemetry::MCPTelemetryConfig;
use crate::kinds::toolconfig::MCPToolConfig;
use crate::kinds::webhookconfig::MCPWebhookConfig;

/// What resolution reads: the caches, read only.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub groups: &'a Store<MCPGroup>,
    pub tool: &'a Store<MCPToolConfig>,
    pub telemetry: &'a Store<MCPTelemetryConfig>,
    pub oidc: &'a Store<MCPOIDCConfig>,
    pub authz: &'a Store<MCPAuthzConfig>,
    pub webhook: &'a Store<MCPWebhookConfig>,
    pub external_auth: &'a Store<MCPExternalAuthConfig>,
    /// ConfigMap metadata: whether the ConfigMaps a server names exist, their versions.
    pub configmaps: &'a dyn crate::kinds::mcpserver::configmaps::NamedConfigMaps,
}

/// An MCPServer's references, resolved.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The configuration the proxy runs with (`unresolved` when any reference failed).
    pub resolved: Resolved,
    /// A condition per reference, and why any failed.
    pub references: References,
    /// spec.groupRef: the group's name and where it stands.
    pub group_ref: Option<(String, GroupRefState)>,
}

impl Resolution {
    /// Whether every reference resolved: the proxy may serve.
    pub fn complete(&self) -> bool {
        self.references.problems.is_empty()
    }
}

/// Resolves `server` against `view`. A reference that cannot be resolved (missing,
/// invalid, or a spec the webhook would have refused) leaves its problem in
/// `references`, and the proxy is stopped.
pub fn resolve(server: &MCPServer, view: View<'_>) -> Resolution {
    let mut references = References::default();
    let mut resolved = Resolved {
        tools: references::resolve(server, view.tool, &mut references),
        telemetry: references::resolve(server, view.telemetry, &mut references),
        oidc: references::resolve(server, view.oidc, &mut references),
        authz: references::resolve(server, view.authz, &mut references),
        webhooks: references::resolve(server, view.webhook, &mut references),
        external_auth: references::resolve(server, view.external_auth, &mut references),
        configmap_versions: crate::kinds::mcpserver::configmaps::versions(server, view.configmaps, &mut references),
        auth_server: None,
        unresolved: false,
    };
    // A type that authenticates a proxy to a remote server: an MCPRemoteProxy's to
    // carry out, meaningless for an MCPServer's own container (never ignored).
    if server.spec.remote.is_none()
        && let Some(config) = resolved.external_auth.take_if(|c| crate::kinds::externalauth::remote_only(c.auth_type))
    {
        let type_name = config.auth_type.name();
        references.problems.push(crate::shared::problem::Problem::at(
            "spec.externalAuthConfigRef",
            format!(
                "{type_name} authenticates a proxy to a remote MCP server: name it from an MCPRemoteProxy; an MCPServer would ignore it"
            ),
        ));
    }
    resolved.auth_server =
        crate::kinds::mcpserver::authserver::resolve(server, view.external_auth, resolved.external_auth.as_ref(), &mut references);
    if let Some(conflict) = resolved.auth_server.as_ref().and_then(|a| crate::kinds::mcpserver::authserver::conflict(server, a, &resolved))
    {
        references.problems.push(conflict);
    }
    // A spec the admission webhook would have refused (written while it was down, or
    // before it was installed) stops the proxy too: the runner could not start with it.
    references.problems.extend(crate::kinds::mcpserver::ratelimit::invalid(&server.spec).map(|(_, problem)| problem));
    resolved.unresolved = !references.problems.is_empty();
    Resolution { resolved, references, group_ref: crate::kinds::mcpserver::group_ref::state(server, view.groups) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cache::Cache;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PartialObjectMeta;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    /// A store holding `objects` (JSON), as a synced watch would have it.
    fn store<K>(objects: &[Value]) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        Cache::listed(objects.iter().map(|o| serde_json::from_value(o.clone()).unwrap())).store().clone()
    }

    /// Every cache of a scope, empty but for what a test puts in.
    struct Caches {
        groups: Store<MCPGroup>,
        tool: Store<MCPToolConfig>,
        telemetry: Store<MCPTelemetryConfig>,
        oidc: Store<MCPOIDCConfig>,
        authz: Store<MCPAuthzConfig>,
        webhook: Store<MCPWebhookConfig>,
        external_auth: Store<MCPExternalAuthConfig>,
        configmaps: Store<PartialObjectMeta<ConfigMap>>,
    }

    impl Default for Caches {
        fn default() -> Self {
            Self {
                groups: store(&[]),
                tool: store(&[]),
                telemetry: store(&[]),
                oidc: store(&[]),
                authz: store(&[]),
                webhook: store(&[]),
                external_auth: store(&[]),
                configmaps: store(&[]),
            }
        }
    }

    impl Caches {
        fn view(&self) -> View<'_> {
            View {
                groups: &self.groups,
                tool: &self.tool,
                telemetry: &self.telemetry,
                oidc: &self.oidc,
                authz: &self.authz,
                webhook: &self.webhook,
                external_auth: &self.external_auth,
                configmaps: &self.configmaps,
            }
        }
    }

    fn server(spec: Value) -> MCPServer {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "team", "uid": "u1"}, "spec": spec})).unwrap()
    }

    fn object(name: &str, ns: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn condition<'a>(r: &'a Resolution, type_: &str) -> (&'a str, &'a str) {
        let c = r.references.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {:?}", r.references));
        (c.status_str(), c.reason)
    }

    #[test]
    fn a_server_without_references_resolves_to_nothing_and_may_serve() {
        let r = resolve(&server(json!({"image": "i"})), Caches::default().view());
        assert!(r.complete() && !r.resolved.unresolved && r.references.conditions.is_empty() && r.group_ref.is_none());
        assert!(r.resolved.tools.is_none() && r.resolved.oidc.is_none() && r.resolved.configmap_versions.is_none());
    }

    #[test]
    fn tool_config_found_missing_in_another_namespace_and_invalid() {
        let s = server(json!({"image": "i", "toolConfigRef": {"name": "tools"}}));
        let filter = json!({"toolsFilter": ["read_graph"]});
        let mut caches = Caches { tool: store(&[object("tools", "team", filter.clone())]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert!(r.complete());
        assert_eq!(r.resolved.tools.as_ref().unwrap().tools_filter, ["read_graph"]);
        assert_eq!(condition(&r, "ToolConfigRefValidated"), ("True", "ToolConfigRefValid"));

        // Same name in another namespace: never reached across namespaces.
        caches.tool = store(&[object("tools", "other", filter)]);
        let r = resolve(&s, caches.view());
        assert!(!r.complete() && r.resolved.unresolved && r.resolved.tools.is_none());
        assert_eq!(condition(&r, "ToolConfigRefValidated"), ("False", "ToolConfigRefNotFound"));
        assert!(
            r.references.problems[0].to_string().starts_with("spec.toolConfigRef: MCPToolConfig tools not found in namespace team"),
            "{:?}",
            r.references
        );

        // An override that neither renames nor describes is invalid.
        let invalid = json!({"toolsOverride": {"b": {}}});
        caches.tool = store(&[object("tools", "team", invalid)]);
        let r = resolve(&s, caches.view());
        assert!(!r.complete());
        assert_eq!(condition(&r, "ToolConfigRefValidated"), ("False", "ToolConfigRefNotValid"));
        assert!(r.references.problems[0].to_string().contains("spec.toolsOverride[b]"), "{:?}", r.references.problems);
    }

    #[test]
    fn oidc_config_resolves_and_its_absence_stops_the_proxy() {
        let s = server(json!({"image": "i", "oidcConfigRef": {"name": "sso", "audience": "mcp"}}));
        let r = resolve(&s, Caches::default().view());
        assert_eq!(condition(&r, "OIDCConfigRefValidated"), ("False", "OIDCConfigRefNotFound"));
        assert!(r.resolved.unresolved);
        let sso = object("sso", "team", json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {}}));
        let caches = Caches { oidc: store(&[sso]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert!(r.complete(), "{:?}", r.references);
        assert!(r.resolved.oidc.is_some());
        assert_eq!(condition(&r, "OIDCConfigRefValidated"), ("True", "OIDCConfigRefValid"));
    }

    #[test]
    fn external_auth_that_does_nothing_for_an_mcpserver_stops_it_with_the_reason() {
        let s = server(json!({"image": "i", "externalAuthConfigRef": {"name": "hdr"}}));
        let hdr = object(
            "hdr",
            "team",
            json!({"type": "headerInjection", "headerInjection": {"headerName": "X", "valueSecretRef": {"name": "s", "key": "k"}}}),
        );
        let caches = Caches { external_auth: store(&[hdr]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert!(!r.complete() && r.resolved.unresolved && r.resolved.external_auth.is_none());
        assert!(r.references.problems[0].to_string().contains("headerInjection authenticates a proxy"), "{:?}", r.references.problems);
    }

    #[test]
    fn telemetry_authz_and_webhook_configs_resolve_or_stop_the_proxy_with_their_condition() {
        let s = server(json!({"image": "i", "telemetryConfigRef": {"name": "otel"}, "authzConfigRef": {"name": "cedar"},
            "webhookConfigRef": {"name": "hooks"}}));
        let otel =
            object("otel", "team", json!({"openTelemetry": {"enabled": true, "endpoint": "otel:4317", "tracing": {"enabled": true}}}));
        let cedar = object("cedar", "team", json!({"type": "cedarv1", "config": {"policies": ["permit(principal, action, resource);"]}}));
        let hooks = object("hooks", "team", json!({"validating": [{"name": "v", "url": "https://policy.example.com/check"}]}));
        let caches = Caches { telemetry: store(&[otel]), authz: store(&[cedar]), webhook: store(&[hooks]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert!(r.complete(), "{:?}", r.references);
        assert!(r.resolved.telemetry.is_some() && r.resolved.authz.is_some() && r.resolved.webhooks.is_some());
        assert_eq!(condition(&r, "TelemetryConfigRefValidated"), ("True", "TelemetryConfigRefValid"));
        assert_eq!(condition(&r, "AuthzConfigRefValidated"), ("True", "AuthzConfigRefValid"));
        assert_eq!(condition(&r, "WebhookConfigRefValidated"), ("True", "WebhookConfigRefValid"));

        // Each one invalid: its own reason, and every problem is listed.
        let otel = object("otel", "team", json!({"openTelemetry": {"enabled": true, "endpoint": "otel:4317"}}));
        let cedar = object("cedar", "team", json!({"type": "opa", "config": {"x": 1}}));
        let hooks = object("hooks", "team", json!({"validating": [{"name": "v", "url": "http://policy.example.com/check"}]}));
        let caches = Caches { telemetry: store(&[otel]), authz: store(&[cedar]), webhook: store(&[hooks]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert_eq!(r.references.problems.len(), 3, "{:?}", r.references.problems);
        assert_eq!(condition(&r, "TelemetryConfigRefValidated"), ("False", "TelemetryConfigRefInvalid"));
        assert_eq!(condition(&r, "AuthzConfigRefValidated"), ("False", "AuthzConfigRefNotValid"));
        assert_eq!(condition(&r, "WebhookConfigRefValidated"), ("False", "WebhookConfigRefNotValid"));
        let paths: Vec<&str> = r.references.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["spec.telemetryConfigRef", "spec.authzConfigRef", "spec.webhookConfigRef"]);
    }

    #[test]
    fn an_embedded_authorization_server_needs_the_oidc_audience_to_be_the_resource() {
        let s = server(json!({"image": "i", "authServerRef": {"kind": "MCPExternalAuthConfig", "name": "login"},
            "oidcConfigRef": {"name": "sso", "audience": "tools"}}));
        let login = object(
            "login",
            "team",
            json!({"type": "embeddedAuthServer", "embeddedAuthServer": {
            "issuer": "https://mcp.example.com", "upstreamProviders": [{"name": "idp", "type": "oidc",
                "oidcConfig": {"issuerUrl": "https://idp.example.com", "clientId": "tools"}}]}}),
        );
        let sso = object("sso", "team", json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {}}));
        let caches = Caches { external_auth: store(&[login]), oidc: store(&[sso]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert_eq!(condition(&r, "AuthServerRefValidated"), ("True", "AuthServerRefValid"));
        assert!(!r.complete() && r.resolved.unresolved);
        assert_eq!(r.references.problems[0].path, "spec.oidcConfigRef.audience", "{:?}", r.references.problems);
    }

    #[test]
    fn named_configmaps_must_exist_and_their_versions_roll_the_proxy() {
        let s = server(json!({"image": "i", "permissionProfile": {"type": "configmap", "name": "profile", "key": "p.json"}}));
        let r = resolve(&s, Caches::default().view());
        assert!(!r.complete());
        assert!(
            r.references.problems[0].to_string().starts_with("spec.permissionProfile: ConfigMap profile not found"),
            "{:?}",
            r.references.problems
        );
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "profile", "namespace": "team", "resourceVersion": "42"}});
        let caches = Caches { configmaps: store(&[cm]), ..Default::default() };
        let r = resolve(&s, caches.view());
        assert!(r.complete());
        assert_eq!(r.resolved.configmap_versions.as_deref(), Some("profile=42"));
    }

    #[test]
    fn group_reference_states() {
        let s = server(json!({"image": "i", "groupRef": {"name": "g"}}));
        let r = resolve(&s, Caches::default().view());
        assert_eq!(r.group_ref, Some(("g".into(), GroupRefState::NotFound)));
        assert!(r.complete(), "a group changes nothing the proxy runs");
        let pending = object("g", "team", json!({}));
        let r = resolve(&s, Caches { groups: store(&[pending]), ..Default::default() }.view());
        assert_eq!(r.group_ref, Some(("g".into(), GroupRefState::NotReady)));
        let mut ready = object("g", "team", json!({}));
        ready["status"] = json!({"phase": "Ready"});
        let r = resolve(&s, Caches { groups: store(&[ready]), ..Default::default() }.view());
        assert_eq!(r.group_ref, Some(("g".into(), GroupRefState::Valid)));
    }

    #[test]
    fn a_rate_limit_the_runner_cannot_read_stops_the_proxy() {
        let s = server(json!({"image": "i", "sessionStorage": {"provider": "redis", "address": "r:6379"},
            "rateLimiting": {"shared": {"maxTokens": 5, "refillPeriod": "1 day"}}}));
        let r = resolve(&s, Caches::default().view());
        assert!(!r.complete() && r.resolved.unresolved);
        assert!(r.references.problems[0].to_string().contains("refillPeriod"), "{:?}", r.references.problems);
    }
}
