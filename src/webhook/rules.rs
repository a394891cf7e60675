//! The validating rules: every tenancy violation of an MCPServer, each named by its
//! field path and the [`Rule`] it breaks, all at once.

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext};
use serde::Deserialize;
use serde_json::Value;

use super::counts::Ceiling;
use super::image::ImageRef;
use super::pod_security;
use super::policy::{Enforcement, Mode, ResourcePolicy, Rules, TenancyPolicy, Tenant};
use crate::kinds::mcpserver::api::REMOVED_FIELDS;
use crate::shared::config::Scope;
use crate::shared::quantity;

/// The container of the MCP server in `spec.podTemplateSpec`.
pub const MCP_CONTAINER: &str = "mcp";
/// The largest spec accepted, as JSON text: far above any real server, and a bound on
/// what a tenant can make the operator cache and hand to the runner.
pub const MAX_SPEC_BYTES: usize = 512 * 1024;
/// The largest `spec.podTemplateSpec`, as JSON text (it is also passed in a flag).
pub const MAX_POD_TEMPLATE_BYTES: usize = 128 * 1024;
/// The suffix of the proxy runners' ServiceAccounts, whose Role can create StatefulSets.
const RUNNER_ACCOUNT_SUFFIX: &str = "-proxy-runner";

/// Which rule a violation breaks. Its name is the `reason` label of
/// `toolhive_admission_decisions_total`, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Namespace,
    Spec,
    RemovedField,
    Size,
    Unsupported,
    ServiceAccount,
    Image,
    Registry,
    Transport,
    Quota,
    Resources,
    PodSecurity,
    /// An MCPRemoteProxy's remote URL: one the cluster must never reach on a tenant's
    /// behalf (always enforced).
    RemoteUrl,
    /// An MCPRemoteProxy's remote host, against the namespace's allowed hosts.
    RemoteHost,
}

impl Rule {
    /// How the rule is applied under `rules` (the namespace's) and `defaults` (for the
    /// namespace rule): the tenancy rules as the policy says, the rest always enforced.
    pub fn mode(self, rules: &Rules, defaults: &Rules) -> Mode {
        let of = |rules: &Rules, pick: fn(&Enforcement) -> Option<Mode>| rules.enforcement.as_ref().and_then(pick).unwrap_or_default();
        match self {
            Rule::Namespace => of(defaults, |e| e.namespace),
            Rule::Registry => of(rules, |e| e.registry),
            Rule::Transport => of(rules, |e| e.transport),
            Rule::RemoteHost => of(rules, |e| e.remote_host),
            Rule::Quota => of(rules, |e| e.quota),
            Rule::Resources => of(rules, |e| e.resources),
            Rule::PodSecurity => of(rules, |e| e.pod_security),
            Rule::Spec | Rule::RemovedField | Rule::Size | Rule::Unsupported | Rule::ServiceAccount | Rule::Image | Rule::RemoteUrl => {
                Mode::Enforce
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rule::Namespace => "namespace",
            Rule::Spec => "spec",
            Rule::RemovedField => "removed-field",
            Rule::Size => "size",
            Rule::Unsupported => "unsupported-field",
            Rule::ServiceAccount => "service-account",
            Rule::Image => "image",
            Rule::Registry => "registry",
            Rule::Transport => "transport",
            Rule::Quota => "quota",
            Rule::Resources => "resources",
            Rule::PodSecurity => "pod-security",
            Rule::RemoteUrl => "remote-url",
            Rule::RemoteHost => "remote-host",
        }
    }
}

/// The Kubernetes field-error type a violation is reported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    Forbidden,
    Invalid,
    Required,
    TooLong,
}

impl FieldError {
    fn as_str(self) -> &'static str {
        match self {
            FieldError::Forbidden => "Forbidden",
            FieldError::Invalid => "Invalid value",
            FieldError::Required => "Required value",
            FieldError::TooLong => "Too long",
        }
    }
}

/// One denial: where, what kind, what to change, and which rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub error: FieldError,
    pub detail: String,
    pub rule: Rule,
}

impl Violation {
    pub(super) fn new(field: impl Into<String>, error: FieldError, rule: Rule, detail: impl Into<String>) -> Self {
        Self { field: field.into(), error, detail: detail.into(), rule }
    }

    /// A problem the kind's own checks found in the spec.
    pub(super) fn invalid_spec(problem: crate::shared::problem::Problem) -> Self {
        Self::new(problem.path, FieldError::Invalid, Rule::Spec, problem.message)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.error.as_str(), self.detail)
    }
}

