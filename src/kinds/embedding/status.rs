//! An EmbeddingServer's status from its spec's problems and what its StatefulSet
//! shows: the reference's phases (Pending, Downloading while pods exist and none is
//! ready, Ready, Failed), its URL and ready replicas, and a Ready condition. Pure; an
//! unchanged world yields an identical status, so nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::kinds::embedding::api::{EmbeddingPhase, EmbeddingServer, EmbeddingServerStatus};
use crate::shared::conditions::condition;

pub const CONDITION_READY: &str = "Ready";

/// What the StatefulSet shows; None while there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub replicas: i32,
    pub ready_replicas: i32,
}

/// `problems`: what in the spec cannot run, each as `(field, why)`.
pub fn desired_status(
    server: &EmbeddingServer,
    problems: &[(String, String)],
    observed: Option<Observed>,
    now: Time,
) -> EmbeddingServerStatus {
    let (phase, reason, message) = if !problems.is_empty() {
        let message = problems.iter().map(|(field, why)| format!("{field}: {why}")).collect::<Vec<_>>().join("; ");
        (EmbeddingPhase::Failed, "ConfigurationInvalid", message)
    } else {
        match observed {
            Some(o) if o.ready_replicas > 0 => (EmbeddingPhase::Ready, "StatefulSetReady", "the embedding server is running".to_string()),
            Some(o) if o.replicas > 0 => (
                EmbeddingPhase::Downloading,
                "ModelLoading",
                "waiting for the model to download and load (the pod is not ready yet)".to_string(),
            ),
            _ => (EmbeddingPhase::Pending, "StatefulSetNotReady", "waiting for the StatefulSet".to_string()),
        }
    };
    let previous = server.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = server.metadata.generation;
    let ready = if phase == EmbeddingPhase::Ready { "True" } else { "False" };
    EmbeddingServerStatus {
        conditions: vec![condition(previous, CONDITION_READY, ready, reason, &message, generation, &now)],
        phase: Some(phase),
        message,
        url: crate::kinds::embedding::children::url(server),
        ready_replicas: observed.map_or(0, |o| o.ready_replicas),
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(status: Option<&EmbeddingServerStatus>) -> EmbeddingServer {
        let mut s: EmbeddingServer =
            serde_json::from_value(json!({"metadata": {"name": "e", "namespace": "a", "generation": 3}, "spec": {}})).unwrap();
        s.status = status.cloned();
        s
    }

    fn at(day: u8) -> Time {
        Time(format!("2026-01-{day:02}T00:00:00Z").parse().unwrap())
    }

    #[test]
    fn phases_follow_the_statefulset_and_an_unchanged_world_is_an_identical_status() {
        let pending = desired_status(&server(None), &[], None, at(1));
        assert_eq!((pending.phase, pending.ready_replicas), (Some(EmbeddingPhase::Pending), 0));
        let loading = desired_status(&server(None), &[], Some(Observed { replicas: 1, ready_replicas: 0 }), at(1));
        assert_eq!(loading.phase, Some(EmbeddingPhase::Downloading));
        let ready = desired_status(&server(None), &[], Some(Observed { replicas: 1, ready_replicas: 1 }), at(1));
        assert_eq!((ready.phase, ready.ready_replicas, ready.observed_generation), (Some(EmbeddingPhase::Ready), 1, Some(3)));
        assert_eq!(ready.url, "http://e.a.svc.cluster.local:8080");
        assert_eq!(ready.conditions[0].status, "True");
        let again = desired_status(&server(Some(&ready)), &[], Some(Observed { replicas: 1, ready_replicas: 1 }), at(2));
        assert_eq!(again, ready, "the transition time is kept");
    }

    #[test]
    fn a_spec_that_cannot_run_fails_with_the_field_and_why() {
        let problems = [("spec.podTemplateSpec".to_string(), "not carried out".to_string())];
        let failed = desired_status(&server(None), &problems, Some(Observed { replicas: 1, ready_replicas: 1 }), at(1));
        assert_eq!(failed.phase, Some(EmbeddingPhase::Failed));
        assert_eq!(failed.message, "spec.podTemplateSpec: not carried out");
        assert_eq!(failed.conditions[0].reason, "ConfigurationInvalid");
    }
}
