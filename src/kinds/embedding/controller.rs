//! The EmbeddingServer controller: it starts once the install holds an
//! EmbeddingServer, shares the MCPServer controller's StatefulSet and Service watches,
//! keeps each server's StatefulSet and Service, and writes its status. Children carry
//! an owner reference: deleting the server deletes them (no finalizer: nothing else
//! is made; the cache volumes stay, as a StatefulSet's claims do).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action},
};
use tracing::{Instrument, info_span};

use crate::kinds::embedding::api::{EmbeddingPhase, EmbeddingServer, invalid};
use crate::kinds::embedding::children::desired_children;
use crate::kinds::embedding::status::{Observed, desired_status};
use crate::kinds::mcpserver::controller::{
    Caches, ChildCaches, PERIODIC_LOOK, PhaseReport, Shared, apply_children, retry_later, stopped, write_phase_status,
};
use crate::runtime::cache::Cache;
use crate::runtime::metrics::EMBEDDING_SERVER_CONTROLLER as CONTROLLER;
use crate::shared::error::{Error, Result};

struct Context {
    shared: Arc<Shared>,
    children: Arc<ChildCaches>,
}

/// Runs the controller on `cache`; it starts once the install holds an EmbeddingServer.
pub async fn run(shared: Arc<Shared>, caches: Arc<Caches>, cache: Cache<EmbeddingServer>, shutdown: tokio::sync::watch::Receiver<bool>) {
    cache.clone().when_first(stopped(shutdown.clone()), || serve(shared, cache, caches.children.clone(), shutdown)).await
}

