//! The tenancy policy: which namespaces may hold MCPServers and, per namespace (with
//! a cluster-wide default), which images, transports, counts, resources and pod
//! features are allowed. Loaded from YAML/JSON; an invalid file is rejected with the
//! exact field at fault and the last good policy stays in force.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::image::RegistryRule;
use crate::runtime::metrics::Metrics;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The policy in force, replaced whole when the file changes.
pub type SharedPolicy = Arc<RwLock<Arc<TenancyPolicy>>>;

pub fn shared(policy: TenancyPolicy) -> SharedPolicy {
    Arc::new(RwLock::new(Arc::new(policy)))
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading tenancy policy {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tenancy policy: {0}")]
    Syntax(#[from] serde_yaml_ng::Error),
    #[error("tenancy policy is empty; write `{{}}` for a policy with no restrictions")]
    Empty,
    #[error("invalid tenancy policy: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Where the JSON schema of the policy file is committed (`make crds` rewrites it).
pub const SCHEMA_FILE: &str = "config/tenancy-policy.schema.json";

/// The JSON schema of the policy file, generated from these types.
pub fn schema_json() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(TenancyPolicy)).expect("schema serialises");
    schema["title"] = serde_json::json!("toolhive-operator tenancy policy");
    schema["description"] =
        serde_json::json!("The file given to --tenancy-policy (the chart renders it from the Helm value tenancy.policy).");
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenancyPolicy {
    /// Namespaces that may hold MCPServers. Empty means every namespace the operator watches.
    #[serde(default)]
    pub allowed_namespaces: Vec<String>,
    /// Who to ask for access; shown in denials.
    #[serde(default)]
    pub contact: String,
    /// Rules for every namespace without its own entry.
    #[serde(default)]
    pub defaults: Rules,
    /// Per-namespace rules; each field left out falls back to the namespace's tenant,
    /// then to `defaults`.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Rules>,
    /// Tenants: a team's namespaces picked by label, with rules of their own (between
    /// `defaults` and a namespace's own entry) and a quota across all of them. A
    /// namespace several tenants select belongs to the first.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// `namespaces` merged over `defaults`, built once when the file is loaded so a
    /// request never merges or clones rules.
    #[serde(skip)]
    #[schemars(skip)]
    effective: BTreeMap<String, Rules>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    /// Registry hosts or host/repository prefixes, e.g. "ghcr.io/acme". Unset: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_registries: Option<Vec<String>>,
    /// Allowed spec.transport values. Unset: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_transports: Option<Vec<String>>,
    /// Hosts an MCPRemoteProxy's spec.remoteUrl may name: a host as written
    /// ("mcp.example.com"), or every subdomain of one ("*.example.com"). Unset: any
    /// (loopback, link-local, metadata and API server hosts are refused regardless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_remote_hosts: Option<Vec<String>>,
    /// Most MCPServers the namespace may hold. Unset: no limit.
    #[serde(default, rename = "maxMCPServers", skip_serializing_if = "Option::is_none")]
    pub max_mcp_servers: Option<u32>,
    /// Defaults and ceilings for the proxy container (spec.resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_resources: Option<ResourcePolicy>,
    /// Defaults and ceilings for the `mcp` container (spec.podTemplateSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_resources: Option<ResourcePolicy>,
    /// No effect: spec.volumes (host path mounts) is refused in every namespace by this
    /// release. Kept so policy files that set it still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_path_volumes: Option<bool>,
    /// Exceptions: pod features spec.podTemplateSpec may use. Default: none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurity>,
    /// The Pod Security Standard spec.podTemplateSpec must meet: privileged, baseline
    /// (the default) or restricted. A `podSecurity` exception allows its feature at any level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_standard: Option<super::pod_security::Level>,
    /// Value of the `toolhive.stacklok.dev/team` label the mutating webhook adds.
    /// Unset: the namespace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// How each tenancy rule is applied, to roll a policy out: enforce (refused, the
    /// default), warn (admitted, with a warning kubectl prints) or audit (admitted and
    /// counted). Stored MCPServers are checked again whenever the policy changes and
    /// get a PolicyCompliant condition. Rules that keep the operator itself safe (spec
    /// shape, removed and unsupported fields, size, ServiceAccount, image syntax) are
    /// always enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// `allowed_registries` parsed, filled when the policy is loaded (None: not yet).
    #[serde(skip)]
    #[schemars(skip)]
    parsed_registries: Option<Vec<RegistryRule>>,
}

impl Rules {
    /// The allowed registries as parsed rules (parsed at load; parsed here only for
    /// rules built in code). An entry that does not parse allows nothing.
    pub fn registry_rules(&self) -> Cow<'_, [RegistryRule]> {
        match &self.parsed_registries {
            Some(parsed) => Cow::Borrowed(parsed),
            None => Cow::Owned(self.allowed_registries.iter().flatten().filter_map(|r| RegistryRule::parse(r).ok()).collect()),
        }
    }

    fn with_parsed_registries(mut self) -> Self {
        self.parsed_registries = Some(self.registry_rules().into_owned());
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// Named in denials.
    pub name: String,
    /// The tenant's namespaces (among those the operator serves), by their labels.
    pub namespace_selector: LabelSelector,
    /// Rules for the tenant's namespaces; each field left out falls back to `defaults`.
    #[serde(default)]
    pub rules: Rules,
    /// Most MCPServers all the tenant's namespaces may hold together (each namespace's
    /// own `maxMCPServers` still applies). Unset: no limit.
    #[serde(default, rename = "maxMCPServers", skip_serializing_if = "Option::is_none")]
    pub max_mcp_servers: Option<u32>,
    /// `rules` merged over `defaults`, at load.
    #[serde(skip)]
    #[schemars(skip)]
    effective: Option<Rules>,
}

impl Tenant {
    /// Whether `labels` (a namespace's) are the tenant's.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let s = &self.namespace_selector;
        let by_label = s.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
        by_label
            && s.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                    "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                    "Exists" => labels.contains_key(&e.key),
                    "DoesNotExist" => !labels.contains_key(&e.key),
                    _ => false,
                }
            })
    }
}

