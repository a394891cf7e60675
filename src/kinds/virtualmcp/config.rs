//! The vMCP's configuration file (`config.yaml` in its ConfigMap): what the user
//! wrote in `spec.config` that this operator carries out (aggregation, operational
//! settings, metadata), checked field by field, plus what the operator resolves:
//! the name, the group, the backends it found, incoming and outgoing auth.
//!
//! The backends are listed in the file (the vMCP's static mode) rather than
//! discovered by the vMCP pod through the API: the pod then needs no read access to
//! the namespace's Secrets, ConfigMaps or MCP objects, only to its own status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::virtualmcp::composite::CompositeTool;
use crate::shared::problem::Problem;

/// The part of `spec.config` this operator carries out. Unknown fields are refused
/// by name (`parse`), so a field added upstream is never silently dropped.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    /// Replaced by the object's name, as the reference does.
    #[serde(default, skip_serializing)]
    pub name: Option<String>,
    /// Must match spec.groupRef when given.
    #[serde(default, rename = "groupRef", skip_serializing)]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operational: Option<Operational>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Read apart (`composite::parse`), each checked with its path; then those of
    /// the definitions named in `composite_tool_refs` (`resolve`).
    #[serde(skip)]
    pub composite_tools: Vec<CompositeTool>,
    /// VirtualMCPCompositeToolDefinitions of this namespace, by name.
    #[serde(default, skip_serializing)]
    pub composite_tool_refs: Vec<CompositeToolRef>,
    /// The tool optimizer: the vMCP serves find_tool and call_tool in place of the
    /// backends' tools, searching them by meaning through an embedding service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<Optimizer>,
    /// From the MCPTelemetryConfig spec.telemetryConfigRef names (`resolve`); the
    /// inline `spec.config.telemetry` is refused, as the reference no longer reads it.
    #[serde(skip)]
    pub telemetry: Option<crate::kinds::telemetry::RunnerTelemetry>,
    /// Audit logging of the MCP operations the vMCP serves, to its standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::audit::Audit>,
    /// Header names forwarded from callers' requests to every backend
    /// (spec.passthroughHeaders, when set, replaces these: `resolve`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_headers: Vec<String>,
}

