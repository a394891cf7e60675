//! Pure computation of an MCPServer's status from what the reconciler observed.
//! Conditions keep their lastTransitionTime unless their status flips, so an
//! unchanged world yields an identical status and no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::shared::conditions::condition;
use crate::shared::problem::ConditionReport;

use crate::kinds::mcpserver::api::{MCPServer, MCPServerStatus, Phase};
use crate::kinds::mcpserver::resources::service_url;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_POD_TEMPLATE_VALID: &str = "PodTemplateValid";
/// True while several proxy replicas keep their sessions each in its own memory.
pub const SESSION_STORAGE_WARNING: &str = "SessionStorageWarning";

/// Whether spec.rateLimiting can be carried out (the reference's condition).
pub const RATE_LIMIT_CONFIG_VALID: &str = "RateLimitConfigValid";

fn rate_limit_validity(server: &MCPServer) -> ConditionReport {
    let report = |status, reason, message: String| ConditionReport::new(RATE_LIMIT_CONFIG_VALID, status, reason, message);
    match (&server.spec.rate_limiting, crate::kinds::mcpserver::ratelimit::invalid(&server.spec)) {
        (None, _) => report(true, "RateLimitNotApplicable", "no rate limits".into()),
        (Some(_), Some((reason, problem))) => report(false, reason, problem.to_string()),
        (Some(_), None) => report(true, "RateLimitConfigValid", "the proxy enforces these rate limits".into()),
    }
}

/// Advice, never a failure: with more than one proxy replica and no Redis, a client
/// whose requests reach another replica loses its session (the proxy Service's
/// ClientIP affinity, the default, keeps most clients on one replica).
fn session_storage_warning(server: &MCPServer) -> ConditionReport {
    let report = |status, reason, message: &str| ConditionReport::new(SESSION_STORAGE_WARNING, status, reason, message);
    match (server.spec.replicas.is_some_and(|r| r > 1), server.spec.redis_sessions().is_some()) {
        (true, false) => report(
            true,
            "SessionStorageMissingForReplicas",
            "several proxy replicas keep sessions in their own memory: set spec.sessionStorage (provider redis) to share them",
        ),
        (true, true) => report(false, "SessionStorageConfigured", "the proxy replicas share sessions in Redis"),
        (false, _) => report(false, "SessionStorageWarningNotApplicable", "one proxy replica: no sessions to share"),
    }
}
const GROUP_REF: &str = crate::kinds::mcpserver::group_ref::CONDITION_GROUP_REF_VALIDATED;

/// Whether spec.replicas was lowered to 1 for a stdio server (see `proxy_replicas`).
pub const STDIO_REPLICA_CAPPED: &str = "StdioReplicaCapped";

fn stdio_replica_cap(server: &MCPServer) -> ConditionReport {
    if server.spec.stdio_replicas_capped() {
        ConditionReport::new(
            STDIO_REPLICA_CAPPED,
            true,
            "StdioTransportCapAt1",
            "spec.replicas: a stdio server runs one proxy (each proxy attaches to the server's stdin and stdout); the Deployment has 1 replica",
        )
    } else {
        ConditionReport::new(STDIO_REPLICA_CAPPED, false, "StdioReplicaCapNotActive", "the stdio replica cap does not apply")
    }
}

/// Whether the stored server meets the tenancy policy in force (checked again when
/// the policy changes); set only where the operator runs with a policy.
pub const CONDITION_POLICY_COMPLIANT: &str = "PolicyCompliant";

/// One way a stored MCPServer does not meet the tenancy policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFinding {
    /// The rule's name (bounded: a metric label).
    pub rule: &'static str,
    /// How the policy applies the rule: enforce, warn or audit.
    pub mode: &'static str,
    /// Field path and what to change.
    pub message: String,
}

/// Checks a stored MCPServer's spec in a namespace against the tenancy policy in
/// force; None when there is no policy to meet. Supplied by the binary (the rules
/// live with the webhook).
pub type PolicyCheck = std::sync::Arc<dyn Fn(&str, &serde_json::Value) -> Option<Vec<PolicyFinding>> + Send + Sync>;

