//! The MCPServer reconciler. One `Controller` per watch scope: the whole cluster, or
//! one per allowed namespace, each with its own stores (a relist in one namespace
//! never touches another's cache).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, Pod, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::api::{FINALIZER, MCPServer, MCPServerStatus, Phase, RESTARTED_AT_ANNOTATION};
use crate::authz::MCPAuthzConfig;
use crate::config::{FIELD_MANAGER, Scope};
use crate::error::{Error, Result};
use crate::externalauth::MCPExternalAuthConfig;
use crate::group::{GroupRefState, MCPGroup};
use crate::metrics::{CONTROLLER, Metrics};
use crate::oidc::MCPOIDCConfig;
use crate::resources::{self, Child, MANAGED_SELECTOR, desired_children};
use crate::sharedconfig;
use crate::status::{Observed, desired_status};
use crate::telemetry::MCPTelemetryConfig;
use crate::toolconfig::MCPToolConfig;
use crate::webhookconfig::MCPWebhookConfig;

/// State shared by every watch scope.
pub struct Shared {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub proxy: resources::ProxySettings,
    /// Per child: (hash, generation-or-resourceVersion) after our last apply. A child
    /// whose annotation hash and version still match is not written again.
    applied: Mutex<HashMap<ChildKey, (String, String)>>,
    /// Phase per MCPServer, for the `toolhive_mcpservers` gauge.
    phases: Mutex<HashMap<(String, String), Phase>>,
    /// Consecutive failures per MCPServer, for exponential backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Reconciles in flight across every scope. Bounding them bounds the API
    /// connections (each holds TLS buffers) and so the memory a burst costs; the API
    /// server, not the operator, limits throughput beyond a few dozen.
    reconcile_slots: tokio::sync::Semaphore,
    /// Per MCPServer: (uid, generation, status) of our last status write. The watch
    /// cache can lag behind our own write; this keeps a reconcile that sees the older
    /// object from writing (and announcing) the same status twice. Only the operator
    /// writes MCPServer status.
    status_written: Mutex<HashMap<(String, String), WrittenStatus>>,
}

/// A status the operator wrote, and for which incarnation and generation of the object.
struct WrittenStatus {
    uid: String,
    generation: Option<i64>,
    status: MCPServerStatus,
}

type ChildKey = (String, &'static str, String);

impl Shared {
    pub fn new(
        client: Client,
        metrics: Metrics,
        proxy: resources::ProxySettings,
        instance: String,
        max_concurrent_reconciles: usize,
    ) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            proxy,
            applied: Mutex::default(),
            phases: Mutex::default(),
            failures: Mutex::default(),
            reconcile_slots: tokio::sync::Semaphore::new(max_concurrent_reconciles.max(1)),
            status_written: Mutex::default(),
        }
    }
}

/// Metadata-only caches of the children in one watch scope.
#[derive(Clone)]
struct ChildStores {
    configmaps: Store<PartialObjectMeta<ConfigMap>>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    roles: Store<PartialObjectMeta<Role>>,
    role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    /// Whole Deployments minus their spec: the status (ready replicas, rollout
    /// conditions) is read from here, never fetched.
    deployments: Store<Deployment>,
    services: Store<PartialObjectMeta<Service>>,
}

impl ChildStores {
    /// The cached metadata of the object `child` describes, if the operator sees one.
    fn meta(&self, child: &Child, ns: &str) -> Option<ObjectMeta> {
        fn get<K: Resource<DynamicType = ()> + Clone>(s: &Store<K>, ns: &str, name: &str) -> Option<ObjectMeta> {
            s.get(&ObjectRef::new(name).within(ns)).map(|o| o.meta().clone())
        }
        let name = child.name();
        match child {
            Child::ConfigMap(_) => get(&self.configmaps, ns, name),
            Child::ServiceAccount(_) => get(&self.service_accounts, ns, name),
            Child::Role(_) => get(&self.roles, ns, name),
            Child::RoleBinding(_) => get(&self.role_bindings, ns, name),
            Child::Deployment(_) => get(&self.deployments, ns, name),
            Child::Service(_) => get(&self.services, ns, name),
        }
    }
}