/// Violations sorted by how the policy applies them.
#[derive(Debug, Default)]
pub struct Judged {
    pub enforced: Vec<Violation>,
    pub warned: Vec<Violation>,
    pub audited: Vec<Violation>,
}

/// Sorts `violations` of an MCPServer in `namespace` by their rules' modes.
pub fn judge(violations: Vec<Violation>, namespace: &str, facts: &Facts) -> Judged {
    let (rules, _) = facts.rules_in(namespace);
    let policy = facts.policy;
    let mut judged = Judged::default();
    for v in violations {
        match v.rule.mode(&rules, &policy.defaults) {
            Mode::Enforce => judged.enforced.push(v),
            Mode::Warn => judged.warned.push(v),
            Mode::Audit => judged.audited.push(v),
        }
    }
    judged
}

/// The message `kubectl` shows for a denial: every violation, in order.
pub fn denial_message(violations: &[Violation]) -> String {
    match violations {
        [one] => one.to_string(),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{} problems: {}", many.len(), all.join("; "))
        }
    }
}

/// What the webhook knows besides the request: the policy, the operator's scope and
/// how many MCPServers each namespace holds (from a watch cache).
pub struct Facts<'a> {
    pub policy: &'a TenancyPolicy,
    pub scope: &'a Scope,
    pub quota: &'a dyn super::Quota,
    /// The labels of the namespaces in scope: their Pod Security level and tenants.
    pub namespaces: &'a super::namespaces::NamespaceLevels,
}

impl Facts<'_> {
    /// The rules for `namespace` and the tenant it belongs to.
    pub fn rules_in(&self, namespace: &str) -> (std::borrow::Cow<'_, Rules>, Option<&Tenant>) {
        self.policy.rules_in(namespace, self.namespaces.labels(namespace).as_deref())
    }
}

/// A create under review: its name, and whether it is a dry run (which takes no place
/// in the quota).
#[derive(Debug, Clone, Copy)]
pub struct Create<'a> {
    pub name: &'a str,
    pub dry_run: bool,
}

/// The spec fields the rules read, typed. The API server checks the CRD schema before
/// the validating webhook is called, so a type error here only comes from a caller
/// that is not the API server; it is reported with its path all the same.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewedSpec {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub volumes: Vec<serde::de::IgnoredAny>,
    /// Kept as sent: it is a patch, so it may leave out what a full template requires.
    #[serde(default)]
    pub pod_template_spec: Option<Value>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub rate_limiting: Option<crate::kinds::mcpserver::ratelimit::RateLimitConfig>,
}

/// Reads `value` as `T`, reporting a type error at its field path under `base`.
fn typed<T: serde::de::DeserializeOwned>(value: &Value, base: &str) -> Result<T, Violation> {
    crate::shared::problem::typed(value, base).map_err(Violation::invalid_spec)
}

/// A value of the wrong shape at `path` (as serde_path_to_error writes it, "." for
/// the value itself) below `base`.
fn shape_violation(base: &str, path: &str, message: String) -> Violation {
    let field = if path == "." { base.to_string() } else { format!("{base}.{path}") };
    Violation::new(field, FieldError::Invalid, Rule::Spec, message)
}

/// The spec a validating hook of a kind other than MCPServer goes on to check: none
/// for a namespace not served, a spec that is no object, or one over the size bound.
pub(super) fn admitted_spec<'a>(spec: Option<&'a Value>, namespace: &str, facts: &Facts) -> Result<&'a Value, Violation> {
    if let Some(denied) = namespace_violation(namespace, facts) {
        return Err(denied);
    }
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return Err(Violation::new("spec", FieldError::Invalid, Rule::Spec, "spec must be an object"));
    };
    match size_violation(Some(spec), "spec", MAX_SPEC_BYTES) {
        Some(too_big) => Err(too_big),
        None => Ok(spec),
    }
}