async fn serve(
    shared: Arc<Shared>,
    cache: Cache<EmbeddingServer>,
    children: Arc<ChildCaches>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let ctx = Arc::new(Context { shared, children: children.clone() });
    Controller::for_shared_stream(cache.everything_then_changes(), cache.store().clone())
        .with_config(ctx.shared.controller_config())
        .owns_shared_stream(children.statefulsets.changes())
        .owns_shared_stream(children.services.changes())
        .graceful_shutdown_on(stopped(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn key(server: &EmbeddingServer) -> (String, String) {
    (server.namespace().unwrap_or_default(), format!("EmbeddingServer/{}", server.name_any()))
}

async fn reconcile(server: Arc<EmbeddingServer>, ctx: Arc<Context>) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let span = info_span!("reconcile", kind = "EmbeddingServer", namespace = %ns, name = %server.name_any());
    ctx.shared.reconciled(CONTROLLER, key(&server), || apply(&server, &ns, &ctx).instrument(span)).await
}

fn error_policy(server: Arc<EmbeddingServer>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.shared, CONTROLLER, key(&server), error)
}

async fn apply(server: &EmbeddingServer, ns: &str, ctx: &Context) -> Result<Action> {
    let name = server.name_any();
    let uid = server.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let problems = invalid(&server.spec);
    ctx.children.watched_in(ns).await;
    // A spec that cannot run as written runs not at all (stored before the webhook refused it).
    if problems.is_empty() {
        let children = desired_children(server, &ctx.shared.proxy.default_image_pull_secrets).ok_or(Error::MissingField("metadata.uid"))?;
        apply_children(&ctx.shared, &ctx.children, ns, &name, &children, &uid).await?;
    }
    // The cache keeps StatefulSets' metadata only: their counts are read when one exists.
    let cached = ctx.children.statefulsets.store().get(&kube::runtime::reflector::ObjectRef::new(&name).within(ns)).is_some();
    let observed = if cached {
        let set = Api::<StatefulSet>::namespaced(ctx.shared.client.clone(), ns).get_opt(&name).await?;
        set.and_then(|s| s.status).map(|s| Observed { replicas: s.replicas, ready_replicas: s.ready_replicas.unwrap_or(0) })
    } else {
        None
    };
    let desired = desired_status(server, &problems, observed, Time(jiff::Timestamp::now()));
    if server.status.as_ref() != Some(&desired) {
        let phase = desired.phase.unwrap_or(EmbeddingPhase::Pending);
        let previous = server.status.as_ref().and_then(|s| s.phase).map(EmbeddingPhase::as_str);
        let report = PhaseReport { previous, phase: phase.as_str(), failed: phase == EmbeddingPhase::Failed, message: &desired.message };
        write_phase_status(&ctx.shared, server, &desired, report).await?;
    }
    Ok(Action::requeue(PERIODIC_LOOK))
}

#[cfg(test)]
mod tests {
    //! The reconciler against a mocked API server: what a new EmbeddingServer asks of
    //! the API, that an unchanged one asks nothing, and that one that cannot run gets
    //! no children, only its reason.
    use serde_json::{Value, json};

    use super::*;
    use crate::runtime::metrics::Metrics;
    use crate::runtime::mock::{Calls, applied_names, applied_objects, mock_api, writes};
    use kube::Client;

    fn server(spec: Value) -> EmbeddingServer {
        serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "EmbeddingServer",
            "metadata": {"name": "embed", "namespace": "team", "uid": "embed-uid", "generation": 1}, "spec": spec}))
        .unwrap()
    }

    fn mock() -> (Client, Calls) {
        mock_api(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "EmbeddingServer",
            "metadata": {"name": "embed", "namespace": "team"}, "spec": {}}))
    }

    fn context(client: &Client, children: &[Value], shared: Option<Arc<Shared>>) -> Arc<Context> {
        let proxy = crate::kinds::mcpserver::resources::ProxySettings::new("runner:test");
        let shared = shared.unwrap_or_else(|| Arc::new(Shared::new(client.clone(), Metrics::default(), proxy, "test".into(), 4)));
        Arc::new(Context { shared, children: Arc::new(ChildCaches::listed(children)) })
    }

    fn status_of(calls: &Calls) -> Value {
        let calls = calls.lock().unwrap();
        let (_, _, body) = calls.iter().find(|(m, p, _)| m == "PATCH" && p.contains("/embeddingservers/embed/status")).expect("a status");
        body["status"].clone()
    }

    #[tokio::test]
    async fn a_new_server_gets_its_statefulset_service_and_status_and_an_unchanged_one_costs_no_write() {
        let (client, calls) = mock();
        let embedding = server(json!({"model": "m"}));
        let ctx = context(&client, &[], None);
        reconcile(Arc::new(embedding.clone()), ctx.clone()).await.unwrap();
        assert_eq!(applied_names(&calls), ["embed", "embed"], "the StatefulSet, then the Service: {calls:#?}");
        let status = status_of(&calls);
        assert_eq!((status["phase"].as_str(), status["url"].as_str()), (Some("Pending"), Some("http://embed.team.svc.cluster.local:8080")));

        let mut written = embedding.clone();
        written.status = serde_json::from_value(status).unwrap();
        let again = context(&client, &applied_objects(&calls), Some(ctx.shared.clone()));
        calls.lock().unwrap().clear();
        reconcile(Arc::new(written), again).await.unwrap();
        let writes = writes(&calls);
        assert!(writes.is_empty(), "an unchanged EmbeddingServer writes nothing: {writes:#?}");
    }

    #[tokio::test]
    async fn a_server_that_cannot_run_gets_no_children_and_fails_with_the_field() {
        let (client, calls) = mock();
        // Stored before the webhook refused it: a podTemplateSpec that is not a pod template.
        let broken = server(json!({"podTemplateSpec": {"spec": {"containers": "many"}}}));
        reconcile(Arc::new(broken), context(&client, &[], None)).await.unwrap();
        assert!(applied_names(&calls).is_empty());
        let status = status_of(&calls);
        assert_eq!(status["phase"], "Failed");
        assert!(status["message"].as_str().unwrap().starts_with("spec.podTemplateSpec: not a pod template at spec.containers"), "{status}");
    }
}