/// How a tenancy rule is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A create or update that breaks the rule is refused.
    #[default]
    Enforce,
    /// Admitted, with an admission warning naming the field and the rule.
    Warn,
    /// Admitted; counted in toolhive_admission_decisions_total{decision="audited"} and
    /// written as an audit annotation.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// The mode of each tenancy rule; a rule left out is enforced. Per namespace, each
/// field left out falls back to `defaults.enforcement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Enforcement {
    /// allowedNamespaces (read from `defaults` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Mode>,
    /// allowedRegistries, for spec.image and the pod template's images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Mode>,
    /// allowedTransports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Mode>,
    /// allowedRemoteHosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<Mode>,
    /// maxMCPServers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Mode>,
    /// proxyResources and mcpResources ceilings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Mode>,
    /// podSecurityStandard and podSecurity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<Mode>,
}

impl Enforcement {
    fn over(&self, base: &Enforcement) -> Enforcement {
        Enforcement {
            namespace: self.namespace.or(base.namespace),
            registry: self.registry.or(base.registry),
            transport: self.transport.or(base.transport),
            remote_host: self.remote_host.or(base.remote_host),
            quota: self.quota.or(base.quota),
            resources: self.resources.or(base.resources),
            pod_security: self.pod_security.or(base.pod_security),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePolicy {
    /// Filled in when the MCPServer leaves them out.
    #[serde(default)]
    pub defaults: Quantities,
    /// Requests and limits above these are denied.
    #[serde(default)]
    pub max: ResourceAmounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    #[serde(default)]
    pub requests: ResourceAmounts,
    #[serde(default)]
    pub limits: ResourceAmounts,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurity {
    #[serde(default)]
    pub allow_privileged: bool,
    #[serde(default)]
    pub allow_host_namespaces: bool,
    #[serde(default)]
    pub allow_host_path: bool,
    #[serde(default)]
    pub allow_added_capabilities: bool,
    #[serde(default)]
    pub allow_run_as_root: bool,
}

impl ResourceAmounts {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// Loads the policy file; no file means the permissive default.
pub fn load(path: Option<&Path>) -> Result<TenancyPolicy, PolicyError> {
    match path {
        None => Ok(TenancyPolicy::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read { path: p.to_path_buf(), source })?;
            TenancyPolicy::from_text(&text)
        }
    }
}

/// Re-reads the policy every `poll`; an invalid file is reported and the last good
/// policy stays. Each new policy in force bumps `changes`.
pub async fn watch(path: PathBuf, shared: SharedPolicy, poll: Duration, metrics: Metrics, changes: tokio::sync::watch::Sender<u64>) {
    let mut last_text = std::fs::read_to_string(&path).ok();
    loop {
        tokio::time::sleep(poll).await;
        let text = std::fs::read_to_string(&path).ok();
        if text == last_text {
            continue;
        }
        last_text = text;
        match load(Some(&path)) {
            Ok(p) => {
                *shared.write() = Arc::new(p);
                changes.send_modify(|n| *n += 1);
                metrics.policy_reloads.with_label_values(&["success"]).inc();
                info!(path = %path.display(), "tenancy policy reloaded");
            }
            Err(e) => {
                metrics.policy_reloads.with_label_values(&["error"]).inc();
                warn!(path = %path.display(), error = %e, "tenancy policy rejected; keeping the last good one");
            }
        }
    }
}

impl TenancyPolicy {
    /// Parses and checks a policy file; errors name the field at fault.
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        // An empty file, `null`, `---` or a key with no value is a mistake, never
        // "allow everything": that takes an explicit `{}`.
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)? {
            serde_yaml_ng::Value::Null => return Err(PolicyError::Empty),
            serde_yaml_ng::Value::Mapping(top) => {
                let unset: Vec<String> =
                    top.iter().filter(|(_, v)| v.is_null()).map(|(k, _)| format!("{}: has no value", k.as_str().unwrap_or("?"))).collect();
                if !unset.is_empty() {
                    return Err(PolicyError::Invalid(unset));
                }
            }
            _ => {}
        }
        let mut policy: TenancyPolicy = serde_yaml_ng::from_str(text)?;
        policy.check()?;
        policy.defaults = std::mem::take(&mut policy.defaults).with_parsed_registries();
        policy.effective = policy.namespaces.keys().map(|ns| (ns.clone(), policy.merged(ns).with_parsed_registries())).collect();
        for i in 0..policy.tenants.len() {
            policy.tenants[i].effective = Some(policy.tenants[i].rules.over(&policy.defaults).with_parsed_registries());
        }
        Ok(policy)
    }

    fn check(&self) -> Result<(), PolicyError> {
        let mut problems = Vec::new();
        for ns in &self.allowed_namespaces {
            if !crate::shared::config::is_dns1123_label(ns) {
                problems.push(format!("allowedNamespaces: {ns:?} is not a valid namespace name"));
            }
        }
        let mut all = vec![("defaults".to_string(), &self.defaults)];
        all.extend(self.namespaces.iter().map(|(k, v)| (format!("namespaces.{k}"), v)));
        all.extend(self.tenants.iter().enumerate().map(|(i, t)| (format!("tenants[{i}].rules"), &t.rules)));
        for (i, tenant) in self.tenants.iter().enumerate() {
            let path = format!("tenants[{i}]");
            if tenant.name.is_empty() || self.tenants[..i].iter().any(|t| t.name == tenant.name) {
                problems.push(format!("{path}.name: {:?} must be a name no other tenant has", tenant.name));
            }
            if tenant.rules.team.is_some() {
                // The chart's MutatingAdmissionPolicy fills the label in by namespace name.
                problems.push(format!("{path}.rules.team: set team per namespace (namespaces.<name>.team) or in defaults"));
            }
            let s = &tenant.namespace_selector;
            if s.match_labels.as_ref().is_none_or(BTreeMap::is_empty) && s.match_expressions.as_ref().is_none_or(Vec::is_empty) {
                problems.push(format!("{path}.namespaceSelector: an empty selector would take every namespace; name labels"));
            }
            for (j, e) in s.match_expressions.iter().flatten().enumerate() {
                let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
                let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
                if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&e.operator.as_str()) || needs_values != has_values {
                    problems.push(format!(
                        "{path}.namespaceSelector.matchExpressions[{j}]: operator {:?} must be In or NotIn with values, or Exists or DoesNotExist without",
                        e.operator
                    ));
                }
            }
        }
        for (path, rules) in all {
            for r in rules.allowed_registries.iter().flatten() {
                if let Err(e) = RegistryRule::parse(r) {
                    problems.push(format!("{path}.allowedRegistries: {e}"));
                }
            }
            for h in rules.allowed_remote_hosts.iter().flatten() {
                if crate::webhook::remote_proxy::HostPattern::parse(h).is_none() {
                    problems.push(format!("{path}.allowedRemoteHosts: {h:?} is not a host name or *.<domain>"));
                }
            }
            for t in rules.allowed_transports.iter().flatten() {
                if !["stdio", "streamable-http", "sse"].contains(&t.as_str()) {
                    problems.push(format!("{path}.allowedTransports: {t:?} is not one of stdio, streamable-http, sse"));
                }
            }
            for (which, rp) in [("proxyResources", &rules.proxy_resources), ("mcpResources", &rules.mcp_resources)] {
                let Some(rp) = rp else { continue };
                for (sub, amounts) in
                    [("defaults.requests", &rp.defaults.requests), ("defaults.limits", &rp.defaults.limits), ("max", &rp.max)]
                {
                    for (res, q) in [("cpu", &amounts.cpu), ("memory", &amounts.memory)] {
                        if let Some(q) = q
                            && let Err(e) = crate::shared::quantity::parse(q)
                        {
                            problems.push(format!("{path}.{which}.{sub}.{res}: {e}"));
                        }
                    }
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(PolicyError::Invalid(problems)) }
    }

    /// The effective rules for a namespace: its own entry over the defaults, field by
    /// field (merged at load; merged here only for a policy built in code).
    pub fn rules_for(&self, namespace: &str) -> Cow<'_, Rules> {
        if let Some(rules) = self.effective.get(namespace) {
            return Cow::Borrowed(rules);
        }
        if !self.namespaces.contains_key(namespace) {
            return Cow::Borrowed(&self.defaults);
        }
        Cow::Owned(self.merged(namespace))
    }

    /// The effective rules for a namespace with `labels`, and its tenant: its own
    /// entry, over its tenant's rules, over the defaults.
    pub fn rules_in(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> (Cow<'_, Rules>, Option<&Tenant>) {
        let Some(tenant) = labels.and_then(|l| self.tenants.iter().find(|t| t.selects(l))) else {
            return (self.rules_for(namespace), None);
        };
        let base = match &tenant.effective {
            Some(rules) => Cow::Borrowed(rules),
            None => Cow::Owned(tenant.rules.over(&self.defaults)),
        };
        let rules = match self.namespaces.get(namespace) {
            Some(own) => Cow::Owned(own.over(&base).with_parsed_registries()),
            None => base,
        };
        (rules, Some(tenant))
    }

    fn merged(&self, namespace: &str) -> Rules {
        match self.namespaces.get(namespace) {
            Some(own) => own.over(&self.defaults),
            None => self.defaults.clone(),
        }
    }
}

impl Rules {
    /// These rules, each field left out taken from `d`.
    fn over(&self, d: &Rules) -> Rules {
        let n = self;
        Rules {
            allowed_registries: n.allowed_registries.clone().or_else(|| d.allowed_registries.clone()),
            allowed_transports: n.allowed_transports.clone().or_else(|| d.allowed_transports.clone()),
            allowed_remote_hosts: n.allowed_remote_hosts.clone().or_else(|| d.allowed_remote_hosts.clone()),
            max_mcp_servers: n.max_mcp_servers.or(d.max_mcp_servers),
            proxy_resources: n.proxy_resources.clone().or_else(|| d.proxy_resources.clone()),
            mcp_resources: n.mcp_resources.clone().or_else(|| d.mcp_resources.clone()),
            allow_host_path_volumes: n.allow_host_path_volumes.or(d.allow_host_path_volumes),
            pod_security: n.pod_security.clone().or_else(|| d.pod_security.clone()),
            pod_security_standard: n.pod_security_standard.or(d.pod_security_standard),
            team: n.team.clone().or_else(|| d.team.clone()),
            enforcement: match (&n.enforcement, &d.enforcement) {
                (Some(own), Some(base)) => Some(own.over(base)),
                (own, base) => own.clone().or_else(|| base.clone()),
            },
            parsed_registries: None,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn committed_schema_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tenancy-policy.schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed == schema_json(), "{SCHEMA_FILE} is stale: run `make crds` and commit the result");
    }

    #[test]
    fn examples_satisfy_the_schema_types() {
        for file in ["tenancy-policy.example.yaml", "tenancy-policy.minimal.yaml"] {
            let text = std::fs::read_to_string(format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            TenancyPolicy::from_text(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    use super::*;

    #[test]
    fn example_policies_load() {
        for file in ["tenancy-policy.example.yaml", "tenancy-policy.minimal.yaml"] {
            let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            TenancyPolicy::from_text(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn invalid_policy_names_the_field() {
        let error = |text: &str| TenancyPolicy::from_text(text).unwrap_err().to_string();
        for empty in ["", "null", "---", "contact:", "defaults:"] {
            assert!(TenancyPolicy::from_text(empty).is_err(), "{empty:?} is not a policy");
        }
        assert!(TenancyPolicy::from_text("{}").is_ok(), "an explicit empty policy");
        let err = error("defaults:\n  allowedRegistries: [acme]\n");
        assert!(err.contains("defaults.allowedRegistries"), "{err}");
        let err2 = error("namespaces:\n  a:\n    mcpResources:\n      max: {cpu: lots}\n");
        assert!(err2.contains("namespaces.a.mcpResources.max.cpu"), "{err2}");
        let err3 = error("defaults:\n  allowedRegistry: [ghcr.io]\n");
        assert!(err3.contains("unknown field"), "{err3}");
        let err4 = error("defaults:\n  allowedTransports: [tcp]\n");
        assert!(err4.contains("tcp"), "{err4}");
    }

    #[test]
    fn namespace_rules_override_defaults_per_field() {
        let p =
            TenancyPolicy::from_text("defaults: {allowedRegistries: [ghcr.io], maxMCPServers: 5}\nnamespaces:\n  a: {maxMCPServers: 1}\n")
                .unwrap();
        let a = p.rules_for("a");
        assert_eq!(a.max_mcp_servers, Some(1));
        assert_eq!(a.allowed_registries, Some(vec!["ghcr.io".to_string()]));
        assert_eq!(p.rules_for("b").max_mcp_servers, Some(5));
    }

    #[test]
    fn a_tenant_needs_a_name_of_its_own_and_a_selector_that_selects() {
        let err = TenancyPolicy::from_text(
            "tenants:\n- {name: a, namespaceSelector: {}}\n- {name: a, namespaceSelector: {matchExpressions: [{key: team, operator: In}]}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tenants[0].namespaceSelector: an empty selector would take every namespace"), "{err}");
        assert!(err.contains("tenants[1].name: \"a\" must be a name no other tenant has"), "{err}");
        assert!(err.contains("tenants[1].namespaceSelector.matchExpressions[0]: operator \"In\" must be In or NotIn with values"), "{err}");
        let ok = TenancyPolicy::from_text(
            "tenants:\n- {name: a, namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [x]}, {key: tier, operator: Exists}]}}\n",
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        assert!(ok.tenants[0].selects(&labels(&[("tier", "gold")])));
        assert!(!ok.tenants[0].selects(&labels(&[("tier", "gold"), ("team", "x")])));
        assert!(!ok.tenants[0].selects(&labels(&[("team", "y")])));
    }
}