/// Every policy violation of an MCPServer with `spec` in `namespace`, all at once.
pub fn validate(spec: Option<&Value>, namespace: &str, create: Option<Create>, facts: &Facts) -> Vec<Violation> {
    if let Some(denied) = namespace_violation(namespace, facts) {
        return vec![denied];
    }
    let Some((spec_value, fields)) = spec.and_then(|spec| Some((spec, spec.as_object()?))) else {
        return vec![Violation::new("spec", FieldError::Invalid, Rule::Spec, "spec must be an object")];
    };
    let mut out = Vec::new();
    for (old, new) in REMOVED_FIELDS {
        if fields.contains_key(*old) {
            out.push(Violation::new(
                format!("spec.{old}"),
                FieldError::Forbidden,
                Rule::RemovedField,
                format!("this field was removed; use {new}"),
            ));
        }
    }
    for unsupported in crate::kinds::mcpserver::api::UNSUPPORTED_FIELDS {
        let value = unsupported.value_in(spec_value);
        // As the CRD rule: an empty list sets nothing.
        if value.is_some_and(|v| v.as_array().is_none_or(|list| !list.is_empty())) {
            out.push(Violation::new(
                format!("spec.{}", unsupported.field),
                FieldError::Forbidden,
                Rule::Unsupported,
                unsupported.message(),
            ));
        }
    }
    if let Some(too_big) = size_violation(spec, "spec", MAX_SPEC_BYTES) {
        out.push(too_big);
        return out;
    }
    let spec: ReviewedSpec = match spec.map(|s| typed(s, "spec")).unwrap_or_else(|| Ok(ReviewedSpec::default())) {
        Ok(spec) => spec,
        Err(violation) => {
            out.push(violation);
            return out;
        }
    };
    let (rules, tenant) = facts.rules_in(namespace);
    match spec.image.as_deref() {
        None | Some("") => out.push(Violation::new("spec.image", FieldError::Required, Rule::Image, "an image is required")),
        Some(image) => check_image(image, "spec.image", namespace, &rules, &mut out),
    }
    if let Some(account) = spec.service_account.as_deref().filter(|a| a.ends_with(RUNNER_ACCOUNT_SUFFIX)) {
        out.push(Violation::new(
            "spec.serviceAccount",
            FieldError::Forbidden,
            Rule::ServiceAccount,
            format!("{account:?} is a name the operator gives the proxy runners' ServiceAccounts; choose another"),
        ));
    }
    check_transport(spec.transport.as_deref().unwrap_or("stdio"), namespace, &rules, &mut out);
    for problem in spec.rate_limiting.iter().flat_map(|r| r.problems()) {
        out.push(Violation::invalid_spec(problem));
    }
    if let (Some(policy), Some(resources)) = (&rules.proxy_resources, &spec.resources) {
        check_ceiling(resources, policy, "spec.resources", &mut out);
    }
    if let Some(template) = &spec.pod_template_spec {
        check_pod_template_spec(template, namespace, facts, &rules, (MCP_CONTAINER, rules.mcp_resources.as_ref()), &mut out);
    }
    // Last: a place in the quota is taken only by a create that is otherwise allowed.
    if let Some(create) = create {
        let mut ceilings = Vec::new();
        if let Some(max) = rules.max_mcp_servers {
            ceilings.push(Ceiling { namespaces: vec![namespace.to_string()], max: max as usize });
        }
        if let Some((tenant, max)) = tenant.and_then(|t| Some((t, t.max_mcp_servers?))) {
            let ours = |labels: &_| facts.policy.rules_in("", Some(labels)).1.is_some_and(|t| std::ptr::eq(t, tenant));
            let mut namespaces = facts.namespaces.matching(ours);
            namespaces.sort();
            ceilings.push(Ceiling { namespaces, max: max as usize });
        }
        let refused = out.iter().any(|v| v.rule.mode(&rules, &facts.policy.defaults) == Mode::Enforce);
        let place =
            if !refused && !create.dry_run { facts.quota.reserve(&ceilings, namespace, create.name) } else { facts.quota.check(&ceilings) };
        if let Err((which, have)) = place {
            let ceiling = &ceilings[which];
            let detail = match (which, tenant) {
                (0, _) if rules.max_mcp_servers.is_some() => {
                    format!("namespace {namespace:?} already has {have} MCPServers, the most it may hold is {}", ceiling.max)
                }
                (_, Some(t)) => format!(
                    "tenant {:?} already has {have} MCPServers across its namespaces ({}), the most it may hold is {}",
                    t.name,
                    ceiling.namespaces.join(", "),
                    ceiling.max
                ),
                _ => format!("already {have} MCPServers, the most is {}", ceiling.max),
            };
            out.push(Violation::new("metadata.namespace", FieldError::Forbidden, Rule::Quota, detail));
        }
    }
    out
}

pub(super) fn size_violation(value: Option<&Value>, field: &str, max: usize) -> Option<Violation> {
    let size = serde_json::to_vec(value?).map_or(usize::MAX, |text| text.len());
    (size > max)
        .then(|| Violation::new(field, FieldError::TooLong, Rule::Size, format!("may be at most {max} bytes as JSON, this one has {size}")))
}