fn policy_compliance(findings: &[PolicyFinding]) -> ConditionReport {
    if findings.is_empty() {
        return ConditionReport::new(CONDITION_POLICY_COMPLIANT, true, "Compliant", "meets the tenancy policy");
    }
    let each: Vec<String> = findings.iter().map(|f| format!("{} (rule {}, {} mode)", f.message, f.rule, f.mode)).collect();
    let message = format!("does not meet the tenancy policy; the operator leaves it running and unchanged: {}", each.join("; "));
    // The reason is the most severe mode among them, so a rule moving from warn to
    // enforce changes it (and makes a new Event, not a repeat of the last).
    let reason = if findings.iter().any(|f| f.mode == "enforce") {
        "PolicyViolation"
    } else if findings.iter().any(|f| f.mode == "warn") {
        "PolicyWarning"
    } else {
        "PolicyAudit"
    };
    ConditionReport::new(CONDITION_POLICY_COMPLIANT, false, reason, message)
}

/// What the reconciler saw this round.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    pub ready_replicas: i32,
    /// The proxy Deployment reports a failed rollout (message).
    pub rollout_failure: Option<String>,
    /// A container of the proxy or of the MCP server cannot start (message).
    pub container_failure: Option<String>,
    /// spec.podTemplateSpec does not parse (message).
    pub pod_template_error: Option<String>,
    /// Applying a child failed in a way the user can fix (message).
    pub apply_error: Option<String>,
    pub terminating: bool,
    /// What the references to configuration kinds came to (spec.toolConfigRef, ...).
    pub references: crate::kinds::mcpserver::references::References,
    /// spec.groupRef: the group's name and where it stands.
    pub group_ref: Option<(String, crate::kinds::mcpserver::group_ref::GroupRefState)>,
    /// What the tenancy policy finds wrong with the stored server (None: no policy).
    pub policy: Option<Vec<PolicyFinding>>,
}

pub fn desired_status(server: &MCPServer, observed: &Observed, now: Time) -> MCPServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let unsupported = server.spec.unsupported_fields();
    let (phase, message) = if observed.terminating {
        (Phase::Terminating, "MCPServer is being deleted".to_string())
    } else if let Some(field) = unsupported.first() {
        (Phase::Failed, format!("{}; the proxy is scaled to 0", field.message()))
    } else if let Some(e) = &observed.pod_template_error {
        (Phase::Failed, format!("spec.podTemplateSpec is invalid: {e}"))
    } else if !observed.references.problems.is_empty() {
        (Phase::Failed, observed.references.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    } else if let Some(e) = &observed.apply_error {
        (Phase::Failed, e.clone())
    } else if let Some(e) = &observed.rollout_failure {
        (Phase::Failed, format!("proxy Deployment rollout failed: {e}"))
    } else if let Some(e) = &observed.container_failure {
        (Phase::Failed, e.clone())
    } else if server.spec.replicas == Some(0) {
        (Phase::Stopped, "spec.replicas is 0".to_string())
    } else if observed.ready_replicas > 0 {
        (Phase::Ready, "MCP server proxy is running".to_string())
    } else {
        (Phase::Pending, "waiting for the proxy Deployment to have a ready replica".to_string())
    };

    let ready_reason = match phase {
        Phase::Ready => "Ready",
        Phase::Stopped => "Stopped",
        Phase::Failed => "Failed",
        Phase::Terminating => "Terminating",
        Phase::Pending => "NotReady",
    };
    let mut reports = vec![ConditionReport::new(CONDITION_READY, phase == Phase::Ready, ready_reason, message.clone())];
    reports.push(match &observed.pod_template_error {
        Some(e) => ConditionReport::new(CONDITION_POD_TEMPLATE_VALID, false, "InvalidPodTemplateSpec", e.as_str()),
        None => ConditionReport::new(CONDITION_POD_TEMPLATE_VALID, true, "ValidPodTemplateSpec", "spec.podTemplateSpec is valid"),
    });
    reports.extend(observed.group_ref.as_ref().map(|(group, state)| state.condition(group)));
    reports.push(session_storage_warning(server));
    reports.push(stdio_replica_cap(server));
    reports.push(rate_limit_validity(server));
    reports.extend(observed.references.conditions.iter().cloned());
    reports.extend(observed.policy.as_deref().map(policy_compliance));
    let generation = server.metadata.generation;
    let conditions =
        reports.iter().map(|c| condition(&previous.conditions, c.type_, c.status_str(), c.reason, &c.message, generation, &now)).collect();
    MCPServerStatus {
        conditions,
        observed_generation: server.metadata.generation,
        url: service_url(server),
        phase: Some(phase),
        message,
        ready_replicas: Some(observed.ready_replicas),
    }
}