/// The tool optimizer's settings. Its embedding service is an EmbeddingServer
/// (spec.embeddingServerRef; the operator writes its URL) or a URL given here.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Optimizer {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embedding_service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_service_timeout: Option<GoDuration>,
    /// Only the text-embeddings-inference API (an EmbeddingServer's) is carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_provider: Option<EmbeddingProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tools_to_return: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hybrid_search_semantic_ratio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_distance_threshold: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingProvider {
    #[serde(rename = "tei")]
    Tei,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompositeToolRef {
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregation {
    pub conflict_resolution: ConflictResolution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_resolution_config: Option<ConflictResolutionConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WorkloadTools>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_all_tools: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConflictResolution {
    Prefix,
    Priority,
    Manual,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConflictResolutionConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priority_order: Vec<String>,
}

/// Which of one backend's tools are served, and under what names.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTools {
    pub workload: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, ToolOverride>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_all: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolOverride {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operational {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_handling: Option<FailureHandling>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_workload: BTreeMap<String, GoDuration>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureHandling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_failure_mode: Option<PartialFailureMode>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartialFailureMode {
    Fail,
    #[serde(rename = "best_effort")]
    BestEffort,
}

/// A duration as Go writes one ("30s", "1m30s", "500ms"): checked here, so a typo
/// fails the object with its path instead of the vMCP pod at start.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct GoDuration(String);

impl TryFrom<String> for GoDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let mut rest = text.as_str();
        if rest.is_empty() {
            return Err("an empty duration; write one such as 30s or 1m30s".into());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            if number.is_empty() || number.parse::<f64>().is_err() || !["ns", "us", "µs", "ms", "s", "m", "h"].contains(&unit) {
                return Err(format!("{text:?} is not a duration; write one such as 30s, 1m30s or 500ms"));
            }
            rest = tail;
        }
        Ok(GoDuration(text))
    }
}

impl From<GoDuration> for String {
    fn from(d: GoDuration) -> String {
        d.0
    }
}

/// The keys of `spec.config` this operator release does not carry out, with why.
const NOT_CARRIED_OUT: &[(&str, &str)] = &[
    ("backends", "static backends are found by the operator from spec.groupRef; remove it"),
    ("incomingAuth", "set spec.incomingAuth instead"),
    ("outgoingAuth", "set spec.outgoingAuth instead"),
    ("telemetry", "set spec.telemetryConfigRef to an MCPTelemetryConfig instead (the inline telemetry is not read)"),
    ("codeMode", "code mode is not carried out by this operator release; remove it"),
    ("sessionStorage", "shared session storage for the vMCP is not carried out by this operator release; remove it"),
    ("rateLimiting", "rate limiting of the vMCP is not carried out by this operator release; remove it"),
];

/// `spec.config` read into what is carried out, or every problem with it, each with
/// its field path. `group` is spec.groupRef's name.
pub fn parse(config: Option<&Value>, group: &str) -> Result<UserConfig, Vec<Problem>> {
    let Some(config) = config else { return Ok(UserConfig::default()) };
    let Some(fields) = config.as_object() else {
        return Err(vec![Problem::at("spec.config", "must be an object")]);
    };
    let mut problems: Vec<Problem> = fields
        .keys()
        .filter_map(|k| NOT_CARRIED_OUT.iter().find(|(name, _)| name == k))
        .map(|(name, why)| Problem::at(format!("spec.config.{name}"), *why))
        .collect();
    let carried: serde_json::Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| *k != "compositeTools" && !NOT_CARRIED_OUT.iter().any(|(name, _)| name == k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut composite_tools = Vec::new();
    match fields.get("compositeTools") {
        None => {}
        Some(Value::Array(tools)) => {
            for (i, tool) in tools.iter().enumerate() {
                match crate::kinds::virtualmcp::composite::parse(tool, &format!("spec.config.compositeTools[{i}]")) {
                    Ok(tool) => composite_tools.push(tool),
                    Err(found) => problems.extend(found),
                }
            }
        }
        Some(_) => problems.push(Problem::at("spec.config.compositeTools", "must be a list of tools")),
    }
    let parsed = match crate::shared::problem::typed::<UserConfig>(&Value::Object(carried), "spec.config") {
        Ok(parsed) => Some(UserConfig { composite_tools, ..parsed }),
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    if let Some(parsed) = &parsed {
        problems.extend(check(parsed, group));
    }
    match parsed {
        Some(parsed) if problems.is_empty() => Ok(parsed),
        _ => Err(problems),
    }
}

/// The composite tools whose names an earlier one has, as problems (`source` says
/// where the i-th tool comes from).
pub fn duplicate_tool_names(tools: &[CompositeTool], source: impl Fn(usize) -> String) -> Vec<Problem> {
    let mut names = std::collections::BTreeSet::new();
    let twice = tools.iter().enumerate().filter(|(_, tool)| !names.insert(tool.name.as_str()));
    twice.map(|(i, tool)| Problem::at(source(i), format!("{:?} names an earlier composite tool", tool.name))).collect()
}

/// What the types cannot say: the rules between fields.
fn check(config: &UserConfig, group: &str) -> Vec<Problem> {
    let mut problems = duplicate_tool_names(&config.composite_tools, |i| format!("spec.config.compositeTools[{i}].name"));
    if let Some(named) = config.group.as_deref().filter(|g| *g != group) {
        problems.push(Problem::at("spec.config.groupRef", format!("names group {named:?} but spec.groupRef names {group:?}; remove it")));
    }
    if let Some(agg) = &config.aggregation {
        let priority = agg.conflict_resolution_config.as_ref().map(|c| c.priority_order.as_slice()).unwrap_or_default();
        if agg.conflict_resolution == ConflictResolution::Priority && priority.is_empty() {
            problems.push(Problem::at(
                "spec.config.aggregation.conflictResolutionConfig.priorityOrder",
                "required when conflictResolution is priority: list the backends, first wins",
            ));
        }
        for (i, tools) in agg.tools.iter().enumerate() {
            if tools.workload.is_empty() {
                problems.push(Problem::at(format!("spec.config.aggregation.tools[{i}].workload"), "required: name the backend"));
            }
        }
    }
    if let Some(optimizer) = &config.optimizer {
        problems.extend(optimizer_problems(optimizer));
    }
    if let Some(audit) = &config.audit {
        problems.extend(super::audit::problems(audit));
    }
    problems.extend(super::headers::passthrough_problems(&config.passthrough_headers, "spec.config.passthroughHeaders"));
    if let Some(level) =
        config.operational.as_ref().map(|o| o.log_level.as_str()).filter(|l| !l.is_empty() && *l != "debug" && *l != "info")
    {
        problems.push(Problem::at("spec.config.operational.logLevel", format!("{level:?}: use debug or info")));
    }
    problems
}

/// The optimizer's numbers within the ranges the vMCP accepts.
fn optimizer_problems(optimizer: &Optimizer) -> Vec<Problem> {
    let mut problems = Vec::new();
    if optimizer.max_tools_to_return.is_some_and(|n| !(1..=50).contains(&n)) {
        problems.push(Problem::at("spec.config.optimizer.maxToolsToReturn", "must be from 1 to 50"));
    }
    let ranges = [
        ("hybridSearchSemanticRatio", &optimizer.hybrid_search_semantic_ratio, 1.0, "0 (keyword search only) to 1 (meaning only)"),
        ("semanticDistanceThreshold", &optimizer.semantic_distance_threshold, 2.0, "0 (identical) to 2 (unrelated)"),
    ];
    for (field, value, max, range) in ranges {
        let Some(text) = value else { continue };
        let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
        if !plain || text.parse::<f64>().map_or(true, |v| v > max) {
            problems.push(Problem::at(format!("spec.config.optimizer.{field}"), format!("{text:?}: write a number from {range}")));
        }
    }
    if let Some(url) = Some(optimizer.embedding_service.as_str()).filter(|u| !u.is_empty())
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.push(Problem::at("spec.config.optimizer.embeddingService", format!("{url:?}: write an http:// or https:// URL")));
    }
    problems
}

/// One backend the vMCP calls, as its configuration file lists it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StaticBackend {
    pub name: String,
    pub url: String,
    pub transport: String,
    /// "entry" for an MCPServerEntry (reached directly); empty for a proxy.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// How the vMCP authenticates to one backend, in its configuration file's field
/// names; credentials reach it as environment variables named here.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendStrategy {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_injection: Option<HeaderInjection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchange>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderInjection {
    pub header_name: String,
    pub header_value_env: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenExchange {
    pub token_url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_secret_env: String,
    pub audience: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject_token_type: String,
}

/// The file's outgoing auth: every backend unauthenticated but those in `backends`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct OutgoingAuthFile {
    pub source: &'static str,
    pub default: BackendStrategy,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendStrategy>,
}

impl OutgoingAuthFile {
    pub fn with(backends: BTreeMap<String, BackendStrategy>) -> Self {
        let unauthenticated = BackendStrategy { kind: "unauthenticated", header_injection: None, token_exchange: None };
        Self { source: "inline", default: unauthenticated, backends }
    }
}

/// The vMCP's token validation, in its configuration file's field names.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Oidc {
    pub issuer: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_secret_env: String,
    pub audience: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(rename = "jwksUrl", skip_serializing_if = "String::is_empty")]
    pub jwks_url: String,
    #[serde(rename = "introspectionUrl", skip_serializing_if = "String::is_empty")]
    pub introspection_url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(rename = "protectedResourceAllowPrivateIp", skip_serializing_if = "std::ops::Not::not")]
    pub protected_resource_allow_private_ip: bool,
    #[serde(rename = "jwksAllowPrivateIp", skip_serializing_if = "std::ops::Not::not")]
    pub jwks_allow_private_ip: bool,
    #[serde(rename = "insecureAllowHttp", skip_serializing_if = "std::ops::Not::not")]
    pub insecure_allow_http: bool,
    #[serde(rename = "caBundlePath", skip_serializing_if = "String::is_empty")]
    pub ca_bundle_path: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Authz {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub policies: Vec<String>,
    #[serde(rename = "entitiesJson", skip_serializing_if = "String::is_empty")]
    pub entities_json: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group_claim_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role_claim_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group_entity_type: String,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct IncomingAuth {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Oidc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<Authz>,
}

/// The vMCP's whole configuration file.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmcpConfig {
    pub name: String,
    #[serde(rename = "groupRef")]
    pub group: String,
    pub backends: Vec<StaticBackend>,
    pub incoming_auth: IncomingAuth,
    pub outgoing_auth: OutgoingAuthFile,
    pub aggregation: Aggregation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operational: Option<Operational>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub composite_tools: Vec<CompositeTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<Optimizer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<crate::kinds::telemetry::RunnerTelemetry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::audit::Audit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passthrough_headers: Vec<String>,
}