pub struct Context {
    pub shared: Arc<Shared>,
    stores: ChildStores,
    /// MCPGroups in the scope, for the GroupRefValidated condition.
    groups: Store<MCPGroup>,
    /// MCPToolConfigs in the scope, resolved into the RunConfig.
    tool_configs: Store<MCPToolConfig>,
    /// MCPTelemetryConfigs in the scope, resolved into the RunConfig and the proxy.
    telemetry_configs: Store<MCPTelemetryConfig>,
    /// MCPOIDCConfigs in the scope, resolved into the RunConfig and the proxy.
    oidc_configs: Store<MCPOIDCConfig>,
    /// MCPAuthzConfigs in the scope, resolved into the RunConfig.
    authz_configs: Store<MCPAuthzConfig>,
    /// MCPWebhookConfigs in the scope, resolved into the RunConfig and the proxy.
    webhook_configs: Store<MCPWebhookConfig>,
    /// MCPExternalAuthConfigs in the scope, resolved into the RunConfig and the proxy.
    external_auth_configs: Store<MCPExternalAuthConfig>,
    /// Metadata of every ConfigMap in the scope: whether the ConfigMaps servers name
    /// exist, and their versions.
    named_configmaps: Store<PartialObjectMeta<ConfigMap>>,
}

/// The version that changes when someone else edits a child: generation where the
/// kind has one (status updates do not bump it), otherwise resourceVersion.
fn edit_version(meta: &kube::core::ObjectMeta) -> String {
    match meta.generation {
        Some(g) => format!("g{g}"),
        None => meta.resource_version.clone().unwrap_or_default(),
    }
}

pub fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A namespaced kind the operator watches into a cache of its own.
pub trait Cached:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A metadata watch of one child kind (label `toolhive=true`), feeding a store and
/// yielding every touched object so its owner is reconciled.
fn child_stream<K>(
    client: &Client,
    ns: Option<&str>,
    metrics: &Metrics,
) -> (Store<PartialObjectMeta<K>>, impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static)
where
    K: Cached,
{
    let api = scoped::<PartialObjectMeta<K>>(client, ns);
    slim_stream(api, metrics, K::plural(&()).to_string(), managed(), |child| {
        resources::slim_metadata(&mut child.metadata, &[resources::SPEC_HASH_ANNOTATION])
    })
}

/// The proxy Deployments: metadata and status only (the spec is dropped on arrival).
fn deployment_stream(
    client: &Client,
    ns: Option<&str>,
    metrics: &Metrics,
) -> (Store<Deployment>, impl Stream<Item = Result<Deployment, watcher::Error>> + Send + 'static) {
    slim_stream(scoped::<Deployment>(client, ns), metrics, "deployments".into(), managed(), |d| {
        d.spec = None;
        resources::slim_metadata(&mut d.metadata, &[resources::SPEC_HASH_ANNOTATION]);
    })
}

/// What the operator owns: its children carry `toolhive=true`.
fn managed() -> watcher::Config {
    watcher::Config::default().labels(MANAGED_SELECTOR)
}

