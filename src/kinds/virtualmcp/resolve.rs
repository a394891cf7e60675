//! Resolution of a VirtualMCPServer from a read-only view of its scope's caches:
//! its group and the group's members (the backends), its OIDC provider, and every
//! problem that stops it. Pure, so it is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::kinds::authz::MCPAuthzConfig;
use crate::kinds::embedding::EmbeddingServer;
use crate::kinds::externalauth::{ExternalAuthType, MCPExternalAuthConfig};
use crate::kinds::group::{GroupRefState, MCPGroup, members_in};
use crate::kinds::mcpserver::api::{MCPServer, Phase};
use crate::kinds::mcpserver::remote::MCPRemoteProxy;
use crate::kinds::oidc::MCPOIDCConfig;
use crate::kinds::serverentry::{EntryPhase, MCPServerEntry};
use crate::kinds::telemetry::MCPTelemetryConfig;
use crate::kinds::virtualmcp::api::{IncomingAuthType, VirtualMCPServer, unsupported};
use crate::kinds::virtualmcp::children::{CLIENT_SECRET_ENV, url};
use crate::kinds::virtualmcp::config::{self, Authz, BackendStrategy, IncomingAuth, Oidc, StaticBackend, UserConfig};
use crate::kinds::virtualmcp::definition::VirtualMCPCompositeToolDefinition;
use crate::shared::configkind::ConfigKind;
use crate::shared::problem::Problem;

/// What resolution reads: the caches.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub groups: &'a Store<MCPGroup>,
    pub servers: &'a Store<MCPServer>,
    pub proxies: &'a Store<MCPRemoteProxy>,
    pub entries: &'a Store<MCPServerEntry>,
    pub oidc: &'a Store<MCPOIDCConfig>,
    pub authz: &'a Store<MCPAuthzConfig>,
    pub external_auth: &'a Store<MCPExternalAuthConfig>,
    pub telemetry: &'a Store<MCPTelemetryConfig>,
    /// The namespace's VirtualMCPCompositeToolDefinitions, where watched (only where
    /// a server names one).
    pub definitions: Option<&'a Store<VirtualMCPCompositeToolDefinition>>,
    pub embeddings: &'a Store<EmbeddingServer>,
}

/// The EmbeddingServer spec.embeddingServerRef names, as the vMCP needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedding {
    pub name: String,
    /// Whether it exists and says Ready: until then the vMCP runs no replica.
    pub ready: bool,
}

/// One member of the group, as the vMCP would reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub config: StaticBackend,
    /// Whether the member says it serves (its phase).
    pub ready: bool,
    /// Why the vMCP does not call it, when it does not: the member is left out of
    /// the configuration file and reported unavailable.
    pub excluded: Option<String>,
    /// The MCPExternalAuthConfig the member names for its callers (discovered
    /// outgoing auth), if any.
    pub auth_config: Option<String>,
}

/// A VirtualMCPServer's resolution.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub group: GroupRefState,
    /// Every member of the group, sorted by name.
    pub backends: Vec<Backend>,
    /// What stops the server; empty when it can run.
    pub problems: Vec<Problem>,
    pub user: UserConfig,
    pub incoming_auth: IncomingAuth,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// How the vMCP authenticates to the backends that need it, by name.
    pub outgoing: BTreeMap<String, BackendStrategy>,
    /// The optimizer's EmbeddingServer, when spec.embeddingServerRef names one.
    pub embedding: Option<Embedding>,
}

impl Resolution {
    /// The backends the vMCP calls.
    pub fn served(&self) -> Vec<StaticBackend> {
        self.backends.iter().filter(|b| b.excluded.is_none()).map(|b| b.config.clone()).collect()
    }
}

