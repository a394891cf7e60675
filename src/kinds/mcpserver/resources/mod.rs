//! Pure functions that build the objects an MCPServer owns. No I/O here, so every
//! name, label and field is unit-tested directly.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec},
    core::v1::{
        Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
        LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext,
        Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    },
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    util::intstr::IntOrString,
};
use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};

use crate::kinds::authz::MCPAuthzConfigSpec;
use crate::kinds::externalauth::{MCPExternalAuthConfigSpec, RunnerTokenExchange};
use crate::kinds::mcpserver::api::{
    MCPServer, MCPServerSpec, PermissionProfileType, ProxyMode, RESTARTED_AT_ANNOTATION, SessionAffinity, Transport,
};
use crate::kinds::oidc::{MCPOIDCConfigSpec, TokenValidation};
use crate::kinds::telemetry::{MCPTelemetryConfigSpec, RunnerTelemetry};
use crate::kinds::toolconfig::MCPToolConfigSpec;
use crate::kinds::webhookconfig::{MCPWebhookConfigSpec, RunnerWebhook};

mod builders;
pub use builders::restricted_container;
mod middleware;
mod runconfig;

pub use middleware::*;
pub use runconfig::*;

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

    /// An MCPRemoteProxy's: no MCP server, so no account for one.
    pub fn for_remote_proxy(name: &str) -> Self {
        Self {
            runconfig: format!("{name}-runconfig"),
            proxy_runner: format!("{name}-remote-proxy-runner"),
            mcp_service_account: String::new(),
            deployment: name.to_string(),
            service: format!("mcp-{name}-remote-proxy"),
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
    labels_of_app("mcpserver", name)
}

/// The labels of `server`'s children: those of an MCPServer, or of an MCPRemoteProxy
/// for a projected one.
pub fn workload_labels(server: &MCPServer) -> BTreeMap<String, String> {
    labels_of_app(app_name(server), server_name(server))
}

fn app_name(server: &MCPServer) -> &'static str {
    if server.spec.remote.is_some() { "mcpremoteproxy" } else { "mcpserver" }
}

fn labels_of_app(app: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".into(), app.into()),
        ("app.kubernetes.io/name".into(), app.into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("toolhive".into(), "true".into()),
        ("toolhive-name".into(), name.into()),
    ])
}

/// Selector for everything the operator owns (used by its child watches).
pub const MANAGED_SELECTOR: &str = "toolhive=true";
/// The label naming the MCPServer an object (or pod) belongs to.
pub const NAME_LABEL: &str = "toolhive-name";

/// The service name `server`'s telemetry reports: the one its reference gives, else
/// its own name.
pub fn telemetry_service_name(server: &MCPServer) -> String {
    let given = server.spec.telemetry_config_ref.as_ref().map(|r| r.service_name.as_str()).unwrap_or_default();
    if given.is_empty() { server.metadata.name.clone().unwrap_or_default() } else { given.to_string() }
}

/// How `server`'s proxy validates tokens, when its OIDC reference resolved.
pub fn oidc_validation(server: &MCPServer, resolved: &Resolved) -> Option<crate::kinds::oidc::TokenValidation> {
    let reference = server.spec.oidc_config_ref.as_ref()?;
    crate::kinds::oidc::token_validation(reference, &service_base_url(server), resolved.oidc.as_ref()?)
}

/// The proxy Service's address inside the cluster: `http://<service>.<ns>.svc.cluster.local:<port>`.
pub fn service_base_url(server: &MCPServer) -> String {
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    format!("http://{}.{ns}.svc.cluster.local:{}", names(server).service, server.proxy_port())
}

/// Where clients reach the proxy: with the transport's path for an MCPServer; the
/// Service's address alone for an MCPRemoteProxy (as the reference reports it).
pub fn service_url(server: &MCPServer) -> String {
    let name = server.metadata.name.as_deref().unwrap_or_default();
    let base = service_base_url(server);
    if server.spec.remote.is_some() {
        return base;
    }
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

/// What every proxy gets from the operator's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Image of the ToolHive proxy runner.
    pub runner_image: String,
    /// Address the runner listens on (the RunConfig's `host`).
    pub host: String,
    /// The platform's Redis (host:port) for the sessions of servers that name no
    /// session storage of their own.
    pub default_redis: Option<String>,
    /// The Secret key holding that Redis's password (a Secret of that name must be
    /// in each server's namespace).
    pub default_redis_password: Option<crate::shared::refs::SecretKeyRef>,
    /// Pull secrets every proxy gets after its own (spec.resourceOverrides).
    pub default_image_pull_secrets: Vec<String>,
}

impl ProxySettings {
    pub fn new(runner_image: impl Into<String>) -> Self {
        Self {
            runner_image: runner_image.into(),
            host: DEFAULT_PROXY_HOST.into(),
            default_redis: None,
            default_redis_password: None,
            default_image_pull_secrets: Vec::new(),
        }
    }
}