/// Every key of the template as sent must be one the typed template read: a field
/// name in another case (`HostNetwork`, `hostpid`) is ignored here but honoured by the
/// runner, whose decoder matches names case-insensitively; so it is refused, as is
/// any other name Kubernetes does not know.
fn exact_field_names(sent: &Value, read: &Value, path: &str, out: &mut Vec<Violation>) {
    match (sent, read) {
        (Value::Object(sent), Value::Object(read)) => {
            for (key, value) in sent.iter().filter(|(_, v)| !v.is_null()) {
                let field = format!("{path}.{key}");
                match read.get(key) {
                    Some(inner) => exact_field_names(value, inner, &field, out),
                    None => out.push(Violation::new(
                        field,
                        FieldError::Invalid,
                        Rule::Spec,
                        format!(
                            "unknown field {key:?}: field names are case-sensitive and must be spelled as in a Kubernetes PodTemplateSpec"
                        ),
                    )),
                }
            }
        }
        (Value::Array(sent), Value::Array(read)) => {
            for (i, (sent, read)) in sent.iter().zip(read).enumerate() {
                exact_field_names(sent, read, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The namespace must be watched by the operator and allowed by the policy.
pub(super) fn namespace_violation(namespace: &str, facts: &Facts) -> Option<Violation> {
    let policy = facts.policy;
    let in_policy = policy.allowed_namespaces.is_empty() || policy.allowed_namespaces.iter().any(|n| n == namespace);
    if facts.scope.allows(namespace) && in_policy {
        return None;
    }
    let allowed: Vec<&str> = match facts.scope {
        Scope::Namespaces(list) => list.iter().filter(|n| in_list_or_all(&policy.allowed_namespaces, n)).map(String::as_str).collect(),
        Scope::Cluster => policy.allowed_namespaces.iter().map(String::as_str).collect(),
    };
    let ask = if policy.contact.is_empty() { "your platform team" } else { policy.contact.as_str() };
    Some(Violation::new(
        "metadata.namespace",
        FieldError::Forbidden,
        Rule::Namespace,
        format!("namespace {namespace:?} may not hold MCPServers (allowed: {}); ask {ask} to allow it", allowed.join(", ")),
    ))
}

fn in_list_or_all(list: &[String], item: &str) -> bool {
    list.is_empty() || list.iter().any(|n| n == item)
}

/// The image must parse and come from a registry the namespace allows.
pub(super) fn check_image(image: &str, field: &str, namespace: &str, rules: &Rules, out: &mut Vec<Violation>) {
    match ImageRef::parse(image) {
        Err(e) => out.push(Violation::new(field, FieldError::Invalid, Rule::Image, e.to_string())),
        Ok(reference) => {
            if let Some(allowed) = &rules.allowed_registries
                && !rules.registry_rules().iter().any(|r| r.matches(&reference))
            {
                out.push(Violation::new(
                    field,
                    FieldError::Forbidden,
                    Rule::Registry,
                    format!(
                        "registry {:?} is not allowed in namespace {namespace:?} (allowed: {})",
                        reference.registry,
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
}

fn check_transport(transport: &str, namespace: &str, rules: &Rules, out: &mut Vec<Violation>) {
    if let Some(allowed) = &rules.allowed_transports
        && !allowed.iter().any(|t| t == transport)
    {
        out.push(Violation::new(
            "spec.transport",
            FieldError::Forbidden,
            Rule::Transport,
            format!("transport {transport:?} is not allowed in namespace {namespace:?} (allowed: {})", allowed.join(", ")),
        ));
    }
}

/// Every cpu and memory request and limit must parse and stay at or under the ceiling.
pub(super) fn check_ceiling(resources: &ResourceRequirements, policy: &ResourcePolicy, path: &str, out: &mut Vec<Violation>) {
    for (section, amounts) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for (resource, max) in [("cpu", &policy.max.cpu), ("memory", &policy.max.memory)] {
            let Some(amount) = amounts.as_ref().and_then(|a| a.get(resource)) else { continue };
            let field = format!("{path}.{section}.{resource}");
            match quantity::parse(&amount.0) {
                Err(e) => out.push(Violation::new(field, FieldError::Invalid, Rule::Resources, e.to_string())),
                Ok(value) => {
                    // The policy's own quantities were checked when it was loaded.
                    if let Some(max) = max
                        && quantity::parse(max).is_ok_and(|m| value > m)
                    {
                        out.push(Violation::new(
                            field,
                            FieldError::Forbidden,
                            Rule::Resources,
                            format!("{} exceeds the namespace maximum of {max}", amount.0),
                        ));
                    }
                }
            }
        }
    }
}

/// The checks of a `spec.podTemplateSpec` in `namespace`: its size, its shape (field
/// names exactly as Kubernetes spells them), the namespace's pod security level and
/// pod policy, every container's image; the container named `main.0` held to the
/// ceiling `main.1`.
pub(super) fn check_pod_template_spec(
    template: &Value,
    namespace: &str,
    facts: &Facts,
    rules: &Rules,
    main: (&str, Option<&ResourcePolicy>),
    out: &mut Vec<Violation>,
) {
    if let Some(too_big) = size_violation(Some(template), "spec.podTemplateSpec", MAX_POD_TEMPLATE_BYTES) {
        return out.push(too_big);
    }
    match pod_template(template) {
        Ok(typed) => {
            exact_field_names(template, &serde_json::to_value(&typed).unwrap_or_default(), "spec.podTemplateSpec", out);
            // The stricter of the policy's level and the namespace's own label.
            let policy_level = rules.pod_security_standard.unwrap_or_default();
            let level = facts.namespaces.get(namespace).map_or(policy_level, |label| policy_level.max(label));
            check_pod_template(&typed, namespace, rules, level, main, out);
        }
        Err(violation) => out.push(violation),
    }
}

fn pod_template(value: &Value) -> Result<PodTemplateSpec, Violation> {
    crate::kinds::mcpserver::api::parse_pod_template(value).map_err(|e| shape_violation("spec.podTemplateSpec", &e.path, e.message))
}

/// The security-relevant parts of any container kind.
struct ContainerView<'a> {
    list: &'static str,
    name: &'a str,
    image: Option<&'a str>,
    ports: Option<&'a Vec<k8s_openapi::api::core::v1::ContainerPort>>,
    security: Option<&'a SecurityContext>,
    resources: Option<&'a ResourceRequirements>,
}

fn containers(pod: &PodSpec) -> impl Iterator<Item = (usize, ContainerView<'_>)> {
    let init = pod.init_containers.iter().flatten().enumerate().map(|(i, c)| {
        (
            i,
            ContainerView {
                list: "initContainers",
                name: &c.name,
                image: c.image.as_deref(),
                ports: c.ports.as_ref(),
                security: c.security_context.as_ref(),
                resources: c.resources.as_ref(),
            },
        )
    });
    let main = pod.containers.iter().enumerate().map(|(i, c)| {
        (
            i,
            ContainerView {
                list: "containers",
                name: &c.name,
                image: c.image.as_deref(),
                ports: c.ports.as_ref(),
                security: c.security_context.as_ref(),
                resources: c.resources.as_ref(),
            },
        )
    });
    let ephemeral = pod.ephemeral_containers.iter().flatten().enumerate().map(|(i, c)| {
        (
            i,
            ContainerView {
                list: "ephemeralContainers",
                name: &c.name,
                image: c.image.as_deref(),
                ports: c.ports.as_ref(),
                security: c.security_context.as_ref(),
                resources: c.resources.as_ref(),
            },
        )
    });
    init.chain(main).chain(ephemeral)
}

fn check_pod_template(
    template: &PodTemplateSpec,
    namespace: &str,
    rules: &Rules,
    level: pod_security::Level,
    main: (&str, Option<&ResourcePolicy>),
    out: &mut Vec<Violation>,
) {
    const BASE: &str = "spec.podTemplateSpec.spec";
    let Some(pod) = &template.spec else { return };
    // The operator sets the pod's ServiceAccount; the deprecated alias could name another.
    if pod.service_account.as_deref().is_some_and(|a| !a.is_empty()) {
        out.push(Violation::new(
            format!("{BASE}.serviceAccount"),
            FieldError::Forbidden,
            Rule::ServiceAccount,
            "the pod's ServiceAccount is spec.serviceAccount (or the one the operator makes); it cannot be set here",
        ));
    }
    let allowed = rules.pod_security.clone().unwrap_or_default();
    let views: Vec<(usize, ContainerView)> = containers(pod).collect();
    let checked: Vec<pod_security::Container> = views
        .iter()
        .map(|(i, c)| pod_security::Container { path: format!("{BASE}.{}[{i}]", c.list), security: c.security, ports: c.ports })
        .collect();
    pod_security::check(pod, template.metadata.as_ref(), &checked, BASE, level, &allowed, out);
    for (i, c) in views {
        let path = format!("{BASE}.{}[{i}]", c.list);
        // Every container runs what it names: the same registries as spec.image.
        if let Some(image) = c.image.filter(|i| !i.is_empty()) {
            check_image(image, &format!("{path}.image"), namespace, rules, out);
        }
        if c.list == "containers"
            && c.name == main.0
            && let (Some(policy), Some(resources)) = (main.1, c.resources)
        {
            check_ceiling(resources, policy, &format!("{path}.resources"), out);
        }
    }
}
