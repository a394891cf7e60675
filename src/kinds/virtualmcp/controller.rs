//! The VirtualMCPServer controller: it starts once the install holds a
//! VirtualMCPServer, reads the MCPServer controller's caches (groups, members, OIDC
//! configs) and shares its child watches, keeps each server's children, and writes
//! its status. Children carry an owner reference: deleting the server deletes them
//! (no finalizer: the vMCP makes nothing of its own).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Resource, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, reflector::Store},
};
use tracing::{Instrument, info_span};

use crate::kinds::embedding::EmbeddingServer;
use crate::kinds::mcpserver::controller::{
    Caches, ChildCaches, PERIODIC_LOOK, PhaseReport, Shared, apply_children, retry_later, stopped, write_phase_status,
};
use crate::kinds::virtualmcp::api::{VirtualMCPServer, VirtualPhase};
use crate::kinds::virtualmcp::children::{Resolved, desired_children};
use crate::kinds::virtualmcp::config;
use crate::kinds::virtualmcp::definition::VirtualMCPCompositeToolDefinition;
use crate::kinds::virtualmcp::resolve::{View, resolve};
use crate::kinds::virtualmcp::status::{Observed, desired_status, unchanged};
use crate::runtime::cache::Cache;
use crate::runtime::metrics::VIRTUAL_SERVER_CONTROLLER as CONTROLLER;
use crate::runtime::ondemand::OnDemand;
use crate::shared::error::{Error, Result};
use crate::shared::meta::slim_metadata;

struct Context {
    shared: Arc<Shared>,
    caches: Arc<Caches>,
    children: Arc<ChildCaches>,
    image: String,
    /// The VirtualMCPCompositeToolDefinitions, watched in a namespace only while a
    /// server there names one.
    definitions: Arc<OnDemand<VirtualMCPCompositeToolDefinition>>,
    /// The EmbeddingServers (the optimizer's embedding service).
    embeddings: Store<EmbeddingServer>,
    store: Store<VirtualMCPServer>,
}

/// How long a reconcile waits for a namespace's definitions to list.
const DEFINITIONS_SYNC: Duration = Duration::from_secs(30);

/// Runs the controller on `cache` (the VirtualMCPServers; `embeddings`, the
/// EmbeddingServers); it starts once the install holds a VirtualMCPServer.
pub async fn run(
    shared: Arc<Shared>,
    caches: Arc<Caches>,
    cache: Cache<VirtualMCPServer>,
    embeddings: Cache<EmbeddingServer>,
    image: String,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let first = cache.clone();
    first.when_first(stopped(shutdown.clone()), || serve(shared, caches, cache, embeddings, image, shutdown)).await
}

/// The VirtualMCPServers in `store` that `pick` selects, as references.
fn selecting(store: &Store<VirtualMCPServer>, pick: impl Fn(&VirtualMCPServer) -> bool) -> Vec<ObjectRef<VirtualMCPServer>> {
    store.state().iter().filter(|v| pick(v)).map(|v| ObjectRef::from_obj(v.as_ref())).collect()
}

/// Whether `vmcp` or a member of its group names an MCPExternalAuthConfig (its
/// outgoing auth, explicit or discovered).
fn names_external_auth(vmcp: &VirtualMCPServer, caches: &Caches) -> bool {
    use crate::kinds::group::members_in;
    let (ns, group) = (vmcp.namespace().unwrap_or_default(), vmcp.spec.group_ref.name.as_str());
    let explicit = vmcp
        .spec
        .outgoing_auth
        .as_ref()
        .is_some_and(|o| o.backends.values().chain(&o.default).any(|a| a.external_auth_config_ref.is_some()));
    let (servers, entries) = (caches.servers.store().state(), caches.entries.store().state());
    explicit
        || members_in(&servers, &ns, group, crate::kinds::mcpserver::group_ref::group_of).any(|m| m.spec.external_auth_config_ref.is_some())
        || members_in(&entries, &ns, group, crate::kinds::serverentry::group_of).any(|e| e.spec.external_auth_config_ref.is_some())
}

/// The mapper from a changed object to the VirtualMCPServers of its namespace that
/// name it where `named` reads.
fn naming<K: Resource>(
    store: Store<VirtualMCPServer>,
    named: fn(&VirtualMCPServer) -> Option<&String>,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<VirtualMCPServer>> + Send + Sync + 'static {
    move |object| {
        let (ns, name) = (object.meta().namespace.as_ref(), object.meta().name.as_ref());
        selecting(&store, |v| v.metadata.namespace.as_ref() == ns && named(v) == name)
    }
}