/// A companion kind the MCPServers reference (MCPGroup, the configuration kinds): every object
/// in the scope, cached without managedFields or annotations.
fn companion_stream<K>(
    client: &Client,
    ns: Option<&str>,
    metrics: &Metrics,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Cached,
{
    slim_stream(scoped::<K>(client, ns), metrics, K::plural(&()).to_string(), watcher::Config::default(), |o| {
        resources::slim_metadata(o.meta_mut(), &[])
    })
}

fn slim_stream<K>(
    api: Api<K>,
    metrics: &Metrics,
    plural: String,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let restarts = metrics.watch_restarts.with_label_values(&[&plural]);
    let stream = reflector::reflector(writer, watcher(api, config).modify(slim))
        .inspect_err(move |_| restarts.inc())
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Runs the controller for one scope until `shutdown` resolves.
pub async fn run_scope(shared: Arc<Shared>, ns: Option<String>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let client = shared.client.clone();
    let nsr = ns.as_deref();
    let m = &shared.metrics;
    let (configmaps, cm) = child_stream::<ConfigMap>(&client, nsr, m);
    let (service_accounts, sa) = child_stream::<ServiceAccount>(&client, nsr, m);
    let (roles, role) = child_stream::<Role>(&client, nsr, m);
    let (role_bindings, rb) = child_stream::<RoleBinding>(&client, nsr, m);
    let (deployments, dep) = deployment_stream(&client, nsr, m);
    let (services, svc) = child_stream::<Service>(&client, nsr, m);
    let stores = ChildStores { configmaps, service_accounts, roles, role_bindings, deployments, services };
    let servers = scoped::<MCPServer>(&client, nsr);
    let scope_label = ns.clone().unwrap_or_else(|| "*".into());
    info!(scope = %scope_label, "starting MCPServer controller");
    let restarts = shared.metrics.watch_restarts.with_label_values(&["mcpservers"]);
    let (server_store, server_writer) = reflector::store();
    let server_stream = watcher(servers, watcher::Config::default())
        .default_backoff()
        .modify(|s: &mut MCPServer| resources::slim_metadata(&mut s.metadata, &[RESTARTED_AT_ANNOTATION]))
        .reflect(server_writer)
        .touched_objects();
    // MCPGroups: cached for the servers' GroupRefValidated condition; a change to one
    // reconciles the servers that name it (found in the server cache, not listed).
    let (group_store, group_stream) = companion_stream::<MCPGroup>(&client, nsr, m);
    let members_of = server_store.clone();
    let naming_servers = move |group: MCPGroup| {
        let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
        crate::group::members(&members_of.state(), &ns, &name).into_iter().map(move |s| ObjectRef::new(&s).within(&ns)).collect::<Vec<_>>()
    };
    // The configuration kinds (tool, telemetry, OIDC, authorization, webhooks,
    // external auth): resolved into the RunConfig; a change reconciles the servers
    // that reference it (so the proxy rolls), found in the server cache.
    let (tool_config_store, tool_config_changes) = companion_stream::<MCPToolConfig>(&client, nsr, m);
    let (telemetry_store, telemetry_changes) = companion_stream::<MCPTelemetryConfig>(&client, nsr, m);
    let (oidc_store, oidc_changes) = companion_stream::<MCPOIDCConfig>(&client, nsr, m);
    let (authz_store, authz_changes) = companion_stream::<MCPAuthzConfig>(&client, nsr, m);
    let (webhook_store, webhook_changes) = companion_stream::<MCPWebhookConfig>(&client, nsr, m);
    let (external_auth_store, external_auth_changes) = companion_stream::<MCPExternalAuthConfig>(&client, nsr, m);
    // ConfigMaps the servers name for their proxies (authorization policies, permission
    // profiles): metadata only, every one in the scope, as the servers may name any.
    // The operator learns that one exists and when it changes, never what it holds.
    let (named_configmaps, named_configmap_changes) =
        slim_stream(scoped::<PartialObjectMeta<ConfigMap>>(&client, nsr), m, "configmaps".into(), watcher::Config::default(), |c| {
            resources::slim_metadata(&mut c.metadata, &[])
        });
    let ctx = Arc::new(Context {
        shared: shared.clone(),
        stores,
        groups: group_store,
        tool_configs: tool_config_store,
        telemetry_configs: telemetry_store,
        oidc_configs: oidc_store,
        authz_configs: authz_store,
        webhook_configs: webhook_store,
        external_auth_configs: external_auth_store,
        named_configmaps,
    });
    let groups = crate::group::run(client.clone(), ns.clone(), server_store.clone(), wait(shutdown.clone()));
    let configs_shutdown = shutdown.clone();
    let configs = sharedconfig::run_all(client.clone(), ns.clone(), move || wait(configs_shutdown.clone()));
    let servers_controller = Controller::for_stream(server_stream, server_store.clone())
        .watches_stream(group_stream, naming_servers)
        .watches_stream(tool_config_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(telemetry_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(oidc_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(authz_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(webhook_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(external_auth_changes, sharedconfig::referrers(server_store.clone()))
        .watches_stream(named_configmap_changes, crate::configmaps::readers(server_store.clone()))
        .owns_stream(cm)
        .owns_stream(sa)
        .owns_stream(role)
        .owns_stream(rb)
        .owns_stream(dep)
        .owns_stream(svc)
        .graceful_shutdown_on(wait(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = &res {
                restarts.inc();
                warn!(error = %e, "MCPServer watch failed; retrying");
            }
            futures::future::ready(())
        });
    futures::future::join3(servers_controller, groups, configs).await;
    info!(scope = %scope_label, "MCPServer controller stopped");
}

/// Runs every scope's controller (one per allowed namespace in namespace mode).
pub async fn run(shared: Arc<Shared>, scope: &Scope, shutdown: tokio::sync::watch::Receiver<bool>) {
    match scope {
        Scope::Cluster => run_scope(shared, None, shutdown).await,
        Scope::Namespaces(list) => {
            futures::future::join_all(list.iter().map(|ns| run_scope(shared.clone(), Some(ns.clone()), shutdown.clone()))).await;
        }
    }
}

/// One reconcile. A panic in it is a bug: it is turned into an error for this
/// MCPServer (retried with backoff) instead of ending the process, and with it the
/// webhook every MCPServer write must pass.
async fn reconcile(server: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(reconcile_once(server, ctx)).catch_unwind().await.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Panicked(message))
    })
}

async fn reconcile_once(server: Arc<MCPServer>, ctx: Arc<Context>) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    let m = &ctx.shared.metrics;
    let _slot = ctx.shared.reconcile_slots.acquire().await;
    let _workers = WorkerGuard::new(m);
    let start = Instant::now();
    let api: Api<MCPServer> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            FinalizerEvent::Apply(s) => apply(&s, &ctx).await,
            FinalizerEvent::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        kube::runtime::finalizer::Error::AddFinalizer(e) | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Finalizer(other.to_string()),
    });
    m.reconcile_time.with_label_values(&[CONTROLLER]).observe(start.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(a) if a == &Action::await_change() => "success",
        Ok(_) => "requeue_after",
        Err(_) => "error",
    };
    m.reconcile_total.with_label_values(&[CONTROLLER, outcome]).inc();
    if result.is_ok() {
        ctx.shared.failures.lock().remove(&(ns, name));
    }
    result
}

fn error_policy(server: Arc<MCPServer>, error: &Error, ctx: Arc<Context>) -> Action {
    let m = &ctx.shared.metrics;
    m.reconcile_errors.with_label_values(&[CONTROLLER]).inc();
    m.reconcile_error_category.with_label_values(&[error.category()]).inc();
    let key = (server.namespace().unwrap_or_default(), server.name_any());
    let attempts = {
        let mut f = ctx.shared.failures.lock();
        let n = f.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempts);
    warn!(namespace = %key.0, name = %key.1, category = error.category(), attempts, retry_in = ?delay, error = %error, "reconcile failed");
    Action::requeue(delay)
}

/// Per-object exponential backoff: 1s, 2s, 4s ... capped at 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

struct WorkerGuard(prometheus::IntGauge);
impl WorkerGuard {
    fn new(m: &Metrics) -> Self {
        let g = m.active_workers.with_label_values(&[CONTROLLER]);
        g.inc();
        Self(g)
    }
}
impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How soon a server that is not ready is looked at again (its pods are not watched).
const NOT_READY_RECHECK: Duration = Duration::from_secs(10);

async fn apply(server: &MCPServer, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    let shared = &ctx.shared;
    let mut observed = Observed { group_ref: GroupRefState::of(server, &ctx.groups), ..Default::default() };

    if let Err(e) = server.spec.pod_template() {
        observed.pod_template_error = Some(e.to_string());
        write_status(server, ctx, &observed).await?;
        return Ok(Action::await_change());
    }

    let uid = server.uid().ok_or(Error::MissingField("metadata.uid"))?;
    // References, from the caches: the proxy is stopped while one cannot be resolved.
    let mut references = sharedconfig::References::default();
    let mut resolved = resources::Resolved {
        tools: sharedconfig::resolve(server, &ctx.tool_configs, &mut references),
        telemetry: sharedconfig::resolve(server, &ctx.telemetry_configs, &mut references),
        oidc: sharedconfig::resolve(server, &ctx.oidc_configs, &mut references),
        authz: sharedconfig::resolve(server, &ctx.authz_configs, &mut references),
        webhooks: sharedconfig::resolve(server, &ctx.webhook_configs, &mut references),
        external_auth: sharedconfig::resolve(server, &ctx.external_auth_configs, &mut references),
        configmap_versions: crate::configmaps::versions(server, &ctx.named_configmaps, &mut references),
        auth_server: None,
        unresolved: false,
    };
    resolved.auth_server = crate::authserver::resolve(server, &ctx.external_auth_configs, resolved.external_auth.as_ref(), &mut references);
    if let Some(conflict) = resolved.auth_server.as_ref().and_then(|a| crate::authserver::conflict(server, a, &resolved)) {
        references.problems.push(conflict);
    }
    // A spec the admission webhook would have refused (written while it was down, or
    // before it was installed) stops the proxy too: the runner could not start with it.
    references.problems.extend(crate::ratelimit::invalid(&server.spec).map(|(_, problem)| problem));
    resolved.unresolved = !references.problems.is_empty();
    observed.references = references;
    let children = desired_children(server, &shared.proxy, &resolved).ok_or(Error::MissingField("metadata.uid"))?;
    let mut restored = Vec::new();
    for child in children {
        let key: ChildKey = (ns.clone(), child.kind(), child.name().to_string());
        let desired_hash = child.hash().to_string();
        let current = ctx.stores.meta(&child, &ns);
        // Ours, as we last applied it, and untouched since: nothing to write. After a
        // restart there is no record, so each child is applied once: drift made while
        // the operator was down is repaired, and an apply that changes nothing is not
        // stored by the API server.
        if let Some(meta) = &current
            && resources::applied_hash(meta) == Some(desired_hash.as_str())
            && shared.applied.lock().get(&key) == Some(&(desired_hash.clone(), edit_version(meta)))
        {
            continue;
        }
        let t = Instant::now();
        let result = apply_child(&shared.client, &ns, &child, &uid, current.as_ref()).await;
        shared.metrics.apply_latency.observe(t.elapsed().as_secs_f64());
        match result {
            Ok(meta) => {
                shared.metrics.children_applied.with_label_values(&[child.kind()]).inc();
                shared.applied.lock().insert(key, (desired_hash, edit_version(&meta)));
                if current.is_none() {
                    restored.push(format!("{} {}", child.kind(), child.name()));
                }
            }
            Err(err) => {
                if err.user_fixable() {
                    observed.apply_error = Some(err.to_string());
                    publish(ctx, server, EventType::Warning, err.category(), &err.to_string()).await;
                    write_status(server, ctx, &observed).await?;
                }
                return Err(err);
            }
        }
    }
    let created = (!restored.is_empty()).then(|| {
        info!(namespace = %ns, name = %name, created = ?restored, "created child objects");
        format!("Created {}", restored.join(", "))
    });

    if let Some(dep) = ctx.stores.deployments.get(&ObjectRef::new(&name).within(&ns)) {
        let status = dep.status.clone().unwrap_or_default();
        observed.ready_replicas = status.ready_replicas.unwrap_or(0);
        observed.rollout_failure = status.conditions.unwrap_or_default().into_iter().find_map(|c| {
            let failed = (c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                || (c.type_ == "ReplicaFailure" && c.status == "True");
            failed.then(|| c.message.unwrap_or_else(|| c.type_.clone()))
        });
    }
    if observed.ready_replicas == 0 && observed.rollout_failure.is_none() && server.spec.replicas != Some(0) {
        // Pods are not watched (a cluster's worth of them would sit in memory): while
        // not ready, look at this server's pods, and look again soon.
        let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
        let selector = format!("toolhive=true,toolhive-name={name}");
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => observed.container_failure = crate::status::container_failure(&list.items),
            Err(e) => warn!(namespace = %ns, name = %name, error = %e, "could not list the server's pods"),
        }
    }
    write_status_noting(server, ctx, &observed, created.as_deref()).await?;
    if observed.ready_replicas == 0 && server.spec.replicas != Some(0) {
        return Ok(Action::requeue(NOT_READY_RECHECK));
    }
    // A periodic look catches anything a missed event would hide; it writes nothing
    // when all is in place.
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Server-side applies one child, refusing to take over an object of that name the
/// operator did not create for this MCPServer (`cached`: what the child watch shows).
async fn apply_child(client: &Client, ns: &str, child: &Child, owner_uid: &str, cached: Option<&ObjectMeta>) -> Result<ObjectMeta> {
    resources::each_kind!(child, o => apply_owned(client, ns, o, owner_uid, cached).await)
}

async fn apply_owned<K>(client: &Client, ns: &str, object: &K, owner_uid: &str, cached: Option<&ObjectMeta>) -> Result<ObjectMeta>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    // The child watch sees only objects labelled as ours; an unlabelled one of the
    // same name is looked up (list, which the operator's role grants) before the first apply.
    let existing = match cached {
        Some(meta) => Some(meta.clone()),
        None => {
            let found = api.list_metadata(&ListParams::default().fields(&format!("metadata.name={name}"))).await?;
            found.items.into_iter().next().map(|o| o.metadata)
        }
    };
    if let Some(meta) = existing
        && !controlled_by(&meta, owner_uid)
    {
        return Err(Error::NotOwned { kind, name });
    }
    let applied = api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply { kind, name: name.clone(), source })?;
    Ok(applied.meta().clone())
}