/// Where the proxy runner listens unless the operator is told otherwise.
pub use crate::shared::config::DEFAULT_PROXY_HOST;

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
    pub auth_server: Option<crate::kinds::externalauth::authserver::EmbeddedAuthServer>,
    /// The resourceVersions of the ConfigMaps the server names for its proxy (policies,
    /// permission profile): in the pod template, so an edit of one rolls the proxy.
    pub configmap_versions: Option<String>,
    /// A reference could not be resolved: the proxy runs no replica, so it never
    /// serves without what the reference configures.
    pub unresolved: bool,
}

pub fn applied_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(SPEC_HASH_ANNOTATION).map(String::as_str)
}

/// Runs `$body` with `$object` bound to the typed object of a [`Child`], whatever its
/// kind: one place that lists the kinds for every operation generic over them.
macro_rules! each_kind {
    ($child:expr, $object:ident => $body:expr) => {
        match $child {
            $crate::kinds::mcpserver::resources::Child::ConfigMap($object) => $body,
            $crate::kinds::mcpserver::resources::Child::ServiceAccount($object) => $body,
            $crate::kinds::mcpserver::resources::Child::Role($object) => $body,
            $crate::kinds::mcpserver::resources::Child::RoleBinding($object) => $body,
            $crate::kinds::mcpserver::resources::Child::Deployment($object) => $body,
            $crate::kinds::mcpserver::resources::Child::Service($object) => $body,
            $crate::kinds::mcpserver::resources::Child::StatefulSet($object) => $body,
        }
    };
}
pub(crate) use each_kind;

/// One object the operator keeps for an object of the API, typed by kind.
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
    /// An EmbeddingServer's (an MCPServer's StatefulSet is the proxy runner's).
    StatefulSet(k8s_openapi::api::apps::v1::StatefulSet),
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
        each_kind!(self, o => crate::shared::meta::hash_of(o))
    }

    /// Stamps the hash of the content into the child's annotations.
    pub(crate) fn stamped(mut self) -> Self {
        let hash = self.body_hash();
        self.meta_mut().annotations.get_or_insert_with(BTreeMap::new).insert(SPEC_HASH_ANNOTATION.into(), hash);
        self
    }
}

/// Every child the MCPServer should have, in apply order. None when the server has
/// no uid yet (it has not been stored, so nothing can be owned by it).
pub fn desired_children(server: &MCPServer, settings: &ProxySettings, resolved: &Resolved) -> Option<Vec<Child>> {
    // Foreground deletion of the MCPServer waits for its children, as the reference's do.
    let owner = match &server.spec.remote {
        Some(remote) => remote.owner.clone(),
        None => OwnerReference { block_owner_deletion: Some(true), ..server.controller_owner_ref(&())? },
    };
    let base = Base { server, owner, settings, runconfig: runconfig(server, settings, resolved), resolved };
    let mut out = vec![
        Child::ConfigMap(base.runconfig_configmap()),
        Child::ServiceAccount(base.proxy_service_account()),
        Child::Role(base.proxy_role()),
        Child::RoleBinding(base.proxy_role_binding()),
    ];
    if server.spec.remote.is_none() && server.spec.service_account.as_deref().is_none_or(str::is_empty) {
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
    match server.spec.remote {
        Some(_) => ChildNames::for_remote_proxy(server_name(server)),
        None => ChildNames::for_server(server_name(server)),
    }
}

/// What a remote proxy's runner may do: read its RunConfig. (The reference grants
/// Secrets too; here header and token Secrets reach the runner as environment the
/// kubelet sets, so it reads none.)
pub fn remote_proxy_role_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec!["".into()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: ["get", "list", "watch"].iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }]
}

/// What the proxy runner needs to run the MCP server: its StatefulSet and Services,
/// to watch its pods, attach to stdio and read logs, and read its RunConfig.
/// What a proxy runner may do. Attaching to pods (which auditors rate like exec) only
/// for stdio servers: the runner reaches the others over the network.
pub fn proxy_role_rules(transport: Transport) -> Vec<PolicyRule> {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let manage = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let attach = (transport == Transport::Stdio).then(|| rule("", "pods/attach", &["create", "get"]));
    [
        rule("apps", "statefulsets", &manage),
        rule("", "services", &manage),
        rule("", "pods", &["get", "list", "watch"]),
        rule("", "pods/log", &["get"]),
    ]
    .into_iter()
    .chain(attach)
    .chain([rule("", "configmaps", &["get", "list", "watch"])])
    .collect()
}

/// The proxy's replicas: none at all while the spec asks for something this operator
/// does not implement (an object stored before it was refused at admission), so it
/// never serves without, say, the authentication it asked for.
/// A stdio server has one proxy at most (`MCPServerSpec::stdio_replicas_capped`).
pub fn proxy_replicas(server: &MCPServer, unresolved: bool) -> Option<i32> {
    if !server.spec.unsupported_fields().is_empty() || unresolved {
        Some(0)
    } else if server.spec.stdio_replicas_capped() {
        Some(1)
    } else {
        server.spec.replicas
    }
}

