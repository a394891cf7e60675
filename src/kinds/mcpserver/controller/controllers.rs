//! The controllers of the install, one per kind whatever the namespaces it serves,
//! each started once the install holds an object of its kind, on the shared caches.

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Client, ResourceExt,
    runtime::{Controller, reflector::ObjectRef},
};
use tracing::{info, warn};

use super::{Caches, Context, Shared, error_policy, reconcile, remote};
use crate::kinds::mcpserver::{group_ref, references, resources};
use crate::runtime::status::run_config_status;

/// Resolves when `shutdown` flips to true.
pub async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the controllers of MCPServers, remote proxies, MCPGroups, MCPServerEntries
/// and the configuration kinds' status on the caches until `shutdown` flips to true.
/// Each starts once the install holds an object of its kind; a configuration kind is
/// watched in a namespace, and its objects' status written, once something there
/// names one (`ConfigCaches::named_by`).
pub async fn run(shared: Arc<Shared>, caches: Arc<Caches>, shutdown: tokio::sync::watch::Receiver<bool>) {
    // A kind whose CRD is missing (an older CRDs chart) never lists: its references
    // resolve as not found, and the rest of the operator still runs.
    if tokio::time::timeout(crate::runtime::cache::FIRST_LIST_WAIT, caches.ready()).await.is_err() {
        warn!("not every cache has listed yet (is every CRD of the CRDs chart installed?); starting anyway");
    }
    info!(scopes = caches.scopes.len(), watches_per_scope = Caches::WATCHES, "starting the controllers");
    let client = shared.client.clone();
    let c = &caches;
    let cfg = &caches.configs;
    let servers_controller = run_servers(shared.clone(), caches.clone(), shutdown.clone());
    // Each of these starts once the install holds an object of its kind. What one subscribes to (a change stream holds
    // every change until read) is made when it starts, never before.
    let groups = c.groups.when_first(stopped(shutdown.clone()), {
        let (caches, client, shutdown) = (caches.clone(), client.clone(), shutdown.clone());
        || async move { run_groups(client, &caches, stopped(shutdown)).await }
    });
    let entries = c.entries.when_first(stopped(shutdown.clone()), {
        let (caches, client, shutdown) = (caches.clone(), client.clone(), shutdown.clone());
        || async move {
            let (entries, groups, auth) = (caches.entries.clone(), caches.groups.clone(), caches.configs.external_auth.clone());
            crate::kinds::serverentry::run(client, entries, groups, auth, stopped(shutdown)).await
        }
    });
    let (cl, sd) = (&client, &shutdown);
    let configs = futures::future::join(
        futures::future::join3(
            config_status_when_first(cl, &cfg.tool, sd),
            config_status_when_first(cl, &cfg.telemetry, sd),
            config_status_when_first(cl, &cfg.oidc, sd),
        ),
        futures::future::join3(
            config_status_when_first(cl, &cfg.authz, sd),
            config_status_when_first(cl, &cfg.webhook, sd),
            config_status_when_first(cl, &cfg.external_auth, sd),
        ),
    );
    let proxies = remote::run(shared.clone(), caches.clone(), shutdown.clone());
    futures::future::join5(servers_controller, proxies, groups, entries, configs).await;
    info!("controllers stopped");
}

/// The status controller of a configuration kind, once the install holds one.
async fn config_status_when_first<K: crate::shared::configkind::ConfigKind>(
    client: &Client,
    cache: &crate::runtime::cache::Cache<K>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) {
    cache.when_first(stopped(shutdown.clone()), || run_config_status(client.clone(), cache.clone(), stopped(shutdown.clone()))).await
}