/// Whether the MCPServer with `uid` is the controller owner of an object.
fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// Patches status (server-side apply on the status subresource) only when it changed,
/// and records phase changes as Events.
async fn write_status(server: &MCPServer, ctx: &Context, observed: &Observed) -> Result<()> {
    write_status_noting(server, ctx, observed, None).await
}

/// As [`write_status`]; `created` (children just created) joins the phase-change
/// Event when there is one, so a new MCPServer costs one Event, not two.
async fn write_status_noting(server: &MCPServer, ctx: &Context, observed: &Observed, created: Option<&str>) -> Result<()> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let key = (ns.clone(), name.clone());
    let uid = server.uid().unwrap_or_default();
    let lagging = ctx.shared.status_written.lock().get(&key).and_then(|w| {
        let cache_behind = server.status.as_ref() != Some(&w.status);
        (w.uid == uid && w.generation == server.metadata.generation && cache_behind).then(|| w.status.clone())
    });
    let basis = match lagging {
        Some(written) => std::borrow::Cow::Owned(MCPServer { status: Some(written), ..server.clone() }),
        None => std::borrow::Cow::Borrowed(server),
    };
    let previous = basis.status.clone().unwrap_or_default();
    let desired = desired_status(&basis, observed, Time(jiff::Timestamp::now()));
    let phase = desired.phase.unwrap_or(Phase::Pending);
    // The gauge is rebuilt from every server's phase: only when this one's changed.
    if ctx.shared.phases.lock().insert(key.clone(), phase) != Some(phase) {
        refresh_phase_gauge(&ctx.shared);
    }
    let phase_changed = previous.phase != desired.phase;
    if previous != desired {
        patch_status(ctx, &ns, &name, &desired).await?;
        let written = WrittenStatus { uid, generation: server.metadata.generation, status: desired.clone() };
        ctx.shared.status_written.lock().insert(key, written);
    }
    if phase_changed {
        let kind = if phase == Phase::Failed { EventType::Warning } else { EventType::Normal };
        info!(namespace = %ns, name = %name, phase = phase.as_str(), message = %desired.message, "phase changed");
        let note = match created {
            Some(c) => format!("{}; {c}", desired.message),
            None => desired.message.clone(),
        };
        publish(ctx, server, kind, phase.as_str(), &note).await;
    } else if let Some(c) = created {
        publish(ctx, server, EventType::Normal, "ChildrenCreated", c).await;
    }
    Ok(())
}