/// The condition types this operator sets on an MCPServer. Conditions of any other
/// type belong to whoever set them: the operator never writes them back.
pub fn our_condition_types() -> impl Iterator<Item = &'static str> {
    [
        CONDITION_READY,
        CONDITION_POD_TEMPLATE_VALID,
        GROUP_REF,
        SESSION_STORAGE_WARNING,
        STDIO_REPLICA_CAPPED,
        RATE_LIMIT_CONFIG_VALID,
        CONDITION_POLICY_COMPLIANT,
    ]
    .into_iter()
    .chain(crate::kinds::mcpserver::references::REF_CONDITION_TYPES.iter().copied())
}

/// `status` as far as it is the operator's: its fields and its conditions only.
pub fn ours(status: &MCPServerStatus) -> MCPServerStatus {
    let ours: Vec<&str> = our_condition_types().collect();
    let conditions = status.conditions.iter().filter(|c| ours.contains(&c.type_.as_str())).cloned().collect();
    MCPServerStatus { conditions, ..status.clone() }
}

/// Waiting reasons that do not go away by waiting: the image cannot be had, or the
/// container cannot be created or keeps crashing. (ContainerCreating, PodInitializing
/// and the like are progress, not failure.)
const STUCK_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// The first container of the server's pods (proxy or MCP server) stuck in a
/// state that waiting will not fix, as `pod P container C: Reason: message`.
pub fn container_failure(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        containers.into_iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref().filter(|r| STUCK_REASONS.contains(r))?;
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            Some(match waiting.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => format!("pod {pod_name} container {}: {reason}: {message}", c.name),
                None => format!("pod {pod_name} container {}: {reason}", c.name),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(spec: serde_json::Value) -> MCPServer {
        serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": "osv", "namespace": "ns", "generation": 2},
            "spec": spec,
        }))
        .unwrap()
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn each_reference_has_a_condition_and_one_that_fails_fails_the_server() {
        use crate::kinds::mcpserver::references::{References, resolve};
        use crate::kinds::toolconfig::MCPToolConfig;
        let s = server(json!({"image": "i", "toolConfigRef": {"name": "filters"}}));
        let (store, _) = kube::runtime::reflector::store::<MCPToolConfig>();
        let mut references = References::default();
        assert_eq!(resolve(&s, &store, &mut references), None);
        let observed = Observed { ready_replicas: 1, references, ..Default::default() };
        let status = desired_status(&s, &observed, t("2026-01-01T00:00:00Z"));
        assert_eq!(status.phase, Some(Phase::Failed));
        assert!(status.message.contains("MCPToolConfig filters not found in namespace ns"), "{}", status.message);
        let c = status.conditions.iter().find(|c| c.type_ == "ToolConfigRefValidated").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ToolConfigRefNotFound"));
        // Without the reference, its condition goes too.
        let dropped = MCPServer { status: Some(status), ..server(json!({"image": "i"})) };
        let status = desired_status(&dropped, &Observed { ready_replicas: 1, ..Default::default() }, t("2026-01-01T00:00:00Z"));
        assert!(!status.conditions.iter().any(|c| c.type_ == "ToolConfigRefValidated"));
        assert_eq!(status.phase, Some(Phase::Ready));
    }

    #[test]
    fn conditions_of_other_managers_are_never_copied_into_ours() {
        let mut s = server(json!({"image": "i"}));
        let theirs = condition(&[], "Audited", "True", "AuditPassed", "by the platform's auditor", Some(2), &t("2026-01-01T00:00:00Z"));
        s.status = Some(MCPServerStatus { conditions: vec![theirs.clone()], ..Default::default() });
        let desired = desired_status(&s, &Observed::default(), t("2026-01-02T00:00:00Z"));
        assert!(desired.conditions.iter().all(|c| c.type_ != "Audited"), "{:?}", desired.conditions);
        assert!(desired.conditions.iter().any(|c| c.type_ == CONDITION_READY));
        // What the operator compares with its desired status leaves theirs out too.
        let stored = MCPServerStatus { conditions: [desired.conditions.clone(), vec![theirs]].concat(), ..desired.clone() };
        assert_eq!(ours(&stored), desired);
    }

    #[test]
    fn phases() {
        let s = server(json!({"image": "i", "transport": "streamable-http"}));
        let now = t("2026-01-01T00:00:00Z");
        let pending = desired_status(&s, &Observed::default(), now.clone());
        assert_eq!(pending.phase, Some(Phase::Pending));
        assert_eq!(pending.url, "http://mcp-osv-proxy.ns.svc.cluster.local:8080/mcp");
        assert_eq!(pending.observed_generation, Some(2));
        let ready = desired_status(&s, &Observed { ready_replicas: 1, ..Default::default() }, now.clone());
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(ready.conditions[0].status, "True");
        let stopped = desired_status(&server(json!({"image": "i", "replicas": 0})), &Observed::default(), now.clone());
        assert_eq!(stopped.phase, Some(Phase::Stopped));
        let failed = desired_status(&s, &Observed { pod_template_error: Some("bad".into()), ..Default::default() }, now.clone());
        assert_eq!(failed.phase, Some(Phase::Failed));
        assert_eq!(failed.conditions[1].reason, "InvalidPodTemplateSpec");
        let term = desired_status(&s, &Observed { terminating: true, ..Default::default() }, now);
        assert_eq!(term.phase, Some(Phase::Terminating));
    }

    #[test]
    fn unchanged_world_gives_identical_status() {
        let mut s = server(json!({"image": "i"}));
        let first = desired_status(&s, &Observed::default(), t("2026-01-01T00:00:00Z"));
        s.status = Some(first.clone());
        let second = desired_status(&s, &Observed::default(), t("2026-01-02T00:00:00Z"));
        assert_eq!(first, second, "no change, so no write");
        let ready = desired_status(&s, &Observed { ready_replicas: 1, ..Default::default() }, t("2026-01-03T00:00:00Z"));
        assert_eq!(ready.conditions[0].last_transition_time, t("2026-01-03T00:00:00Z"));
        assert_eq!(ready.conditions[1].last_transition_time, t("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn several_replicas_without_redis_are_warned_about_and_the_server_still_runs() {
        let now = t("2026-01-01T00:00:00Z");
        let warning = |spec: serde_json::Value| {
            let status = desired_status(&server(spec), &Observed { ready_replicas: 1, ..Default::default() }, now.clone());
            let c = status.conditions.iter().find(|c| c.type_ == SESSION_STORAGE_WARNING).cloned().unwrap();
            (status.phase, c.status, c.reason)
        };
        assert_eq!(
            warning(json!({"image": "i", "replicas": 3})),
            (Some(Phase::Ready), "True".into(), "SessionStorageMissingForReplicas".into())
        );
        let redis = json!({"image": "i", "replicas": 3, "sessionStorage": {"provider": "redis", "address": "r:6379"}});
        assert_eq!(warning(redis), (Some(Phase::Ready), "False".into(), "SessionStorageConfigured".into()));
        assert_eq!(warning(json!({"image": "i"})), (Some(Phase::Ready), "False".into(), "SessionStorageWarningNotApplicable".into()));
    }

    #[test]
    fn rate_limits_say_whether_they_can_be_carried_out() {
        let now = t("2026-01-01T00:00:00Z");
        let validity = |spec: serde_json::Value| {
            let status = desired_status(&server(spec), &Observed::default(), now.clone());
            let c = status.conditions.iter().find(|c| c.type_ == RATE_LIMIT_CONFIG_VALID).cloned().unwrap();
            (c.status, c.reason)
        };
        let redis = json!({"provider": "redis", "address": "r:6379"});
        assert_eq!(validity(json!({"image": "i"})), ("True".into(), "RateLimitNotApplicable".into()));
        let shared = json!({"image": "i", "sessionStorage": redis, "rateLimiting": {"shared": {"maxTokens": 5, "refillPeriod": "1m"}}});
        assert_eq!(validity(shared), ("True".into(), "RateLimitConfigValid".into()));
        let per_user = json!({"image": "i", "sessionStorage": redis, "rateLimiting": {"perUser": {"maxTokens": 5, "refillPeriod": "1m"}}});
        assert_eq!(validity(per_user), ("False".into(), "PerUserRequiresAuth".into()));
        let bad = json!({"image": "i", "sessionStorage": redis, "rateLimiting": {"shared": {"maxTokens": 5, "refillPeriod": "soon"}}});
        assert_eq!(validity(bad), ("False".into(), "InvalidRefillPeriod".into()));
    }

    #[test]
    fn url_follows_proxy_port() {
        let mut s = server(json!({"image": "i", "transport": "sse", "proxyPort": 8080}));
        let before = desired_status(&s, &Observed::default(), t("2026-01-01T00:00:00Z"));
        s.status = Some(before);
        s.spec.proxy_port = 9090;
        let after = desired_status(&s, &Observed::default(), t("2026-01-01T00:00:00Z"));
        assert_eq!(after.url, "http://mcp-osv-proxy.ns.svc.cluster.local:9090/sse#osv");
    }

    #[test]
    fn a_container_that_cannot_start_is_the_failure_and_progress_is_not() {
        let pod = |name: &str, reason: &str, message: &str| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"containerStatuses": [{"name": "mcp", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}}}]}
            }))
            .unwrap()
        };
        assert_eq!(container_failure(&[pod("a", "ContainerCreating", "")]), None);
        assert_eq!(
            container_failure(&[pod("a", "ContainerCreating", ""), pod("b-0", "ImagePullBackOff", "Back-off pulling image")]).as_deref(),
            Some("pod b-0 container mcp: ImagePullBackOff: Back-off pulling image")
        );
        assert_eq!(container_failure(&[pod("c", "CrashLoopBackOff", "")]).as_deref(), Some("pod c container mcp: CrashLoopBackOff"));

        let s = server(json!({"image": "ghcr.io/acme/tool"}));
        let observed = Observed { container_failure: Some("pod c container mcp: CrashLoopBackOff".into()), ..Default::default() };
        let failed = desired_status(&s, &observed, t("2026-01-01T00:00:00Z"));
        assert_eq!(failed.phase, Some(Phase::Failed));
        assert_eq!(failed.message, "pod c container mcp: CrashLoopBackOff");
    }

    #[test]
    fn policy_compliance_is_reported_only_under_a_policy_and_named_by_its_most_severe_mode() {
        let s = server(json!({"image": "docker.io/x/y"}));
        let condition = |policy: Option<Vec<PolicyFinding>>| {
            let status = desired_status(&s, &Observed { policy, ..Default::default() }, Time(jiff::Timestamp::now()));
            status.conditions.into_iter().find(|c| c.type_ == CONDITION_POLICY_COMPLIANT).map(|c| (c.status, c.reason, c.message))
        };
        assert_eq!(condition(None), None, "no policy, no condition");
        assert_eq!(condition(Some(vec![])).unwrap().0, "True");
        let finding = |rule, mode| PolicyFinding { rule, mode, message: format!("spec.{rule}: Forbidden: no") };
        let (status, reason, message) = condition(Some(vec![finding("transport", "audit"), finding("registry", "warn")])).unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("False", "PolicyWarning"));
        assert!(
            message.contains("spec.registry: Forbidden: no (rule registry, warn mode)")
                && message.contains("leaves it running and unchanged"),
            "{message}"
        );
        assert_eq!(condition(Some(vec![finding("transport", "audit")])).unwrap().1, "PolicyAudit");
        assert_eq!(condition(Some(vec![finding("registry", "warn"), finding("quota", "enforce")])).unwrap().1, "PolicyViolation");
    }
}