/// The MCPGroup controller: a group lists the servers, remote proxies and entries
/// that name it, and a member's change triggers its group.
async fn run_groups(client: Client, c: &Caches, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    use crate::kinds::group::{MemberKind, groups_concerned};
    let concerned = |groups: kube::runtime::reflector::Store<crate::kinds::group::MCPGroup>, kind: MemberKind| {
        move |meta: &kube::api::ObjectMeta, now: Option<&str>| {
            let (ns, name) = (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
            futures::stream::iter(groups_concerned(&groups, &ns, &name, kind, now))
        }
    };
    let (server_groups, proxy_groups, entry_groups) = (
        concerned(c.groups.store().clone(), MemberKind::Server),
        concerned(c.groups.store().clone(), MemberKind::RemoteProxy),
        concerned(c.groups.store().clone(), MemberKind::Entry),
    );
    let member_changes = futures::stream::select(
        futures::stream::select(
            c.servers.changes().flat_map(move |s| server_groups(&s.metadata, group_ref::group_of(&s))),
            c.proxies.changes().flat_map(move |p| proxy_groups(&p.metadata, crate::kinds::mcpserver::remote::group_of(&p))),
        ),
        c.entries.changes().flat_map(move |e| entry_groups(&e.metadata, crate::kinds::serverentry::group_of(&e))),
    );
    let (servers, entries, proxies) = (c.servers.store().clone(), c.entries.store().clone(), c.proxies.store().clone());
    let members: crate::kinds::group::Members = Arc::new(move |ns, group| crate::kinds::group::GroupMembers {
        servers: group_ref::members(&servers.state(), ns, group),
        remote_proxies: crate::kinds::mcpserver::remote::members(&proxies.state(), ns, group),
        entries: crate::kinds::serverentry::members(&entries.state(), ns, group),
    });
    crate::kinds::group::run(client, c.groups.clone(), member_changes, members, shutdown).await
}

/// The MCPServer controller. It starts once the install holds an MCPServer; what
/// the operator makes for servers is watched in a namespace once a server there is
/// reconciled: a namespace with no server costs none of those watches.
async fn run_servers(shared: Arc<Shared>, caches: Arc<Caches>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let servers = caches.servers.clone();
    servers.when_first(stopped(shutdown.clone()), || serve_servers(shared, caches, shutdown)).await
}

async fn serve_servers(shared: Arc<Shared>, caches: Arc<Caches>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let children = caches.children.clone();
    let servers = caches.servers.store().clone();
    let members_of = servers.clone();
    // A change to a group reconciles the servers that name it (found in the server cache).
    let naming_servers = move |group: Arc<crate::kinds::group::MCPGroup>| {
        let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
        group_ref::members(&members_of.state(), &ns, &name).into_iter().map(move |s| ObjectRef::new(&s).within(&ns)).collect::<Vec<_>>()
    };
    let (c, cfg, k) = (&caches, &caches.configs, &children);
    // The configuration kinds: resolved into the RunConfig; a change reconciles the
    // servers that reference it (so the proxy rolls), found in the server cache.
    // A new tenancy policy: every server is checked again (its PolicyCompliant condition).
    let policy_changes = match &shared.policy {
        Some(policy) => futures::stream::unfold(policy.changes.clone(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .boxed(),
        None => futures::stream::pending().boxed(),
    };
    Controller::for_shared_stream(c.servers.everything_then_changes(), servers.clone())
        .with_config(shared.controller_config())
        .reconcile_all_on(policy_changes)
        .watches_shared_stream(c.groups.changes(), naming_servers)
        .watches_shared_stream(cfg.tool.changes(), references::referrers(servers.clone()))
        .watches_shared_stream(cfg.telemetry.changes(), references::referrers(servers.clone()))
        .watches_shared_stream(cfg.oidc.changes(), references::referrers(servers.clone()))
        .watches_shared_stream(cfg.authz.changes(), references::referrers(servers.clone()))
        .watches_shared_stream(cfg.webhook.changes(), references::referrers(servers.clone()))
        .watches_shared_stream(cfg.external_auth.changes(), references::referrers(servers.clone()))
        // The ConfigMaps servers name for their proxies, where they are watched.
        .watches_shared_stream(c.named_configmaps.changes(), crate::kinds::mcpserver::configmaps::readers(servers.clone()))
        .owns_shared_stream(k.configmaps.changes())
        .owns_shared_stream(k.service_accounts.changes())
        .owns_shared_stream(k.roles.changes())
        .owns_shared_stream(k.role_bindings.changes())
        .owns_shared_stream(k.deployments.changes())
        .owns_shared_stream(k.services.changes())
        // A proxy or MCP server container that cannot start, or starts again.
        .watches_shared_stream(k.pods.changes(), labelled_for)
        // The runner's StatefulSet: made (adopt it), or gone (heal it).
        .watches_shared_stream(k.statefulsets.changes(), labelled_for)
        .graceful_shutdown_on(stopped(shutdown))
        .run(reconcile, error_policy, Arc::new(Context { shared: shared.clone(), caches: caches.clone(), children: children.clone() }))
        // Watch failures are the caches' (retried and counted there); results are
        // already recorded by reconcile and error_policy.
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The server (or remote proxy) an object the runner or the operator made belongs
/// to, by its `toolhive-name` label: the pods and StatefulSets carry no owner
/// reference to it.
pub(super) fn labelled_for<T: kube::Resource<DynamicType = ()>>(object: Arc<impl kube::Resource>) -> Option<ObjectRef<T>> {
    let name = object.labels().get(resources::NAME_LABEL)?.clone();
    Some(ObjectRef::new(&name).within(&object.namespace()?))
}