/// The file `user` makes with anonymous callers, no backend and no outgoing auth,
/// read back (tests).
#[cfg(test)]
pub fn rendered(user: &UserConfig) -> Value {
    let text = render(
        "v",
        "g",
        user,
        vec![],
        IncomingAuth { kind: "anonymous", oidc: None, authz: None },
        OutgoingAuthFile::with(BTreeMap::new()),
    );
    serde_yaml_ng::from_str(&text).expect("the file reads back")
}

/// The aggregation when none is given: each tool named after its backend, as the reference does.
pub fn default_aggregation() -> Aggregation {
    Aggregation {
        conflict_resolution: ConflictResolution::Prefix,
        conflict_resolution_config: Some(ConflictResolutionConfig { prefix_format: "{workload}_".into(), priority_order: vec![] }),
        tools: vec![],
        exclude_all_tools: false,
    }
}

/// The configuration file's text.
pub fn render(
    name: &str,
    group: &str,
    user: &UserConfig,
    backends: Vec<StaticBackend>,
    incoming_auth: IncomingAuth,
    outgoing_auth: OutgoingAuthFile,
) -> String {
    let config = VmcpConfig {
        name: name.into(),
        group: group.into(),
        backends,
        incoming_auth,
        outgoing_auth,
        aggregation: user.aggregation.clone().unwrap_or_else(default_aggregation),
        operational: user.operational.clone(),
        metadata: user.metadata.clone(),
        composite_tools: user.composite_tools.clone(),
        optimizer: user.optimizer.clone(),
        telemetry: user.telemetry.clone(),
        // Off means no audit section: the vMCP audits whenever it finds one.
        audit: user.audit.clone().filter(|a| a.enabled),
        passthrough_headers: user.passthrough_headers.clone(),
    };
    serde_yaml_ng::to_string(&config).expect("the vMCP configuration serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_reference_s_example_settings_are_carried_out() {
        let config = json!({"aggregation": {"conflictResolution": "prefix", "conflictResolutionConfig": {"prefixFormat": "{workload}_"},
                "tools": [{"workload": "fetch", "filter": ["fetch"], "overrides": {"fetch": {"name": "get", "description": "GET a URL"}}}]},
            "operational": {"logLevel": "debug", "timeouts": {"default": "30s", "perWorkload": {"slow": "2m30s"}},
                "failureHandling": {"healthCheckInterval": "30s", "unhealthyThreshold": 3, "partialFailureMode": "best_effort"}},
            "groupRef": "g", "name": "ignored"});
        let parsed = parse(Some(&config), "g").unwrap();
        let text = render(
            "v",
            "g",
            &parsed,
            vec![],
            IncomingAuth { kind: "anonymous", oidc: None, authz: None },
            OutgoingAuthFile::with(BTreeMap::new()),
        );
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back["name"], "v");
        assert_eq!(back["groupRef"], "g");
        assert_eq!(back["aggregation"]["tools"][0]["overrides"]["fetch"]["name"], "get");
        assert_eq!(back["operational"]["timeouts"]["perWorkload"]["slow"], "2m30s");
        assert_eq!(back["operational"]["failureHandling"]["partialFailureMode"], "best_effort");
        assert_eq!(back["outgoingAuth"], json!({"source": "inline", "default": {"type": "unauthenticated"}}));
    }

    #[test]
    fn without_aggregation_tools_are_prefixed_with_their_backend() {
        let text = render(
            "v",
            "g",
            &UserConfig::default(),
            vec![],
            IncomingAuth { kind: "anonymous", oidc: None, authz: None },
            OutgoingAuthFile::with(BTreeMap::new()),
        );
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(
            back["aggregation"],
            json!({"conflictResolution": "prefix", "conflictResolutionConfig": {"prefixFormat": "{workload}_"}})
        );
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let problems = |config: Value| parse(Some(&config), "g").unwrap_err().into_iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let found =
            problems(json!({"codeMode": {}, "optimizer": {"maxToolsToReturn": 99}, "aggregation": {"conflictResolution": "priority"}}));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("spec.config.codeMode: code mode is not carried out"), "{found:?}");
        assert!(found[1].starts_with("spec.config.aggregation.conflictResolutionConfig.priorityOrder: required"), "{found:?}");
        assert!(found[2].starts_with("spec.config.optimizer.maxToolsToReturn: must be from 1 to 50"), "{found:?}");
        let found = problems(json!({"optimizer": {"embeddingProvider": "openai", "semanticDistanceThreshold": "3"}}));
        assert!(found[0].starts_with("spec.config.optimizer.embeddingProvider: unknown variant `openai`"), "{found:?}");
        let found = problems(json!({"optimizer": {"semanticDistanceThreshold": "3", "embeddingService": "embed:8080"}}));
        assert!(found[0].starts_with("spec.config.optimizer.semanticDistanceThreshold: \"3\": write a number from 0"), "{found:?}");
        assert!(found[1].starts_with("spec.config.optimizer.embeddingService: \"embed:8080\""), "{found:?}");
        let found = problems(json!({"operational": {"timeouts": {"default": "30 seconds"}}}));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.config.operational.timeouts.default: \"30 seconds\" is not a duration"), "{found:?}");
        let found = problems(json!({"aggregation": {"conflictResolution": "prefix", "unknownKnob": 1}}));
        assert!(found[0].starts_with("spec.config.aggregation.unknownKnob: unknown field `unknownKnob`"), "{found:?}");
        let found = problems(json!({"groupRef": "other"}));
        assert!(found[0].contains("names group \"other\" but spec.groupRef names \"g\""), "{found:?}");
        assert_eq!(
            problems(json!({"operational": {"logLevel": "trace"}})),
            ["spec.config.operational.logLevel: \"trace\": use debug or info"]
        );
        assert!(parse(None, "g").is_ok());
    }

    #[test]
    fn composite_tools_reach_the_file_and_their_names_are_unique() {
        let tool = json!({"name": "both", "description": "d", "steps": [{"id": "a", "tool": "x.y"}]});
        let parsed = parse(Some(&json!({"compositeTools": [tool]})), "g").unwrap();
        let text = render(
            "v",
            "g",
            &parsed,
            vec![],
            IncomingAuth { kind: "anonymous", oidc: None, authz: None },
            OutgoingAuthFile::with(BTreeMap::new()),
        );
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back["compositeTools"][0]["steps"][0]["tool"], "x.y");
        let twice = parse(Some(&json!({"compositeTools": [tool, tool]})), "g").unwrap_err();
        assert_eq!(twice[0].to_string(), "spec.config.compositeTools[1].name: \"both\" names an earlier composite tool");
        let bad = parse(
            Some(
                &json!({"compositeTools": [{"name": "t", "description": "d", "steps": [{"id": "a", "tool": "x.y", "dependsOn": ["a"]}]}]}),
            ),
            "g",
        );
        assert!(bad.unwrap_err()[0].to_string().contains("cycle: a -> a"));
    }

    #[test]
    fn durations_are_go_s() {
        for good in ["30s", "1m30s", "500ms", "1.5h", "2h45m"] {
            assert!(GoDuration::try_from(good.to_string()).is_ok(), "{good}");
        }
        for bad in ["", "30", "s", "1 m", "3d", "-1s"] {
            assert!(GoDuration::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
