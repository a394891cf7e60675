//! The StatefulSet the proxy runner makes for its MCP server (the operator never
//! builds it): adopted under the MCPServer, so garbage collection removes it and the
//! Services the runner hangs off it; and healed, when it goes missing under a proxy
//! that is already up, by rolling the proxy so its runner makes it again (the runner
//! makes it only when it starts).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{events::EventType, reflector::ObjectRef},
};
use serde_json::json;
use tracing::info;

use super::Context;
use crate::kinds::mcpserver::api::MCPServer;
use crate::shared::config::FIELD_MANAGER;
use crate::shared::error::{Error, Result};

/// Pod-template annotation of the proxy Deployment set when it is rolled to make its
/// runner recreate a missing StatefulSet (applied by its own field manager, so the
/// operator's apply of the Deployment neither removes it nor conflicts with it).
pub const HEALED_AT_ANNOTATION: &str = "toolhive.stacklok.dev/healed-at";
const HEAL_MANAGER: &str = "toolhive-operator-heal";
/// How long after a roll the proxy is given to recreate the StatefulSet before it is
/// rolled again: a runner that cannot make it must not be restarted in a loop.
pub const HEAL_COOLDOWN: Duration = Duration::from_secs(120);
/// How soon a server whose StatefulSet is missing is looked at again.
pub const MISSING_RECHECK: Duration = Duration::from_secs(10);

/// What to do about the runner's StatefulSet, from what the caches show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadStep {
    /// Nothing: adopted already, or the proxy is not up yet (it makes it on start).
    Nothing,
    /// Set the MCPServer as its controller.
    Adopt,
    /// Missing under a running proxy: roll the proxy.
    Heal,
    /// Missing, the proxy was rolled lately: wait for it.
    Wait,
    /// Another controller owns it: leave it alone.
    Foreign,
}

/// Pure: the step for a StatefulSet's owner references (None: missing), the proxy's
/// available replicas and when the proxy was last rolled for it.
pub fn step(owners: Option<&[OwnerReference]>, server_uid: &str, available: i32, healed: Option<Instant>, now: Instant) -> WorkloadStep {
    match owners {
        Some(owners) if owners.iter().any(|o| o.uid == server_uid && o.controller == Some(true)) => WorkloadStep::Nothing,
        Some(owners) if owners.iter().any(|o| o.controller == Some(true)) => WorkloadStep::Foreign,
        Some(_) => WorkloadStep::Adopt,
        None if available == 0 => WorkloadStep::Nothing,
        None if healed.is_some_and(|at| now.duration_since(at) < HEAL_COOLDOWN) => WorkloadStep::Wait,
        None => WorkloadStep::Heal,
    }
}

/// Adopts or heals `server`'s StatefulSet; Some(delay) asks for another look soon.
pub async fn ensure(ctx: &Context, server: &MCPServer, ns: &str, available: i32) -> Result<Option<Duration>> {
    let name = server.name_any();
    let uid = server.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let cached = ctx.children.statefulsets.store().get(&ObjectRef::new(&name).within(ns));
    let key = (ns.to_string(), name.clone());
    let healed = ctx.shared.healed.lock().get(&key).copied();
    let owners = cached.as_ref().map(|s| s.metadata.owner_references.clone().unwrap_or_default());
    match step(owners.as_deref(), &uid, available, healed, Instant::now()) {
        WorkloadStep::Nothing | WorkloadStep::Foreign => {
            ctx.shared.healed.lock().remove(&key);
            Ok(None)
        }
        WorkloadStep::Wait => Ok(Some(MISSING_RECHECK)),
        WorkloadStep::Adopt => {
            let owner = OwnerReference {
                block_owner_deletion: Some(true),
                ..server.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?
            };
            let body = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "ownerReferences": [owner]}});
            let api: Api<StatefulSet> = Api::namespaced(ctx.shared.client.clone(), ns);
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&body)).await?;
            info!(namespace = %ns, name = %name, "adopted the runner's StatefulSet");
            Ok(None)
        }
        WorkloadStep::Heal => {
            let at = jiff::Timestamp::now().to_string();
            let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"template": {"metadata": {"annotations": {HEALED_AT_ANNOTATION: at}}}}});
            let api: Api<Deployment> = Api::namespaced(ctx.shared.client.clone(), ns);
            api.patch(&name, &PatchParams::apply(HEAL_MANAGER).force(), &Patch::Apply(&body)).await?;
            ctx.shared.healed.lock().insert(key, Instant::now());
            let note = format!("the runner's StatefulSet {name} is missing; the proxy is rolled so its runner makes it again");
            info!(namespace = %ns, name = %name, "{note}");
            super::report::publish_to(&ctx.shared, &server.object_ref(&()), EventType::Warning, "WorkloadMissing", &note).await;
            Ok(Some(MISSING_RECHECK))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference { uid: uid.into(), controller: Some(controller), ..Default::default() }
    }

    #[test]
    fn the_step_follows_ownership_availability_and_the_cooldown() {
        let now = Instant::now();
        assert_eq!(step(Some(&[owner("s", true)]), "s", 1, None, now), WorkloadStep::Nothing);
        assert_eq!(step(Some(&[]), "s", 1, None, now), WorkloadStep::Adopt);
        assert_eq!(step(Some(&[owner("other", false)]), "s", 0, None, now), WorkloadStep::Adopt);
        assert_eq!(step(Some(&[owner("other", true)]), "s", 1, None, now), WorkloadStep::Foreign);
        assert_eq!(step(None, "s", 0, None, now), WorkloadStep::Nothing, "the proxy makes it when it first starts");
        assert_eq!(step(None, "s", 1, None, now), WorkloadStep::Heal);
        assert_eq!(step(None, "s", 1, Some(now), now + Duration::from_secs(30)), WorkloadStep::Wait);
        assert_eq!(step(None, "s", 1, Some(now), now + HEAL_COOLDOWN), WorkloadStep::Heal);
    }
}