async fn patch_status(ctx: &Context, ns: &str, name: &str, status: &MCPServerStatus) -> Result<()> {
    apply_status::<MCPServer>(&ctx.shared.client, ns, name, status).await?;
    ctx.shared.metrics.status_writes.inc();
    Ok(())
}

/// Server-side applies `status` to the status of `name` in `ns`, as the operator's
/// field manager (the MCPServer's and the companion kinds' alike).
pub async fn apply_status<K>(client: &Client, ns: &str, name: &str, status: &impl serde::Serialize) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    Api::<K>::namespaced(client.clone(), ns).patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Runs a companion kind's status controller to its end, logging the watch failures
/// it retries.
pub async fn drive<T, E>(
    kind: &str,
    results: impl Stream<Item = std::result::Result<T, kube::runtime::controller::Error<E, watcher::Error>>>,
) where
    E: std::error::Error + 'static,
{
    results
        .for_each(|res| {
            if let Err(kube::runtime::controller::Error::QueueError(e)) = &res {
                warn!(kind, error = %e, "watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// A companion kind's status write failed: logged with its category, tried again soon.
pub fn retry_status_write<K: Resource<DynamicType = ()>, C>(object: Arc<K>, error: &Error, _: Arc<C>) -> Action {
    warn!(kind = %K::kind(&()), namespace = ?object.namespace(), name = %object.name_any(),
        category = error.category(), error = %error, "status not written; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn refresh_phase_gauge(shared: &Shared) {
    let phases = shared.phases.lock();
    let mut counts: HashMap<(&str, Phase), i64> = HashMap::new();
    for ((ns, _), phase) in phases.iter() {
        *counts.entry((ns.as_str(), *phase)).or_default() += 1;
    }
    let namespaces: std::collections::BTreeSet<&str> = phases.keys().map(|(ns, _)| ns.as_str()).collect();
    shared.metrics.servers.reset();
    for ns in namespaces {
        for phase in Phase::ALL {
            let n = counts.get(&(ns, phase)).copied().unwrap_or(0);
            shared.metrics.servers.with_label_values(&[ns, phase.as_str()]).set(n);
        }
    }
}

/// Deletion: report Terminating, remove what the runner created (it carries no owner
/// reference to the MCPServer), forget our records. Owner references remove the rest.
async fn cleanup(server: &MCPServer, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    let observed = Observed { terminating: true, ..Default::default() };
    // Best effort: a namespace being deleted may already refuse writes; deletion must not wait on it.
    if let Err(e) = write_status(server, ctx, &observed).await {
        warn!(namespace = %ns, name = %name, error = %e, "could not report Terminating");
    }
    let client = &ctx.shared.client;
    let runner_label = format!("toolhive-name={name}");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    for (api_name, result) in [
        ("statefulset", delete_labelled(&sts, &name, &runner_label).await),
        ("service", delete_labelled(&svcs, &format!("mcp-{name}"), &runner_label).await),
        ("service", delete_labelled(&svcs, &format!("mcp-{name}-headless"), &runner_label).await),
    ] {
        if let Err(e) = result {
            warn!(namespace = %ns, name = %name, kind = api_name, error = %e, "cleanup of runner-created object failed");
            return Err(e);
        }
    }
    ctx.shared.applied.lock().retain(|(n, _, child), _| !(n == &ns && resources::ChildNames::for_server(&name).owns(child)));
    ctx.shared.phases.lock().remove(&(ns.clone(), name.clone()));
    ctx.shared.status_written.lock().remove(&(ns.clone(), name.clone()));
    refresh_phase_gauge(&ctx.shared);
    info!(namespace = %ns, name = %name, "MCPServer cleaned up");
    Ok(Action::await_change())
}

/// Deletes `name` only if it carries the runner's label for this server (never a
/// same-named object someone else owns). Missing is fine.
async fn delete_labelled<K>(api: &Api<K>, name: &str, label: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (key, value) = label.split_once('=').unwrap_or((label, ""));
    let list = api.list_metadata(&ListParams::default().labels(label).fields(&format!("metadata.name={name}"))).await;
    let items = match list {
        Ok(l) => l.items,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for item in items {
        if item.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str) == Some(value) {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, server: &MCPServer, type_: EventType, reason: &str, note: &str) {
    // The API server caps an Event note at 1 kB; cut on a character boundary.
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    let note = note[..end].to_string();
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    if let Err(e) = ctx.shared.recorder.publish(&event, &server.object_ref(&())).await {
        warn!(namespace = ?server.namespace(), name = %server.name_any(), error = %e, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