/// The mapper from a changed object to the VirtualMCPServers of its namespace whose
/// group is `group_of` it.
fn in_group_of<K: Resource>(
    store: Store<VirtualMCPServer>,
    group_of: impl Fn(&K) -> Option<String> + Send + Sync + 'static,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<VirtualMCPServer>> + Send + Sync + 'static {
    move |object| {
        let (ns, group) = (object.meta().namespace.clone(), group_of(&object));
        selecting(&store, |v| v.metadata.namespace == ns && Some(&v.spec.group_ref.name) == group.as_ref())
    }
}

/// The mapper from a changed group member to the VirtualMCPServers of its namespace
/// it concerns: those over the group it names now, and those that list it as a
/// backend still (it left their group, by an edit or its deletion).
fn member_of<K: Resource>(
    store: Store<VirtualMCPServer>,
    group_of: impl Fn(&K) -> Option<String> + Send + Sync + 'static,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<VirtualMCPServer>> + Send + Sync + 'static {
    move |member| {
        let (ns, name, group) = (member.meta().namespace.clone(), member.meta().name.clone(), group_of(&member));
        selecting(&store, |v| {
            let lists = v.status.as_ref().is_some_and(|s| s.discovered_backends.iter().any(|b| Some(&b.name) == name.as_ref()));
            v.metadata.namespace == ns && (Some(&v.spec.group_ref.name) == group.as_ref() || lists)
        })
    }
}

async fn serve(
    shared: Arc<Shared>,
    caches: Arc<Caches>,
    cache: Cache<VirtualMCPServer>,
    embeddings: Cache<EmbeddingServer>,
    image: String,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let children = caches.children.clone();
    let store = cache.store().clone();
    let definitions = Arc::new(OnDemand::new(
        caches.scopes.clone(),
        kube::runtime::watcher::Config::default(),
        |d: &mut VirtualMCPCompositeToolDefinition| slim_metadata(&mut d.metadata, &[]),
        &shared.metrics,
    ));
    let naming_definition = {
        let store = store.clone();
        move |definition: Arc<VirtualMCPCompositeToolDefinition>| {
            let (ns, name) = (definition.namespace(), definition.name_any());
            selecting(&store, |v| v.namespace() == ns && definition_names(v).contains(&name))
        }
    };
    let s = &caches;
    let ctx = Arc::new(Context {
        shared,
        caches: caches.clone(),
        children: children.clone(),
        image,
        definitions: definitions.clone(),
        embeddings: embeddings.store().clone(),
        store: store.clone(),
    });
    Controller::for_shared_stream(cache.everything_then_changes(), store.clone())
        .with_config(ctx.shared.controller_config())
        // A group's status lists its members: a member joining or leaving changes it.
        .watches_shared_stream(s.groups.changes(), in_group_of(store.clone(), |g: &crate::kinds::group::MCPGroup| g.metadata.name.clone()))
        // A member's phase: its backend's health.
        .watches_shared_stream(
            s.servers.changes(),
            member_of(store.clone(), |m| crate::kinds::mcpserver::group_ref::group_of(m).map(String::from)),
        )
        .watches_shared_stream(
            s.proxies.changes(),
            member_of(store.clone(), |p| crate::kinds::mcpserver::remote::group_of(p).map(String::from)),
        )
        .watches_shared_stream(s.entries.changes(), member_of(store.clone(), |e| crate::kinds::serverentry::group_of(e).map(String::from)))
        .watches_shared_stream(
            s.configs.oidc.changes(),
            naming(store.clone(), |v| v.spec.incoming_auth.oidc_config_ref.as_ref().map(|r| &r.name)),
        )
        .watches_shared_stream(
            s.configs.authz.changes(),
            naming(store.clone(), |v| v.spec.incoming_auth.authz_config_ref.as_ref().map(|r| &r.name)),
        )
        .watches_shared_stream(
            s.configs.telemetry.changes(),
            naming(store.clone(), |v| v.spec.telemetry_config_ref.as_ref().map(|r| &r.name)),
        )
        // Outgoing auth: named by the server or discovered from its members; a namespace
        // holds few VirtualMCPServers, so each of them looks again.
        .watches_shared_stream(s.configs.external_auth.changes(), {
            let store = store.clone();
            move |config: Arc<crate::kinds::externalauth::MCPExternalAuthConfig>| {
                selecting(&store, |v| v.metadata.namespace == config.metadata.namespace)
            }
        })
        .watches_shared_stream(definitions.changes(), naming_definition)
        .watches_shared_stream(embeddings.changes(), naming(store.clone(), |v| v.spec.embedding_server_ref.as_ref().map(|r| &r.name)))
        .owns_shared_stream(children.configmaps.changes())
        .owns_shared_stream(children.service_accounts.changes())
        .owns_shared_stream(children.deployments.changes())
        .owns_shared_stream(children.services.changes())
        .graceful_shutdown_on(stopped(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn key(vmcp: &VirtualMCPServer) -> (String, String) {
    (vmcp.namespace().unwrap_or_default(), format!("VirtualMCPServer/{}", vmcp.name_any()))
}

async fn reconcile(vmcp: Arc<VirtualMCPServer>, ctx: Arc<Context>) -> Result<Action> {
    let ns = vmcp.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let span = info_span!("reconcile", kind = "VirtualMCPServer", namespace = %ns, name = %vmcp.name_any());
    ctx.shared.reconciled(CONTROLLER, key(&vmcp), || apply(&vmcp, &ns, &ctx).instrument(span)).await
}

fn error_policy(vmcp: Arc<VirtualMCPServer>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.shared, CONTROLLER, key(&vmcp), error)
}

async fn apply(vmcp: &VirtualMCPServer, ns: &str, ctx: &Context) -> Result<Action> {
    let name = vmcp.name_any();
    let uid = vmcp.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let (s, cfg) = (&ctx.caches, &ctx.caches.configs);
    let definitions = watch_definitions(ctx, vmcp, ns).await?;
    ctx.children.watched_in(ns).await;
    // The configuration kinds are watched in a namespace once something there names one.
    if vmcp.spec.incoming_auth.oidc_config_ref.is_some() {
        cfg.oidc.watched_in(ns).await;
    }
    if vmcp.spec.incoming_auth.authz_config_ref.is_some() {
        cfg.authz.watched_in(ns).await;
    }
    if names_external_auth(vmcp, s) {
        cfg.external_auth.watched_in(ns).await;
    }
    if vmcp.spec.telemetry_config_ref.is_some() {
        cfg.telemetry.watched_in(ns).await;
    }
    let view = View {
        groups: s.groups.store(),
        servers: s.servers.store(),
        proxies: s.proxies.store(),
        entries: s.entries.store(),
        oidc: cfg.oidc.store(),
        authz: cfg.authz.store(),
        external_auth: cfg.external_auth.store(),
        telemetry: cfg.telemetry.store(),
        definitions: definitions.as_ref(),
        embeddings: &ctx.embeddings,
    };
    let resolution = resolve(vmcp, view);
    let served = resolution.served();
    let resolved = Resolved {
        image: ctx.image.clone(),
        runs: resolution.problems.is_empty() && !served.is_empty() && resolution.embedding.as_ref().is_none_or(|e| e.ready),
        debug: resolution.user.operational.as_ref().is_some_and(|o| o.log_level == "debug"),
        config: config::render(
            &name,
            &vmcp.spec.group_ref.name,
            &resolution.user,
            served,
            resolution.incoming_auth.clone(),
            config::OutgoingAuthFile::with(resolution.outgoing.clone()),
        ),
        env: resolution.env.clone(),
        volumes: resolution.volumes.clone(),
    };
    let children = desired_children(vmcp, &resolved).ok_or(Error::MissingField("metadata.uid"))?;
    apply_children(&ctx.shared, &ctx.children, ns, &name, &children, &uid).await?;
    let ready_replicas = ctx
        .children
        .deployments
        .store()
        .get(&ObjectRef::new(&name).within(ns))
        .and_then(|d| d.status.as_ref().and_then(|s| s.ready_replicas))
        .unwrap_or(0);
    let desired = desired_status(vmcp, &resolution, Observed { ready_replicas }, Time(jiff::Timestamp::now()));
    if !unchanged(vmcp.status.as_ref(), &desired) {
        let phase = desired.phase.unwrap_or(VirtualPhase::Pending);
        let previous = vmcp.status.as_ref().and_then(|s| s.phase).map(VirtualPhase::as_str);
        let report = PhaseReport { previous, phase: phase.as_str(), failed: phase == VirtualPhase::Failed, message: &desired.message };
        write_phase_status(&ctx.shared, vmcp, &desired, report).await?;
    }
    Ok(Action::requeue(PERIODIC_LOOK))
}

/// The VirtualMCPCompositeToolDefinitions `vmcp` names (spec.config.compositeToolRefs).
fn definition_names(vmcp: &VirtualMCPServer) -> Vec<String> {
    let refs = vmcp.spec.config.as_ref().and_then(|c| c.get("compositeToolRefs")).and_then(serde_json::Value::as_array);
    refs.into_iter().flatten().filter_map(|r| Some(r.get("name")?.as_str()?.to_string())).collect()
}

/// The namespace's definitions when `vmcp` names any (the watch started and listed);
/// otherwise None, and the watch stopped when no server there names one.
async fn watch_definitions(ctx: &Context, vmcp: &VirtualMCPServer, ns: &str) -> Result<Option<Store<VirtualMCPCompositeToolDefinition>>> {
    if !definition_names(vmcp).is_empty() {
        let store = tokio::time::timeout(DEFINITIONS_SYNC, ctx.definitions.ensure(ns))
            .await
            .map_err(|_| Error::NotSynced("virtualmcpcompositetooldefinitions"))?;
        return Ok(Some(store));
    }
    if ctx.definitions.watched(ns) {
        let naming = |v: &Arc<VirtualMCPServer>| {
            v.namespace().as_deref() == Some(ns) && v.metadata.deletion_timestamp.is_none() && !definition_names(v).is_empty()
        };
        if !ctx.store.state().iter().any(naming) {
            ctx.definitions.stop(ns);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    //! The reconciler against a mocked API server (kube's client over `tower-test`):
    //! what a new VirtualMCPServer asks of the API, and that an unchanged one asks
    //! nothing.
    use serde_json::{Value, json};

    use super::*;
    use crate::kinds::mcpserver::api::MCPServer;
    use crate::runtime::metrics::Metrics;
    use crate::runtime::mock::{applied_names, applied_objects, mock_api, writes};
    use kube::Client;

    fn mock() -> (Client, crate::runtime::mock::Calls) {
        mock_api(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "VirtualMCPServer",
            "metadata": {"name": "team", "namespace": "team"},
            "spec": {"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}}}))
    }

    fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
        serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": kind,
            "metadata": {"name": name, "namespace": "team", "uid": format!("{name}-uid"), "generation": 1}, "spec": spec}))
        .unwrap()
    }

    fn context(client: &Client, vmcp: &VirtualMCPServer, children: Vec<Value>) -> Arc<Context> {
        let server: MCPServer =
            object("MCPServer", "fetch", json!({"image": "f", "transport": "streamable-http", "groupRef": {"name": "g"}}));
        let mut group: crate::kinds::group::MCPGroup = object("MCPGroup", "g", json!({}));
        group.status = serde_json::from_value(json!({"phase": "Ready"})).unwrap();
        let proxy = crate::kinds::mcpserver::resources::ProxySettings::new("runner:test");
        Arc::new(Context {
            shared: Arc::new(Shared::new(client.clone(), Metrics::default(), proxy, "test".into(), 4)),
            caches: Arc::new(Caches::listed(client, vec![server], vec![group])),
            children: Arc::new(ChildCaches::listed(&children)),
            image: "vmcp:test".into(),
            definitions: Arc::new(OnDemand::new(
                crate::runtime::cache::Scopes::new(vec![None], crate::runtime::watch_client::WatchConnections::single(client.clone())),
                kube::runtime::watcher::Config::default(),
                |_| {},
                &Metrics::default(),
            )),
            embeddings: Cache::listed(vec![]).store().clone(),
            store: Cache::listed(vec![vmcp.clone()]).store().clone(),
        })
    }

    #[tokio::test]
    async fn a_new_server_gets_its_children_and_status_and_an_unchanged_one_costs_no_write() {
        let (client, calls) = mock();
        let vmcp: VirtualMCPServer =
            object("VirtualMCPServer", "team", json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}}));
        let ctx = context(&client, &vmcp, vec![]);
        reconcile(Arc::new(vmcp.clone()), ctx.clone()).await.unwrap();
        assert_eq!(applied_names(&calls), ["team-vmcp-config", "team-vmcp", "team", "vmcp-team"], "{calls:#?}");
        let made = calls.lock().unwrap().clone();
        let (_, _, status) = made.iter().find(|(m, p, _)| m == "PATCH" && p.contains("/virtualmcpservers/team/status")).expect("a status");
        assert_eq!(status["status"]["phase"], "Pending");
        assert_eq!(status["status"]["discoveredBackends"][0]["name"], "fetch");
        let config =
            made.iter().find(|(_, p, _)| p.contains("/configmaps/team-vmcp-config")).map(|(_, _, b)| b["data"]["config.yaml"].clone());
        assert!(config.and_then(|c| c.as_str().map(|c| c.contains("mcp-fetch-proxy.team.svc.cluster.local:8080/mcp"))).unwrap_or(false));
        assert_eq!(made.iter().filter(|(_, p, _)| p.contains("/events")).count(), 1, "one Event: the first phase");

        // The same world again, as the watches now show it: nothing is written.
        let stored = applied_objects(&calls);
        let mut written = vmcp.clone();
        written.status = serde_json::from_value(status["status"].clone()).unwrap();
        let again = context(&client, &written, stored);
        // The same operator: its record of what it applied carries over.
        let again = Arc::new(Context { shared: ctx.shared.clone(), ..Arc::try_unwrap(again).ok().unwrap() });
        calls.lock().unwrap().clear();
        reconcile(Arc::new(written), again).await.unwrap();
        let writes = writes(&calls);
        assert!(writes.is_empty(), "an unchanged VirtualMCPServer writes nothing: {writes:#?}");
    }
}