pub fn resolve(vmcp: &VirtualMCPServer, view: View<'_>) -> Resolution {
    let ns = vmcp.namespace().unwrap_or_default();
    let group_name = vmcp.spec.group_ref.name.as_str();
    let mut problems: Vec<Problem> = unsupported(&vmcp.spec).into_iter().map(|(field, why)| Problem::at(field, why)).collect();
    let mut user = match config::parse(vmcp.spec.config.as_ref(), group_name) {
        Ok(user) => user,
        Err(found) => {
            problems.extend(found);
            UserConfig::default()
        }
    };
    // spec.passthroughHeaders, when set, replaces spec.config's list (as the reference's).
    problems.extend(crate::kinds::virtualmcp::headers::passthrough_problems(&vmcp.spec.passthrough_headers, "spec.passthroughHeaders"));
    if !vmcp.spec.passthrough_headers.is_empty() {
        user.passthrough_headers = vmcp.spec.passthrough_headers.clone();
    }
    let inline = user.composite_tools.len();
    for (i, reference) in user.composite_tool_refs.iter().enumerate() {
        let path = format!("spec.config.compositeToolRefs[{i}]");
        let found = view.definitions.and_then(|d| d.get(&ObjectRef::new(&reference.name).within(&ns)));
        let Some(definition) = found else {
            problems
                .push(Problem::at(path, format!("VirtualMCPCompositeToolDefinition {} does not exist in this namespace", reference.name)));
            continue;
        };
        match crate::kinds::virtualmcp::composite::parse(&serde_json::Value::Object(definition.spec.tool.clone()), "spec") {
            Ok(tool) => user.composite_tools.push(tool),
            Err(found) => {
                let why = found.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                problems.push(Problem::at(path, format!("VirtualMCPCompositeToolDefinition {} cannot run: {why}", reference.name)));
            }
        }
    }
    let refs = &user.composite_tool_refs;
    problems.extend(config::duplicate_tool_names(&user.composite_tools, |i| match i.checked_sub(inline) {
        Some(r) => format!("spec.config.compositeToolRefs[{r}] ({})", refs.get(r).map_or("", |x| x.name.as_str())),
        None => format!("spec.config.compositeTools[{i}].name"),
    }));
    // Laid over the operator's pod template (`children`): one that is not a pod
    // template stops the server rather than being left out.
    if let Some(Err(e)) = vmcp.spec.pod_template_spec.as_ref().map(crate::kinds::mcpserver::api::parse_pod_template) {
        problems.push(Problem::at("spec.podTemplateSpec", format!("not a pod template at {}: {}", e.path, e.message)));
    }
    let group = GroupRefState::of(view.groups, &ns, group_name);
    if group == GroupRefState::NotFound {
        problems.push(Problem::at("spec.groupRef", format!("MCPGroup {group_name} does not exist in this namespace")));
    }
    let (mut incoming_auth, mut env, mut volumes) = incoming(vmcp, &ns, view.oidc, &mut problems);
    incoming_auth.authz = authorization(vmcp, &ns, view.authz, &mut problems);
    telemetry(vmcp, &ns, view.telemetry, &mut user, &mut env, &mut volumes, &mut problems);
    let embedding = optimizer(vmcp, &ns, view.embeddings, &mut user, &mut problems);
    let mut members = backends(view, &ns, group_name);
    let outgoing = outgoing(vmcp, &ns, view.external_auth, &mut members, &mut env, &mut problems);
    Resolution { group, backends: members, problems, user, incoming_auth, env, volumes, outgoing, embedding }
}

/// The optimizer's embedding service: the URL of the EmbeddingServer
/// spec.embeddingServerRef names (which turns the optimizer on, with its defaults
/// unless spec.config.optimizer says more), or spec.config.optimizer.embeddingService.
fn optimizer(
    vmcp: &VirtualMCPServer,
    ns: &str,
    embeddings: &Store<EmbeddingServer>,
    user: &mut UserConfig,
    problems: &mut Vec<Problem>,
) -> Option<Embedding> {
    let Some(reference) = &vmcp.spec.embedding_server_ref else {
        if user.optimizer.as_ref().is_some_and(|o| o.embedding_service.is_empty()) {
            problems.push(Problem::at(
                "spec.config.optimizer.embeddingService",
                "the optimizer needs an embedding service: name an EmbeddingServer in spec.embeddingServerRef",
            ));
        }
        return None;
    };
    let Some(server) = embeddings.get(&ObjectRef::new(&reference.name).within(ns)) else {
        problems
            .push(Problem::at("spec.embeddingServerRef", format!("EmbeddingServer {} does not exist in this namespace", reference.name)));
        return Some(Embedding { name: reference.name.clone(), ready: false });
    };
    let url = server.status.as_ref().map(|s| s.url.clone()).filter(|u| !u.is_empty());
    // The reference's precedence: the EmbeddingServer's URL replaces one written in the config.
    user.optimizer.get_or_insert_with(Default::default).embedding_service =
        url.unwrap_or_else(|| crate::kinds::embedding::children::url(&server));
    let ready = server.status.as_ref().and_then(|s| s.phase) == Some(crate::kinds::embedding::api::EmbeddingPhase::Ready);
    Some(Embedding { name: reference.name.clone(), ready })
}

/// The members of `group` in `ns`: servers and remote proxies through their proxy
/// Service, entries directly, each with why the vMCP cannot call it, if it cannot.
pub fn backends(view: View<'_>, ns: &str, group: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    let servers = view.servers.state();
    for server in members_in(&servers, ns, group, crate::kinds::mcpserver::group_ref::group_of) {
        let mode = crate::kinds::mcpserver::resources::effective_proxy_mode(server);
        out.push(Backend {
            config: StaticBackend {
                name: server.name_any(),
                url: crate::kinds::mcpserver::resources::service_url(server).split('#').next().unwrap_or_default().to_string(),
                transport: mode.as_str().into(),
                kind: String::new(),
            },
            ready: server.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready),
            excluded: None,
            auth_config: server.spec.external_auth_config_ref.as_ref().map(|r| r.name.clone()),
        });
    }
    let proxies = view.proxies.state();
    for proxy in members_in(&proxies, ns, group, crate::kinds::mcpserver::remote::group_of) {
        let Some(server) = crate::kinds::mcpserver::remote::as_server(proxy) else { continue };
        let transport = proxy.spec.transport.as_str();
        let path = if transport == "sse" { "/sse" } else { "/mcp" };
        out.push(Backend {
            config: StaticBackend {
                name: proxy.name_any(),
                url: format!("{}{path}", crate::kinds::mcpserver::resources::service_base_url(&server)),
                transport: transport.into(),
                kind: String::new(),
            },
            ready: proxy.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready),
            excluded: None,
            auth_config: None,
        });
    }
    let entries = view.entries.state();
    for entry in members_in(&entries, ns, group, crate::kinds::serverentry::group_of) {
        let transport = serde_json::to_value(entry.spec.transport).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let excluded = if entry.spec.header_forward.is_some() || entry.spec.ca_bundle_ref.is_some() {
            Some("its headerForward and caBundleRef are not carried out for a vMCP by this operator release".to_string())
        } else {
            None
        };
        out.push(Backend {
            config: StaticBackend { name: entry.name_any(), url: entry.spec.remote_url.clone(), transport, kind: "entry".into() },
            ready: entry.status.as_ref().and_then(|s| s.phase) == Some(EntryPhase::Valid),
            excluded,
            auth_config: entry.spec.external_auth_config_ref.as_ref().map(|r| r.name.clone()),
        });
    }
    out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    out
}

