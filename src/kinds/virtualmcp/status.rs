//! A VirtualMCPServer's status from its resolution and what its Deployment shows:
//! phase, URL, the backends with their health, and the reference's conditions
//! (GroupRefValidated, BackendsDiscovered, Ready). Pure; an unchanged world yields an
//! identical status, so nothing is written.
//! A backend is ready when its object says so (its phase).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::kinds::group::GroupRefState;
use crate::kinds::virtualmcp::api::{DiscoveredBackend, VirtualMCPServer, VirtualMCPServerStatus, VirtualPhase};
use crate::kinds::virtualmcp::resolve::Resolution;
use crate::shared::conditions::condition;
use crate::shared::problem::ConditionReport;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_GROUP_REF: &str = "GroupRefValidated";
pub const CONDITION_BACKENDS: &str = "BackendsDiscovered";
pub const CONDITION_EMBEDDING: &str = "EmbeddingServerReady";

/// What the Deployment shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub ready_replicas: i32,
}

pub fn desired_status(vmcp: &VirtualMCPServer, resolution: &Resolution, observed: Observed, now: Time) -> VirtualMCPServerStatus {
    let name = vmcp.metadata.name.as_deref().unwrap_or_default();
    let ns = vmcp.metadata.namespace.as_deref().unwrap_or_default();
    let group = vmcp.spec.group_ref.name.as_str();
    let backends: Vec<DiscoveredBackend> = resolution
        .backends
        .iter()
        .map(|b| {
            let status = if b.excluded.is_none() && b.ready { "ready" } else { "unavailable" };
            DiscoveredBackend {
                name: b.config.name.clone(),
                url: b.config.url.clone(),
                status: status.into(),
                auth_type: "unauthenticated".into(),
                message: b.excluded.clone().unwrap_or_default(),
            }
        })
        .collect();
    let backend_count = backends.iter().filter(|b| b.status == "ready").count() as i32;
    let served = resolution.served().len();

    let group_report = match resolution.group {
        GroupRefState::Valid => {
            ConditionReport::new(CONDITION_GROUP_REF, true, "GroupRefValid", format!("MCPGroup {group} exists and is Ready"))
        }
        GroupRefState::NotReady => {
            ConditionReport::new(CONDITION_GROUP_REF, false, "GroupRefNotReady", format!("MCPGroup {group} is not Ready"))
        }
        GroupRefState::NotFound => ConditionReport::new(
            CONDITION_GROUP_REF,
            false,
            "GroupRefNotFound",
            format!("MCPGroup {group} does not exist in this namespace"),
        ),
    };
    let backends_report = if resolution.group == GroupRefState::NotFound {
        ConditionReport::new(CONDITION_BACKENDS, false, "BackendDiscoveryFailed", format!("MCPGroup {group} does not exist"))
    } else if served == 0 {
        ConditionReport::new(
            CONDITION_BACKENDS,
            false,
            "NoBackends",
            format!("MCPGroup {group} has no backend the vMCP can call: add an MCPServer, MCPRemoteProxy or MCPServerEntry to it"),
        )
    } else {
        ConditionReport::new(
            CONDITION_BACKENDS,
            true,
            "BackendsDiscoveredSuccessfully",
            format!("{served} of {} backends are served", backends.len()),
        )
    };

    let (phase, ready_report) = if !resolution.problems.is_empty() {
        let message = resolution.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        (VirtualPhase::Failed, ConditionReport::new(CONDITION_READY, false, "ConfigurationInvalid", message))
    } else if served == 0 {
        (VirtualPhase::Pending, ConditionReport::new(CONDITION_READY, false, "NoBackends", backends_report.message.clone()))
    } else if let Some(embedding) = resolution.embedding.as_ref().filter(|e| !e.ready) {
        let message = format!("waiting for EmbeddingServer {} to be Ready (the optimizer's embedding service)", embedding.name);
        (VirtualPhase::Pending, ConditionReport::new(CONDITION_READY, false, "EmbeddingServerNotReady", message))
    } else if observed.ready_replicas == 0 {
        (VirtualPhase::Pending, ConditionReport::new(CONDITION_READY, false, "DeploymentNotReady", "waiting for the vMCP pod to be ready"))
    } else if backend_count < backends.len() as i32 {
        let down: Vec<&str> = backends.iter().filter(|b| b.status != "ready").map(|b| b.name.as_str()).collect();
        (
            VirtualPhase::Degraded,
            ConditionReport::new(CONDITION_READY, true, "DeploymentReady", format!("serving; backends not ready: {}", down.join(", "))),
        )
    } else {
        (VirtualPhase::Ready, ConditionReport::new(CONDITION_READY, true, "DeploymentReady", "the vMCP serves every backend"))
    };

    let previous = vmcp.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = vmcp.metadata.generation;
    let message = ready_report.message.clone();
    let embedding_report = resolution.embedding.as_ref().map(|e| match e.ready {
        true => ConditionReport::new(CONDITION_EMBEDDING, true, "EmbeddingServerReady", format!("EmbeddingServer {} is Ready", e.name)),
        false => {
            ConditionReport::new(CONDITION_EMBEDDING, false, "EmbeddingServerNotReady", format!("EmbeddingServer {} is not Ready", e.name))
        }
    });
    let reports = [Some(group_report), Some(backends_report), embedding_report, Some(ready_report)];
    VirtualMCPServerStatus {
        conditions: reports
            .iter()
            .flatten()
            .map(|r| condition(previous, r.type_, r.status_str(), r.reason, &r.message, generation, &now))
            .collect(),
        observed_generation: generation,
        phase: Some(phase),
        message,
        url: crate::kinds::virtualmcp::children::url(name, ns),
        discovered_backends: backends,
        backend_count,
    }
}

