//! The MCPRemoteProxy controller: each proxy is projected onto an
//! MCPServer (`remote::as_server`) and reconciled with the MCPServer's resolution,
//! children and status; only its status is written to the MCPRemoteProxy. Children
//! carry an owner reference to the proxy, so deleting it deletes them (the runner of
//! a remote proxy creates nothing of its own: no finalizer is needed).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use tracing::{Instrument, info, info_span};

use super::{Caches, Context, PERIODIC_LOOK, Shared, apply_if_changed, stopped, watch_what_it_names};
use crate::kinds::mcpserver::api::{MCPServer, Phase};
use crate::kinds::mcpserver::remote::{self, MCPRemoteProxy};
use crate::kinds::mcpserver::resources::desired_children;
use crate::kinds::mcpserver::status::{Observed, desired_status};
use crate::kinds::mcpserver::{configmaps, references};
use crate::runtime::metrics::REMOTE_PROXY_CONTROLLER as CONTROLLER;
use crate::shared::error::{Error, Result};
use crate::shared::problem::Problem;

/// The remote proxies' controller; it starts once the install holds an MCPRemoteProxy.
pub(super) async fn run(shared: Arc<Shared>, caches: Arc<Caches>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let proxies = caches.proxies.clone();
    proxies.when_first(stopped(shutdown.clone()), || serve(shared, caches, shutdown)).await
}

async fn serve(shared: Arc<Shared>, caches: Arc<Caches>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let children = caches.children.clone();
    let proxies = caches.proxies.store().clone();
    let in_group = {
        let proxies = proxies.clone();
        move |group: Arc<crate::kinds::group::MCPGroup>| {
            let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
            remote::members(&proxies.state(), &ns, &name).into_iter().map(|p| ObjectRef::new(&p).within(&ns)).collect::<Vec<_>>()
        }
    };
    let reading = {
        let proxies = proxies.clone();
        move |configmap: Arc<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>| {
            let (ns, name) = (configmap.namespace(), configmap.name_any());
            let state = proxies.state();
            let readers = state.iter().filter(|p| {
                p.namespace() == ns && remote::as_server(p).is_some_and(|s| configmaps::named(&s).iter().any(|(_, n)| *n == name))
            });
            readers.map(|p| ObjectRef::from_obj(p.as_ref())).collect::<Vec<_>>()
        }
    };
    let (c, cfg, k) = (&caches, &caches.configs, &children);
    Controller::for_shared_stream(c.proxies.everything_then_changes(), proxies.clone())
        .with_config(shared.controller_config())
        .watches_shared_stream(cfg.tool.changes(), naming(proxies.clone()))
        .watches_shared_stream(cfg.telemetry.changes(), naming(proxies.clone()))
        .watches_shared_stream(cfg.oidc.changes(), naming(proxies.clone()))
        .watches_shared_stream(cfg.authz.changes(), naming(proxies.clone()))
        .watches_shared_stream(cfg.external_auth.changes(), naming(proxies.clone()))
        .watches_shared_stream(c.groups.changes(), in_group)
        .watches_shared_stream(c.named_configmaps.changes(), reading)
        .owns_shared_stream(k.configmaps.changes())
        .owns_shared_stream(k.service_accounts.changes())
        .owns_shared_stream(k.roles.changes())
        .owns_shared_stream(k.role_bindings.changes())
        .owns_shared_stream(k.deployments.changes())
        .owns_shared_stream(k.services.changes())
        // A proxy container that cannot start, or starts again.
        .watches_shared_stream(k.pods.changes(), super::labelled_for)
        .graceful_shutdown_on(stopped(shutdown))
        .run(reconcile, error_policy, Arc::new(Context { shared: shared.clone(), caches: caches.clone(), children: children.clone() }))
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The mapper from a changed configuration object of kind K to the proxies in the
/// cache that name it (through the servers they project onto).
fn naming<K: references::Referenced>(
    proxies: kube::runtime::reflector::Store<MCPRemoteProxy>,
) -> impl Fn(Arc<K>) -> Vec<ObjectRef<MCPRemoteProxy>> + Send + Sync + 'static {
    move |config| {
        let (ns, name) = (config.namespace(), config.name_any());
        let state = proxies.state();
        let naming = state.iter().filter(|p| {
            p.namespace() == ns
                && remote::as_server(p).is_some_and(|s| [K::referenced_by(&s), K::also_referenced_by(&s)].contains(&Some(name.as_str())))
        });
        naming.map(|p| ObjectRef::from_obj(p.as_ref())).collect()
    }
}