/// How the vMCP authenticates to each member that needs it: by the
/// MCPExternalAuthConfig `spec.outgoingAuth` names for it (its `backends` entry, else
/// `default`, of type externalAuthConfigRef), else by the one the member names itself
/// (discovered). Credentials reach the pod as environment from their Secrets. One the
/// VirtualMCPServer names that is missing, invalid or of a type the vMCP cannot use
/// stops the server; one a member names leaves that member out, with the reason.
fn outgoing(
    vmcp: &VirtualMCPServer,
    ns: &str,
    configs: &Store<MCPExternalAuthConfig>,
    members: &mut [Backend],
    env: &mut Vec<EnvVar>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, BackendStrategy> {
    let mut strategies = BTreeMap::new();
    let explicit = vmcp.spec.outgoing_auth.as_ref();
    for member in members.iter_mut().filter(|m| m.excluded.is_none()) {
        let name = member.config.name.clone();
        let (config_name, path) = match explicit.and_then(|o| o.for_backend(&name)) {
            Some((path, auth)) => {
                let config = auth.external_auth_config_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                (config, Some(format!("{path}.externalAuthConfigRef")))
            }
            None => match &member.auth_config {
                Some(config) => (config.clone(), None),
                None => continue,
            },
        };
        let found = configs.get(&ObjectRef::new(&config_name).within(ns));
        match found
            .as_deref()
            .ok_or_else(|| format!("MCPExternalAuthConfig {config_name} does not exist in this namespace"))
            .and_then(|config| backend_strategy(&config_name, config).map_err(|why| format!("MCPExternalAuthConfig {config_name}: {why}")))
        {
            Ok((strategy, credential)) => {
                if let Some(credential) = credential.filter(|c| !env.iter().any(|e| e.name == c.name)) {
                    env.push(credential);
                }
                strategies.insert(name, strategy);
            }
            Err(why) => match path {
                Some(path) => problems.push(Problem::at(path, why)),
                None => member.excluded = Some(format!("its own {why}")),
            },
        }
    }
    strategies
}

/// The vMCP's strategy for calling a backend as the MCPExternalAuthConfig `name`
/// says, and the environment variable its credential reaches the pod through.
fn backend_strategy(name: &str, config: &MCPExternalAuthConfig) -> Result<(BackendStrategy, Option<EnvVar>), String> {
    if let Some(problem) = config.spec.problem() {
        return Err(format!("is invalid: {problem}"));
    }
    // One variable per config: several configs of a type may name different Secrets.
    let variable = |prefix: &str| format!("{prefix}_{}", name.to_uppercase().replace(['-', '.'], "_"));
    let spec = &config.spec;
    match (spec.auth_type, &spec.header_injection, &spec.token_exchange) {
        (ExternalAuthType::Unauthenticated, _, _) => {
            Ok((BackendStrategy { kind: "unauthenticated", header_injection: None, token_exchange: None }, None))
        }
        (ExternalAuthType::HeaderInjection, Some(header), _) => {
            let env = variable("VMCP_HEADER_VALUE");
            let credential = crate::shared::refs::secret_env(env.clone(), &header.value_secret_ref);
            let injection = config::HeaderInjection { header_name: header.header_name.clone(), header_value_env: env };
            Ok((BackendStrategy { kind: "header_injection", header_injection: Some(injection), token_exchange: None }, Some(credential)))
        }
        (ExternalAuthType::TokenExchange, _, Some(exchange)) => {
            let runner = crate::kinds::externalauth::token_exchange(spec).ok_or("tokenExchange: required with type tokenExchange")?;
            let env = variable("VMCP_TOKEN_EXCHANGE_SECRET");
            let credential = exchange.client_secret_ref.as_ref().map(|secret| crate::shared::refs::secret_env(env.clone(), secret));
            let exchange = config::TokenExchange {
                token_url: runner.token_url,
                client_id: runner.client_id,
                client_secret_env: if credential.is_some() { env } else { String::new() },
                audience: runner.audience,
                scopes: runner.scopes,
                subject_token_type: runner.subject_token_type,
            };
            Ok((BackendStrategy { kind: "token_exchange", header_injection: None, token_exchange: Some(exchange) }, credential))
        }
        (other, _, _) => Err(format!(
            "type {} is not one a vMCP calls backends with in this operator release (unauthenticated, headerInjection, tokenExchange)",
            other.name()
        )),
    }
}

/// The telemetry of the MCPTelemetryConfig spec.telemetryConfigRef names, as the
/// proxies get theirs: its settings in the file (service name: the reference's, or
/// the server's name), its resource attributes and sensitive headers (by Secret
/// reference) as environment, its CA bundle mounted. A missing or invalid one stops
/// the server.
fn telemetry(
    vmcp: &VirtualMCPServer,
    ns: &str,
    configs: &Store<MCPTelemetryConfig>,
    user: &mut UserConfig,
    env: &mut Vec<EnvVar>,
    volumes: &mut Vec<(Volume, VolumeMount)>,
    problems: &mut Vec<Problem>,
) {
    let Some(reference) = &vmcp.spec.telemetry_config_ref else { return };
    let Some(config) = configs.get(&ObjectRef::new(&reference.name).within(ns)) else {
        let why = format!("MCPTelemetryConfig {} does not exist in this namespace", reference.name);
        return problems.push(Problem::at("spec.telemetryConfigRef", why));
    };
    if let Some(problem) = config.spec.problem() {
        return problems
            .push(Problem::at("spec.telemetryConfigRef", format!("MCPTelemetryConfig {} is invalid: {problem}", reference.name)));
    }
    let service = if reference.service_name.is_empty() { vmcp.name_any() } else { reference.service_name.clone() };
    user.telemetry = Some(crate::kinds::telemetry::runner_telemetry(&service, &config.spec));
    env.extend(crate::kinds::telemetry::proxy_env(&service, ns, &config.spec));
    volumes.extend(crate::kinds::telemetry::ca_bundle_volume(&config.spec));
}

/// Incoming auth as the vMCP's file says it, with the environment and volumes it needs.
fn incoming(
    vmcp: &VirtualMCPServer,
    ns: &str,
    oidc_configs: &Store<MCPOIDCConfig>,
    problems: &mut Vec<Problem>,
) -> (IncomingAuth, Vec<EnvVar>, Vec<(Volume, VolumeMount)>) {
    let auth = &vmcp.spec.incoming_auth;
    let (mut env, mut volumes) = (Vec::new(), Vec::new());
    let oidc = match (auth.auth_type, &auth.oidc_config_ref) {
        (IncomingAuthType::Anonymous, _) => None,
        (IncomingAuthType::Oidc, None) => {
            problems.push(Problem::at("spec.incomingAuth.oidcConfigRef", "required when type is oidc"));
            None
        }
        (IncomingAuthType::Oidc, Some(reference)) => match oidc_configs.get(&ObjectRef::new(&reference.name).within(ns)) {
            None => {
                problems.push(Problem::at(
                    "spec.incomingAuth.oidcConfigRef",
                    format!("MCPOIDCConfig {} does not exist in this namespace", reference.name),
                ));
                None
            }
            Some(config) if config.problem().is_some() => {
                problems.push(Problem::at(
                    "spec.incomingAuth.oidcConfigRef",
                    format!("MCPOIDCConfig {} is invalid: {}", reference.name, config.problem().unwrap_or_default()),
                ));
                None
            }
            Some(config) => {
                let service_url = url(&vmcp.name_any(), ns);
                let mut validation = crate::kinds::oidc::token_validation(reference, &service_url, &config.spec);
                // Cluster tokens: the vMCP pod has no API token (its file has no token-file
                // setting), so it gets the cluster's CA from kube-root-ca.crt and reads the keys
                // at the in-cluster JWKS URL, which the API server must serve to anonymous
                // clients (README, "Incoming OIDC").
                if let Some(v) = validation.as_mut().filter(|v| !v.auth_token_file.is_empty()) {
                    volumes.push(crate::kinds::oidc::cluster_ca_volume());
                    if v.jwks_url.is_empty() {
                        v.jwks_url = crate::kinds::oidc::CLUSTER_JWKS_URL.into();
                    }
                }
                let secret = config.spec.inline.as_ref().and_then(|i| i.client_secret_ref.as_ref());
                env.extend(secret.map(|s| crate::shared::refs::secret_env(CLIENT_SECRET_ENV, s)));
                volumes.extend(crate::kinds::oidc::ca_bundle_volume(&config.spec));
                validation.map(|v| Oidc {
                    issuer: v.issuer,
                    client_id: v.client_id,
                    client_secret_env: if secret.is_some() { CLIENT_SECRET_ENV.into() } else { String::new() },
                    audience: v.audience,
                    resource: v.resource_url,
                    jwks_url: v.jwks_url,
                    introspection_url: v.introspection_url,
                    scopes: v.scopes.unwrap_or_default(),
                    protected_resource_allow_private_ip: v.allow_private_ip,
                    jwks_allow_private_ip: v.allow_private_ip,
                    insecure_allow_http: v.insecure_allow_http,
                    ca_bundle_path: v.ca_cert_path,
                })
            }
        },
    };
    let kind = match auth.auth_type {
        IncomingAuthType::Anonymous => "anonymous",
        IncomingAuthType::Oidc => "oidc",
    };
    (IncomingAuth { kind, oidc, authz: None }, env, volumes)
}

/// The Cedar authorization of incoming calls: inline policies
/// (`incomingAuth.authzConfig`) with the claim mapping beside them, or the cedarv1
/// MCPAuthzConfig `incomingAuth.authzConfigRef` names (the vMCP has no other
/// authorizer). One that is missing, invalid or not Cedar stops the server: it never
/// serves unauthorized what was meant to be authorized.
fn authorization(vmcp: &VirtualMCPServer, ns: &str, configs: &Store<MCPAuthzConfig>, problems: &mut Vec<Problem>) -> Option<Authz> {
    let auth = &vmcp.spec.incoming_auth;
    if let Some(config) = &auth.authz_config {
        let inline = config.inline.as_ref()?;
        return Some(Authz {
            kind: "cedar",
            policies: inline.policies.clone(),
            entities_json: inline.entities_json.clone(),
            group_claim_name: config.group_claim_name.clone(),
            role_claim_name: config.role_claim_name.clone(),
            group_entity_type: config.group_entity_type.clone(),
        });
    }
    let reference = auth.authz_config_ref.as_ref()?;
    let path = "spec.incomingAuth.authzConfigRef";
    let why = match configs.get(&ObjectRef::new(&reference.name).within(ns)) {
        None => format!("MCPAuthzConfig {} does not exist in this namespace", reference.name),
        Some(config) => match config.spec.problem() {
            Some(problem) => format!("MCPAuthzConfig {} is invalid: {problem}", reference.name),
            None => match crate::kinds::authz::cedar_settings(&config.spec) {
                Some(cedar) => {
                    let text = |key: &str| cedar.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
                    let policies = cedar.get("policies").and_then(serde_json::Value::as_array).into_iter().flatten();
                    return Some(Authz {
                        kind: "cedar",
                        policies: policies.filter_map(|p| p.as_str().map(String::from)).collect(),
                        entities_json: text("entities_json"),
                        group_claim_name: text("group_claim_name"),
                        role_claim_name: text("role_claim_name"),
                        group_entity_type: text("group_entity_type"),
                    });
                }
                None => format!(
                    "MCPAuthzConfig {} is of type {}: the vMCP authorizes with Cedar policies only (cedarv1)",
                    reference.name, config.spec.authorizer
                ),
            },
        },
    };
    problems.push(Problem::at(path, why));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    fn store<K>(objects: Vec<serde_json::Value>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(serde_json::from_value(o).unwrap()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        reader
    }

    struct Caches {
        groups: Store<MCPGroup>,
        servers: Store<MCPServer>,
        proxies: Store<MCPRemoteProxy>,
        entries: Store<MCPServerEntry>,
        oidc: Store<MCPOIDCConfig>,
        authz: Store<MCPAuthzConfig>,
        external_auth: Store<MCPExternalAuthConfig>,
        telemetry: Store<MCPTelemetryConfig>,
        definitions: Store<VirtualMCPCompositeToolDefinition>,
        embeddings: Store<EmbeddingServer>,
    }

    impl Caches {
        fn view(&self) -> View<'_> {
            View {
                groups: &self.groups,
                servers: &self.servers,
                proxies: &self.proxies,
                entries: &self.entries,
                oidc: &self.oidc,
                authz: &self.authz,
                external_auth: &self.external_auth,
                telemetry: &self.telemetry,
                definitions: Some(&self.definitions),
                embeddings: &self.embeddings,
            }
        }
    }

    fn meta(name: &str) -> serde_json::Value {
        json!({"name": name, "namespace": "a", "uid": format!("u-{name}")})
    }

    fn caches() -> Caches {
        Caches {
            groups: store(vec![json!({"metadata": meta("g"), "spec": {}, "status": {"phase": "Ready"}})]),
            servers: store(vec![
                json!({"metadata": meta("fetch"), "spec": {"image": "f", "transport": "streamable-http", "groupRef": {"name": "g"}},
                    "status": {"phase": "Ready"}}),
                json!({"metadata": meta("memory"), "spec": {"image": "m", "transport": "stdio", "proxyMode": "sse", "groupRef": {"name": "g"}}}),
                json!({"metadata": meta("locked"), "spec": {"image": "l", "groupRef": {"name": "g"}, "externalAuthConfigRef": {"name": "x"}}}),
                json!({"metadata": meta("elsewhere"), "spec": {"image": "e", "groupRef": {"name": "h"}}}),
            ]),
            proxies: store(vec![json!({"metadata": meta("saas"), "spec": {"remoteUrl": "https://mcp.example.com/mcp",
                "groupRef": {"name": "g"}}, "status": {"phase": "Ready"}})]),
            entries: store(vec![json!({"metadata": meta("docs"), "spec": {"remoteUrl": "https://docs.example.com/sse",
                "transport": "sse", "groupRef": {"name": "g"}}, "status": {"phase": "Valid"}})]),
            oidc: store(vec![json!({"metadata": meta("idp"), "spec": {"type": "inline", "inline": {"issuer": "https://idp.example.com",
                "clientId": "vmcp", "clientSecretRef": {"name": "idp", "key": "secret"}}}})]),
            authz: store(vec![
                json!({"metadata": meta("team-policy"), "spec": {"type": "cedarv1", "config": {
                    "policies": ["permit(principal in THVGroup::\"eng\", action, resource);"], "entities_json": "[]",
                    "group_claim_name": "https://example.com/groups"}}}),
                json!({"metadata": meta("pdp"), "spec": {"type": "httpv1", "config": {"url": "https://pdp.example.com"}}}),
                json!({"metadata": meta("empty"), "spec": {"type": "cedarv1", "config": {"policies": []}}}),
            ]),
            external_auth: store(vec![
                json!({"metadata": meta("docs-key"), "spec": {"type": "headerInjection",
                    "headerInjection": {"headerName": "X-API-Key", "valueSecretRef": {"name": "docs", "key": "key"}}}}),
                json!({"metadata": meta("idp-exchange"), "spec": {"type": "tokenExchange", "tokenExchange": {"tokenUrl": "https://idp/token",
                    "audience": "backend", "clientId": "vmcp", "clientSecretRef": {"name": "idp", "key": "secret"}}}}),
                json!({"metadata": meta("signed"), "spec": {"type": "awsSts", "awsSts": {"region": "eu-west-1"}}}),
            ]),
            telemetry: store(vec![
                json!({"metadata": meta("otel"), "spec": {"openTelemetry": {"enabled": true, "endpoint": "https://otel.obs:4317",
                    "tracing": {"enabled": true, "samplingRate": "0.1"},
                    "sensitiveHeaders": [{"name": "x-api-key", "secretKeyRef": {"name": "otel-creds", "key": "token"}}],
                    "caBundleRef": {"configMapRef": {"name": "otel-ca", "key": ""}}}}}),
                json!({"metadata": meta("no-signal"), "spec": {"openTelemetry": {"enabled": true, "endpoint": "otel:4317"}}}),
            ]),
            definitions: store(vec![
                json!({"metadata": meta("fetch-twice"), "spec": {"name": "fetch_twice", "description": "d",
                    "steps": [{"id": "a", "tool": "fetch.fetch"}, {"id": "b", "tool": "fetch.fetch", "dependsOn": ["a"]}]}}),
                json!({"metadata": meta("broken"), "spec": {"name": "broken", "description": "d",
                    "steps": [{"id": "a", "tool": "fetch.fetch", "dependsOn": ["a"]}]}}),
            ]),
            embeddings: store(vec![
                json!({"metadata": meta("embed"), "spec": {"port": 9000},
                    "status": {"phase": "Ready", "url": "http://embed.a.svc.cluster.local:9000", "readyReplicas": 1}}),
                json!({"metadata": meta("loading"), "spec": {}, "status": {"phase": "Downloading"}}),
            ]),
        }
    }

    fn vmcp(spec: serde_json::Value) -> VirtualMCPServer {
        serde_json::from_value(json!({"metadata": meta("team"), "spec": spec})).unwrap()
    }

    #[test]
    fn an_embedding_server_reference_turns_the_optimizer_on_with_its_url() {
        let c = caches();
        let spec = |reference: &str, optimizer: serde_json::Value| {
            json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "embeddingServerRef": {"name": reference},
                "config": {"optimizer": optimizer}})
        };
        let r = resolve(&vmcp(spec("embed", json!({"maxToolsToReturn": 5, "embeddingService": "http://elsewhere:1"}))), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let optimizer = r.user.optimizer.clone().unwrap();
        assert_eq!(
            (optimizer.embedding_service.as_str(), optimizer.max_tools_to_return),
            ("http://embed.a.svc.cluster.local:9000", Some(5))
        );
        assert_eq!(r.embedding, Some(Embedding { name: "embed".into(), ready: true }));
        let r = resolve(&vmcp(spec("loading", json!({}))), c.view());
        assert_eq!(r.embedding, Some(Embedding { name: "loading".into(), ready: false }));
        assert_eq!(
            r.user.optimizer.unwrap().embedding_service,
            "http://loading.a.svc.cluster.local:8080",
            "from its spec until its status says"
        );
        let r = resolve(&vmcp(spec("missing", json!({}))), c.view());
        assert_eq!(r.problems[0].to_string(), "spec.embeddingServerRef: EmbeddingServer missing does not exist in this namespace");
        let without = json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "config": {"optimizer": {}}});
        let r = resolve(&vmcp(without), c.view());
        assert!(r.problems[0].to_string().starts_with("spec.config.optimizer.embeddingService: the optimizer needs an embedding service"));
    }

    #[test]
    fn every_kind_of_member_becomes_a_backend_the_vmcp_can_reach() {
        let c = caches();
        let r = resolve(&vmcp(json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}})), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let found: Vec<(&str, &str, &str, bool)> =
            r.backends.iter().map(|b| (b.config.name.as_str(), b.config.url.as_str(), b.config.transport.as_str(), b.ready)).collect();
        assert_eq!(
            found,
            [
                ("docs", "https://docs.example.com/sse", "sse", true),
                ("fetch", "http://mcp-fetch-proxy.a.svc.cluster.local:8080/mcp", "streamable-http", true),
                ("locked", "http://mcp-locked-proxy.a.svc.cluster.local:8080/mcp", "streamable-http", false),
                ("memory", "http://mcp-memory-proxy.a.svc.cluster.local:8080/sse", "sse", false),
                ("saas", "http://mcp-saas-remote-proxy.a.svc.cluster.local:8080/mcp", "streamable-http", true),
            ]
        );
        assert_eq!(r.backends[0].config.kind, "entry");
        assert!(r.backends[2].excluded.as_deref().is_some_and(|w| w.contains("MCPExternalAuthConfig x")));
        assert_eq!(r.served().iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["docs", "fetch", "memory", "saas"]);
    }

    #[test]
    fn telemetry_reaches_the_file_its_headers_by_secret_reference_and_a_bad_one_stops_the_server() {
        let c = caches();
        let spec = |reference: serde_json::Value| json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "telemetryConfigRef": reference});
        let r = resolve(&vmcp(spec(json!({"name": "otel"}))), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let file = serde_json::to_value(r.user.telemetry.as_ref().unwrap()).unwrap();
        assert_eq!(
            (&file["endpoint"], &file["serviceName"], &file["tracingEnabled"], &file["samplingRate"]),
            (&json!("otel.obs:4317"), &json!("team"), &json!(true), &json!("0.1"))
        );
        assert_eq!(file["caCertPath"], "/config/certs/otel/otel-ca/ca.crt");
        let names: Vec<&str> = r.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["OTEL_RESOURCE_ATTRIBUTES", "TOOLHIVE_OTEL_HEADER_X_API_KEY"]);
        assert_eq!(r.env[0].value.as_deref(), Some("service.name=team,service.namespace=a"));
        assert!(r.env[1].value.is_none(), "a sensitive header only by reference");
        assert_eq!(r.volumes.len(), 1, "the CA bundle");
        let named = resolve(&vmcp(spec(json!({"name": "otel", "serviceName": "gateway"}))), c.view());
        assert_eq!(named.user.telemetry.unwrap().service_name, "gateway");

        let missing = resolve(&vmcp(spec(json!({"name": "gone"}))), c.view());
        assert_eq!(missing.problems[0].to_string(), "spec.telemetryConfigRef: MCPTelemetryConfig gone does not exist in this namespace");
        assert!(missing.user.telemetry.is_none());
        let invalid = resolve(&vmcp(spec(json!({"name": "no-signal"}))), c.view());
        assert!(
            invalid.problems[0].to_string().contains("MCPTelemetryConfig no-signal is invalid: spec.openTelemetry.endpoint"),
            "{:?}",
            invalid.problems
        );
    }

    #[test]
    fn oidc_reaches_the_file_with_its_secret_as_environment() {
        let c = caches();
        let spec = json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "oidc", "oidcConfigRef": {"name": "idp", "audience": "vmcp-team"},
            "authzConfig": {"type": "inline", "inline": {"policies": ["permit(principal, action, resource);"]}}}});
        let r = resolve(&vmcp(spec), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let oidc = r.incoming_auth.oidc.as_ref().unwrap();
        assert_eq!(
            (oidc.issuer.as_str(), oidc.audience.as_str(), oidc.client_id.as_str()),
            ("https://idp.example.com", "vmcp-team", "vmcp")
        );
        assert_eq!(oidc.client_secret_env, CLIENT_SECRET_ENV);
        assert_eq!(oidc.resource, "http://vmcp-team.a.svc.cluster.local:4483");
        assert_eq!(r.env[0].name, CLIENT_SECRET_ENV);
        assert_eq!(r.incoming_auth.authz.as_ref().unwrap().policies.len(), 1);
    }

    #[test]
    fn backends_are_called_as_their_own_or_the_named_external_auth_config_says() {
        let mut c = caches();
        // The entry names a header injection of its own (discovered).
        c.entries = store(vec![json!({"metadata": meta("docs"), "spec": {"remoteUrl": "https://docs.example.com/sse",
            "transport": "sse", "groupRef": {"name": "g"}, "externalAuthConfigRef": {"name": "docs-key"}}, "status": {"phase": "Valid"}})]);
        let spec = |outgoing: serde_json::Value| json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}, "outgoingAuth": outgoing});
        let discovered = resolve(&vmcp(spec(json!({"source": "discovered"}))), c.view());
        assert!(discovered.problems.is_empty(), "{:?}", discovered.problems);
        let docs = &discovered.outgoing["docs"];
        assert_eq!(docs.kind, "header_injection");
        let injection = docs.header_injection.as_ref().unwrap();
        assert_eq!((injection.header_name.as_str(), injection.header_value_env.as_str()), ("X-API-Key", "VMCP_HEADER_VALUE_DOCS_KEY"));
        let credential = discovered.env.iter().find(|e| e.name == "VMCP_HEADER_VALUE_DOCS_KEY").expect("the header's value as environment");
        assert_eq!(credential.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "docs");
        // "locked" names a config that does not exist: left out, with the reason.
        let locked = discovered.backends.iter().find(|b| b.config.name == "locked").unwrap();
        assert_eq!(locked.excluded.as_deref(), Some("its own MCPExternalAuthConfig x does not exist in this namespace"));
        assert_eq!(discovered.outgoing.len(), 1, "the others are called unauthenticated");

        // A backend's own entry, then the default, override what members name.
        let explicit = resolve(
            &vmcp(spec(
                json!({"source": "inline", "default": {"type": "externalAuthConfigRef", "externalAuthConfigRef": {"name": "idp-exchange"}},
                "backends": {"docs": {"type": "discovered"}}}),
            )),
            c.view(),
        );
        assert!(explicit.problems.is_empty(), "{:?}", explicit.problems);
        assert_eq!(explicit.outgoing["docs"].kind, "header_injection", "its entry says discovered: its own config");
        let exchange = explicit.outgoing["fetch"].token_exchange.as_ref().unwrap();
        assert_eq!(
            (exchange.token_url.as_str(), exchange.client_secret_env.as_str()),
            ("https://idp/token", "VMCP_TOKEN_EXCHANGE_SECRET_IDP_EXCHANGE")
        );
        assert_eq!(explicit.outgoing["locked"].kind, "token_exchange", "the default replaces what it names itself");
        assert_eq!(
            explicit.env.iter().filter(|e| e.name == "VMCP_TOKEN_EXCHANGE_SECRET_IDP_EXCHANGE").count(),
            1,
            "one variable per config"
        );

        // What the VirtualMCPServer names and cannot be used stops it, with the path.
        for (name, why) in
            [("gone", "MCPExternalAuthConfig gone does not exist in this namespace"), ("signed", "MCPExternalAuthConfig signed: ")]
        {
            let r = resolve(
                &vmcp(spec(
                    json!({"source": "inline", "backends": {"fetch": {"type": "externalAuthConfigRef", "externalAuthConfigRef": {"name": name}}}}),
                )),
                c.view(),
            );
            assert_eq!(r.problems.len(), 1, "{name}: {:?}", r.problems);
            let problem = r.problems[0].to_string();
            assert!(problem.starts_with(&format!("spec.outgoingAuth.backends.fetch.externalAuthConfigRef: {why}")), "{problem}");
        }
    }

    #[test]
    fn a_shared_cedar_authz_config_reaches_the_file_and_any_other_stops_the_server() {
        let c = caches();
        let spec = |auth: serde_json::Value| json!({"groupRef": {"name": "g"}, "incomingAuth": auth});
        let shared = resolve(&vmcp(spec(json!({"type": "anonymous", "authzConfigRef": {"name": "team-policy"}}))), c.view());
        assert!(shared.problems.is_empty(), "{:?}", shared.problems);
        let authz = shared.incoming_auth.authz.as_ref().unwrap();
        assert_eq!((authz.kind, authz.policies.len(), authz.entities_json.as_str()), ("cedar", 1, "[]"));
        assert_eq!(authz.group_claim_name, "https://example.com/groups");
        for (name, why) in [
            ("gone", "MCPAuthzConfig gone does not exist in this namespace"),
            ("pdp", "MCPAuthzConfig pdp is of type httpv1: the vMCP authorizes with Cedar policies only (cedarv1)"),
            ("empty", "MCPAuthzConfig empty is invalid: spec.config.policies"),
        ] {
            let r = resolve(&vmcp(spec(json!({"type": "anonymous", "authzConfigRef": {"name": name}}))), c.view());
            assert!(r.incoming_auth.authz.is_none(), "{name}");
            assert_eq!(r.problems.len(), 1, "{name}: {:?}", r.problems);
            assert!(r.problems[0].to_string().starts_with(&format!("spec.incomingAuth.authzConfigRef: {why}")), "{:?}", r.problems);
        }
        // Inline policies keep the claim mapping given beside them.
        let inline = resolve(
            &vmcp(spec(
                json!({"type": "anonymous", "authzConfig": {"type": "inline", "inline": {"policies": ["permit(principal, action, resource);"]},
                "roleClaimName": "roles", "groupEntityType": "Team"}}),
            )),
            c.view(),
        );
        let authz = inline.incoming_auth.authz.as_ref().unwrap();
        assert_eq!((authz.role_claim_name.as_str(), authz.group_entity_type.as_str()), ("roles", "Team"));
    }

    #[test]
    fn cluster_tokens_get_the_cluster_s_ca_and_the_in_cluster_keys_without_an_api_token() {
        let mut c = caches();
        c.oidc = store(vec![json!({"metadata": meta("cluster"), "spec": {"type": "kubernetesServiceAccount",
            "kubernetesServiceAccount": {"issuer": "https://kubernetes.default.svc.cluster.local"}}})]);
        let spec =
            json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "oidc", "oidcConfigRef": {"name": "cluster", "audience": "team"}}});
        let r = resolve(&vmcp(spec), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let oidc = r.incoming_auth.oidc.as_ref().unwrap();
        assert_eq!(oidc.jwks_url, "https://kubernetes.default.svc/openid/v1/jwks");
        assert_eq!(oidc.ca_bundle_path, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
        let (volume, mount) = &r.volumes[0];
        assert_eq!(volume.config_map.as_ref().map(|c| c.name.as_str()), Some("kube-root-ca.crt"));
        assert_eq!(mount.mount_path, "/var/run/secrets/kubernetes.io/serviceaccount");
    }

    #[test]
    fn named_definitions_join_the_inline_composite_tools_or_fail_the_server() {
        let c = caches();
        let spec = |refs: serde_json::Value| {
            json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"},
                "config": {"compositeTools": [{"name": "own", "description": "d", "steps": [{"id": "a", "tool": "fetch.fetch"}]}],
                    "compositeToolRefs": refs}})
        };
        let r = resolve(&vmcp(spec(json!([{"name": "fetch-twice"}]))), c.view());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.user.composite_tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["own", "fetch_twice"]);
        let r =
            resolve(&vmcp(spec(json!([{"name": "broken"}, {"name": "gone"}, {"name": "fetch-twice"}, {"name": "fetch-twice"}]))), c.view());
        let found: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with(
                "spec.config.compositeToolRefs[0]: VirtualMCPCompositeToolDefinition broken cannot run: spec.steps: the steps depend"
            ),
            "{found:?}"
        );
        assert_eq!(found[1], "spec.config.compositeToolRefs[1]: VirtualMCPCompositeToolDefinition gone does not exist in this namespace");
        assert_eq!(found[2], "spec.config.compositeToolRefs[1] (gone): \"fetch_twice\" names an earlier composite tool");
    }

    #[test]
    fn what_is_missing_or_refused_is_a_problem_with_its_path() {
        let c = caches();
        let spec = json!({"groupRef": {"name": "nope"}, "incomingAuth": {"type": "oidc", "oidcConfigRef": {"name": "gone", "audience": "a"}},
            "config": {"codeMode": {}}});
        let r = resolve(&vmcp(spec), c.view());
        let paths: Vec<&str> = r.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["spec.config.codeMode", "spec.groupRef", "spec.incomingAuth.oidcConfigRef"]);
        assert!(r.backends.is_empty());
    }
}