fn non_empty<K, V>(map: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::mcpserver::api::MCPServerSpec;

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
        assert_eq!(pod["metadata"]["annotations"][crate::kinds::mcpserver::configmaps::VERSIONS_ANNOTATION], "policies=41");
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
        let status = crate::kinds::mcpserver::status::desired_status(
            &s,
            &Default::default(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(status.phase, Some(crate::kinds::mcpserver::api::Phase::Failed));
        assert!(status.message.starts_with("spec.volumes (host path mounts) is not supported"), "{}", status.message);
        assert_eq!(deployment(&server(json!({"image": "img", "transport": "sse", "replicas": 2})))["spec"]["replicas"], 2);
    }

    #[test]
    fn a_stdio_server_gets_one_proxy_and_only_stdio_proxies_may_attach() {
        let stdio = server(json!({"image": "img", "replicas": 3}));
        assert_eq!(deployment(&stdio)["spec"]["replicas"], 1);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let capped = crate::kinds::mcpserver::status::desired_status(&stdio, &Default::default(), now.clone());
        let condition = capped.conditions.iter().find(|c| c.type_ == "StdioReplicaCapped").unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "StdioTransportCapAt1"));
        let http = server(json!({"image": "img", "transport": "streamable-http", "replicas": 3}));
        assert_eq!(deployment(&http)["spec"]["replicas"], 3);
        let uncapped = crate::kinds::mcpserver::status::desired_status(&http, &Default::default(), now);
        assert!(uncapped.conditions.iter().any(|c| c.type_ == "StdioReplicaCapped" && c.status == "False"));

        let attach = |rules: Vec<PolicyRule>| rules.iter().any(|r| r.resources.iter().flatten().any(|res| res == "pods/attach"));
        assert!(attach(proxy_role_rules(Transport::Stdio)));
        assert!(!attach(proxy_role_rules(Transport::StreamableHttp)));
        assert!(!attach(proxy_role_rules(Transport::Sse)));
    }

    #[test]
    fn the_platform_pull_secrets_follow_the_server_own_and_the_proxy_pod_is_placed_as_asked() {
        let s = server(json!({"image": "img", "resourceOverrides": {"proxyDeployment": {
            "imagePullSecrets": [{"name": "team"}, {"name": "shared"}],
            "nodeSelector": {"pool": "mcp"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mcp", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
        }}}));
        let settings = ProxySettings { default_image_pull_secrets: vec!["shared".into(), "platform".into()], ..ProxySettings::new("r") };
        let children = desired_children(&s, &settings, &Resolved::default()).unwrap();
        let find = |kind: &str, name: &str| {
            let child = children.iter().find(|c| c.kind() == kind && c.name() == name).unwrap_or_else(|| panic!("no {kind} {name}"));
            child.dynamic().1
        };
        let expected = json!([{"name": "team"}, {"name": "shared"}, {"name": "platform"}]);
        let pod = find("Deployment", "osv")["spec"]["template"]["spec"].clone();
        assert_eq!(pod["imagePullSecrets"], expected);
        assert_eq!(find("ServiceAccount", "osv-proxy-runner")["imagePullSecrets"], expected);
        assert_eq!(find("ServiceAccount", "osv-sa")["imagePullSecrets"], expected);
        assert_eq!(pod["nodeSelector"], json!({"pool": "mcp"}));
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
                [0]["key"],
            "zone"
        );

        let bare = desired_children(&server(json!({"image": "img"})), &ProxySettings::new("r"), &Resolved::default()).unwrap();
        let bare_pod = bare.iter().find(|c| c.kind() == "Deployment").unwrap().dynamic().1;
        for field in ["imagePullSecrets", "nodeSelector", "tolerations", "affinity"] {
            assert!(bare_pod["spec"]["template"]["spec"].get(field).is_none(), "{field} set without being asked for");
        }
    }

    #[test]
    fn the_platform_redis_password_reaches_only_proxies_using_the_platform_redis() {
        let password = |s: &MCPServer, settings: &ProxySettings| {
            let d = desired_children(s, settings, &Resolved::default()).unwrap();
            let d = d.iter().find(|c| c.kind() == "Deployment").unwrap().dynamic().1;
            d["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "THV_SESSION_REDIS_PASSWORD")
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        let platform = ProxySettings {
            default_redis: Some("redis.platform:6379".into()),
            default_redis_password: Some(crate::shared::refs::SecretKeyRef { name: "redis".into(), key: "redis-password".into() }),
            ..ProxySettings::new("r")
        };
        let plain = server(json!({"image": "img"}));
        assert_eq!(password(&plain, &platform), Some(json!({"name": "redis", "key": "redis-password"})));
        assert_eq!(password(&plain, &ProxySettings::new("r")), None);
        let in_memory = server(json!({"image": "img", "sessionStorage": {"provider": "memory"}}));
        assert_eq!(password(&in_memory, &platform), None, "a server that chose memory sessions gets no Redis password");
        let own = server(json!({"image": "img", "sessionStorage": {"provider": "redis", "address": "mine:6379",
            "passwordRef": {"name": "mine", "key": "pw"}}}));
        assert_eq!(password(&own, &platform), Some(json!({"name": "mine", "key": "pw"})));
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
        crate::shared::meta::slim_metadata(&mut meta, &[SPEC_HASH_ANNOTATION]);
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