/// Whether `current` already says what `desired` does.
pub fn unchanged(current: Option<&VirtualMCPServerStatus>, desired: &VirtualMCPServerStatus) -> bool {
    current == Some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::virtualmcp::config::{IncomingAuth, StaticBackend, UserConfig};
    use crate::kinds::virtualmcp::resolve::Backend;
    use crate::shared::problem::Problem;
    use serde_json::json;

    fn vmcp(status: Option<serde_json::Value>) -> VirtualMCPServer {
        let mut v = json!({"metadata": {"name": "team", "namespace": "a", "generation": 2},
            "spec": {"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}}});
        if let Some(s) = status {
            v["status"] = s;
        }
        serde_json::from_value(v).unwrap()
    }

    fn backend(name: &str, ready: bool, excluded: Option<&str>) -> Backend {
        Backend {
            config: StaticBackend {
                name: name.into(),
                url: format!("http://{name}/mcp"),
                transport: "streamable-http".into(),
                kind: String::new(),
            },
            ready,
            excluded: excluded.map(String::from),
            auth_config: None,
        }
    }

    fn resolution(backends: Vec<Backend>, problems: Vec<Problem>) -> Resolution {
        Resolution {
            group: GroupRefState::Valid,
            backends,
            problems,
            user: UserConfig::default(),
            incoming_auth: IncomingAuth { kind: "anonymous", oidc: None, authz: None },
            env: vec![],
            volumes: vec![],
            outgoing: Default::default(),
            embedding: None,
        }
    }

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    fn reason(s: &VirtualMCPServerStatus, type_: &str) -> String {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap().reason.clone()
    }

    #[test]
    fn ready_when_the_pod_is_and_every_backend_is() {
        let r = resolution(vec![backend("a", true, None), backend("b", true, None)], vec![]);
        let s = desired_status(&vmcp(None), &r, Observed { ready_replicas: 1 }, now());
        assert_eq!((s.phase, s.backend_count), (Some(VirtualPhase::Ready), 2));
        assert_eq!(s.url, "http://vmcp-team.a.svc.cluster.local:4483");
        assert_eq!(reason(&s, CONDITION_BACKENDS), "BackendsDiscoveredSuccessfully");
        assert_eq!(s.observed_generation, Some(2));
        let stored = vmcp(Some(serde_json::to_value(&s).unwrap()));
        let again = desired_status(&stored, &r, Observed { ready_replicas: 1 }, Time("2026-02-01T00:00:00Z".parse().unwrap()));
        assert!(unchanged(stored.status.as_ref(), &again));
    }

    #[test]
    fn a_backend_down_or_not_callable_degrades_and_is_named() {
        let r =
            resolution(vec![backend("a", true, None), backend("b", false, None), backend("c", true, Some("needs credentials"))], vec![]);
        let s = desired_status(&vmcp(None), &r, Observed { ready_replicas: 1 }, now());
        assert_eq!((s.phase, s.backend_count), (Some(VirtualPhase::Degraded), 1));
        assert_eq!(s.message, "serving; backends not ready: b, c");
        assert_eq!(s.discovered_backends[2].message, "needs credentials");
    }

    #[test]
    fn problems_fail_it_and_an_empty_group_waits() {
        let r = resolution(vec![backend("a", true, None)], vec![Problem::at("spec.config.optimizer", "not carried out")]);
        let s = desired_status(&vmcp(None), &r, Observed { ready_replicas: 0 }, now());
        assert_eq!((s.phase, reason(&s, CONDITION_READY).as_str()), (Some(VirtualPhase::Failed), "ConfigurationInvalid"));
        assert_eq!(s.message, "spec.config.optimizer: not carried out");
        let s = desired_status(&vmcp(None), &resolution(vec![], vec![]), Observed { ready_replicas: 0 }, now());
        assert_eq!((s.phase, reason(&s, CONDITION_BACKENDS).as_str()), (Some(VirtualPhase::Pending), "NoBackends"));
        let s = desired_status(&vmcp(None), &resolution(vec![backend("a", true, None)], vec![]), Observed::default(), now());
        assert_eq!(reason(&s, CONDITION_READY), "DeploymentNotReady");
        let mut r = resolution(vec![backend("a", true, None)], vec![]);
        r.embedding = Some(crate::kinds::virtualmcp::resolve::Embedding { name: "embed".into(), ready: false });
        let s = desired_status(&vmcp(None), &r, Observed { ready_replicas: 0 }, now());
        assert_eq!((s.phase, reason(&s, CONDITION_READY).as_str()), (Some(VirtualPhase::Pending), "EmbeddingServerNotReady"));
        assert_eq!(reason(&s, CONDITION_EMBEDDING), "EmbeddingServerNotReady");
        assert!(s.conditions.iter().all(|c| c.type_ != CONDITION_EMBEDDING) == r.embedding.is_none());
    }
}