pub(super) async fn reconcile(proxy: Arc<MCPRemoteProxy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let span = info_span!("reconcile", kind = "MCPRemoteProxy", namespace = %ns, name = %proxy.name_any());
    ctx.shared.reconciled(CONTROLLER, key(&proxy), || apply(&proxy, &ns, &ctx).instrument(span)).await
}

/// The proxy's key for its backoff (beside servers of the same name).
fn key(proxy: &MCPRemoteProxy) -> (String, String) {
    (proxy.namespace().unwrap_or_default(), format!("MCPRemoteProxy/{}", proxy.name_any()))
}

fn error_policy(proxy: Arc<MCPRemoteProxy>, error: &Error, ctx: Arc<Context>) -> Action {
    super::retry_later(
        &ctx.shared,
        CONTROLLER,
        (proxy.namespace().unwrap_or_default(), format!("MCPRemoteProxy/{}", proxy.name_any())),
        error,
    )
}

/// What the proxy asks for that must stop it: a remote URL it may not reach, a
/// field this operator does not carry out.
pub fn refusals(proxy: &MCPRemoteProxy) -> Vec<Problem> {
    let spec = &proxy.spec;
    let url = crate::shared::remote_url::check(&spec.remote_url, spec.allow_private_endpoint).err();
    let url = url.map(|e| Problem::at("spec.remoteUrl", e.to_string()));
    url.into_iter().chain(remote::unsupported_fields(spec).into_iter().map(|(field, why)| Problem::at(field, why))).collect()
}

async fn apply(proxy: &MCPRemoteProxy, ns: &str, ctx: &Context) -> Result<Action> {
    let name = proxy.name_any();
    let server = remote::as_server(proxy).ok_or(Error::MissingField("metadata.uid"))?;
    let uid = proxy.uid().ok_or(Error::MissingField("metadata.uid"))?;
    watch_what_it_names(ctx, &server, ns).await?;
    let mut resolution = super::resolve::resolve(&server, ctx.view());
    let refused = refusals(proxy);
    if !refused.is_empty() {
        // Runs no replica, as an MCPServer whose references do not resolve.
        resolution.resolved.unresolved = true;
        resolution.references.problems.extend(refused);
    }
    let mut observed = Observed { group_ref: resolution.group_ref.clone(), references: resolution.references, ..Default::default() };
    let children = desired_children(&server, &ctx.shared.proxy, &resolution.resolved).ok_or(Error::MissingField("metadata.uid"))?;
    let mut created = Vec::new();
    for child in &children {
        match apply_if_changed(ctx, ns, child, &uid).await {
            Ok(new) => created.extend(new.then(|| format!("{} {}", child.kind(), child.name()))),
            Err(err) if err.user_fixable() => {
                observed.apply_error = Some(err.to_string());
                write_status(proxy, &server, ctx, &observed).await?;
                return Err(err);
            }
            Err(err) => return Err(err),
        }
    }
    if !created.is_empty() {
        info!(namespace = %ns, name = %name, created = ?created, "created child objects");
    }
    if let Some(dep) = ctx.children.deployments.store().get(&ObjectRef::new(&name).within(ns)) {
        observed.ready_replicas = dep.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    }
    if observed.ready_replicas == 0 {
        observed.container_failure = crate::kinds::mcpserver::status::container_failure(&ctx.children.server_pods(ns, &name));
    }
    write_status(proxy, &server, ctx, &observed).await?;
    Ok(Action::requeue(PERIODIC_LOOK))
}

/// Writes the proxy's status when it changed, with an Event when its phase does.
async fn write_status(proxy: &MCPRemoteProxy, server: &MCPServer, ctx: &Context, observed: &Observed) -> Result<()> {
    let desired = remote::proxy_status(desired_status(server, observed, Time(jiff::Timestamp::now())));
    if proxy.status.as_ref() == Some(&desired) {
        return Ok(());
    }
    let phase = desired.phase.unwrap_or(Phase::Pending);
    let previous = proxy.status.as_ref().and_then(|s| s.phase).map(Phase::as_str);
    let report = super::PhaseReport { previous, phase: phase.as_str(), failed: phase == Phase::Failed, message: &desired.message };
    super::write_phase_status(&ctx.shared, proxy, &desired, report).await
}
