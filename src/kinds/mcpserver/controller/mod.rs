//! The MCPServer controller. One controller per kind for the whole install (the
//! cluster, or every allowed namespace) on the shared caches (`caches`), only while
//! this replica leads; what it reads is resolved by a pure function (`resolve`), what it writes
//! is in `children` (the proxy's objects) and `report` (status, Events, gauge).

mod caches;
mod children;
mod controllers;
mod remote;
mod report;
pub mod resolve;
pub mod workload;

pub use caches::{Caches, ChildCaches, ConfigCaches, slimmed};
use controllers::labelled_for;
pub use controllers::{run, stopped};
pub use report::{PhaseReport, PolicyFindings, ServerPhases, publish_to, write_phase_status};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Service, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        controller::Action,
        events::{EventType, Recorder, Reporter},
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::ObjectRef,
    },
};
use parking_lot::Mutex;
use tracing::{Instrument, info, info_span, warn};

use crate::kinds::mcpserver::api::{FINALIZER, MCPServer, MCPServerStatus};
use crate::kinds::mcpserver::configmaps;
use crate::kinds::mcpserver::resources::{self, Child, desired_children};
use crate::kinds::mcpserver::status::Observed;
use crate::runtime::metrics::{CONTROLLER, Metrics};
use crate::shared::config::FIELD_MANAGER;
use crate::shared::error::{Error, Result};
pub use children::{apply_child_if_changed, apply_children};
use children::{delete_labelled, delete_unused};
use report::{publish, write_status, write_status_noting};

/// State shared by every controller.
pub struct Shared {
    pub client: Client,
    pub metrics: Metrics,
    /// Publishes Warnings, keeping each for six minutes so a repeat counts into the
    /// same Event's series instead of making a new Event.
    pub recorder: Recorder,
    /// Who publishes Events (a Normal one through a recorder of its own: said once,
    /// it is not kept; a thousand new servers' Events kept cost some 5 MiB).
    pub reporter: Reporter,
    pub proxy: resources::ProxySettings,
    /// Per child: (hash, generation-or-resourceVersion) after our last apply. A child
    /// whose annotation hash and version still match is not written again.
    applied: Mutex<HashMap<ChildKey, (String, String)>>,
    /// Consecutive failures per MCPServer, for exponential backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Reconciles in flight across every controller. Bounding them bounds the API
    /// connections (each holds TLS buffers) and so the memory a burst costs; the API
    /// server, not the operator, limits throughput beyond a few dozen.
    reconcile_slots: tokio::sync::Semaphore,
    /// The same bound for each controller: kube spawns a task for every reconcile it
    /// starts (each holding the reconcile's whole state, some 7 to 19 KiB), so
    /// unbounded, a burst of 1,000 servers had 1,000 tasks waiting for a slot (21 MiB
    /// at the peak).
    concurrency: u16,
    /// Per MCPServer: (uid, generation, status) of our last status write. The watch
    /// cache can lag behind our own write; this keeps a reconcile that sees the older
    /// object from writing (and announcing) the same status twice. Only the operator
    /// writes MCPServer status.
    status_written: Mutex<HashMap<(String, String), WrittenStatus>>,
    /// The tenancy policy stored servers are checked against, and its changes (each
    /// reconciles every server again); None without a policy.
    pub policy: Option<PolicyWatch>,
    /// Per MCPServer: when its proxy was last rolled to recreate a missing StatefulSet.
    healed: Mutex<HashMap<(String, String), Instant>>,
    /// Per MCPServer uid: the resourceVersion it had when we added our finalizer. A
    /// reconcile of that same version is the cache lagging our own write (a burst
    /// replays every server): it waits for the watch instead of patching again, a
    /// patch the API server would refuse.
    finalizer_added: Mutex<HashMap<String, String>>,
}

/// The policy check, and a counter bumped each time the policy in force changes.
pub struct PolicyWatch {
    pub check: crate::kinds::mcpserver::status::PolicyCheck,
    pub changes: tokio::sync::watch::Receiver<u64>,
}

/// A status the operator wrote, and for which incarnation and generation of the object.
struct WrittenStatus {
    uid: String,
    generation: Option<i64>,
    status: MCPServerStatus,
}

type ChildKey = (String, &'static str, String);

impl Shared {
    /// The configuration of every controller that reconciles through `reconciled`:
    /// at most as many reconciles started (and so tasks) as may run at once; the
    /// rest wait in the controller's queue as references.
    pub fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default().concurrency(self.concurrency)
    }

    pub fn new(
        client: Client,
        metrics: Metrics,
        proxy: resources::ProxySettings,
        instance: String,
        max_concurrent_reconciles: usize,
    ) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            metrics,
            proxy,
            applied: Mutex::default(),
            failures: Mutex::default(),
            reconcile_slots: tokio::sync::Semaphore::new(max_concurrent_reconciles.max(1)),
            concurrency: u16::try_from(max_concurrent_reconciles.max(1)).unwrap_or(u16::MAX),
            status_written: Mutex::default(),
            finalizer_added: Mutex::default(),
            policy: None,
            healed: Mutex::default(),
        }
    }

    /// One reconcile of the object `key` names (namespace, name; kind-qualified for
    /// the kinds beside MCPServer) by `controller`: a reconcile slot held throughout,
    /// counted as an active worker, its time and outcome counted, its backoff reset
    /// when it succeeds. The work is made once the slot is held: a reconcile waiting
    /// for one holds a few words, not the tens of KiB of its work's state.
    pub async fn reconciled<F: std::future::Future<Output = Result<Action>>>(
        &self,
        controller: &'static str,
        key: (String, String),
        work: impl FnOnce() -> F,
    ) -> Result<Action> {
        let _slot = self.reconcile_slots.acquire().await;
        let _worker = WorkerGuard::new(&self.metrics, controller);
        let start = Instant::now();
        let result = Box::pin(work()).await;
        self.metrics.reconcile_time.with_label_values(&[controller]).observe(start.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(a) if a == &Action::await_change() => "success",
            Ok(_) => "requeue_after",
            Err(_) => "error",
        };
        self.metrics.reconcile_total.with_label_values(&[controller, outcome]).inc();
        if result.is_ok() {
            self.failures.lock().remove(&key);
        }
        result
    }

    /// Checks stored servers against `policy`, again whenever it changes.
    pub fn with_policy(self, policy: PolicyWatch) -> Self {
        Self { policy: Some(policy), ..self }
    }
}

pub struct Context {
    pub shared: Arc<Shared>,
    caches: Arc<Caches>,
    children: Arc<ChildCaches>,
}

impl Context {
    fn view(&self) -> resolve::View<'_> {
        let (c, cfg) = (&self.caches, &self.caches.configs);
        resolve::View {
            groups: c.groups.store(),
            tool: cfg.tool.store(),
            telemetry: cfg.telemetry.store(),
            oidc: cfg.oidc.store(),
            authz: cfg.authz.store(),
            webhook: cfg.webhook.store(),
            external_auth: cfg.external_auth.store(),
            configmaps: c.named_configmaps.as_ref(),
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
    let api: Api<MCPServer> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let uid = server.uid().unwrap_or_default();
    let version = server.resource_version().unwrap_or_default();
    let adds_finalizer = server.metadata.deletion_timestamp.is_none() && !server.finalizers().iter().any(|f| f == FINALIZER);
    let work = || async {
        {
            let mut added = ctx.shared.finalizer_added.lock();
            if !adds_finalizer {
                added.remove(&uid);
            } else if added.get(&uid) == Some(&version) {
                return Ok(Action::await_change());
            }
        }
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
        if adds_finalizer && result.is_ok() {
            ctx.shared.finalizer_added.lock().insert(uid, version);
        }
        result
    };
    ctx.shared.reconciled(CONTROLLER, (ns, name), work).await
}

fn error_policy(server: Arc<MCPServer>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(&ctx.shared, CONTROLLER, (server.namespace().unwrap_or_default(), server.name_any()), error)
}

/// A failed reconcile of the object `key` names (namespace, kind-qualified name):
/// counted, logged, and retried after a backoff that grows with its consecutive failures.
pub fn retry_later(shared: &Shared, controller: &str, key: (String, String), error: &Error) -> Action {
    let m = &shared.metrics;
    m.reconcile_errors.with_label_values(&[controller]).inc();
    m.reconcile_error_category.with_label_values(&[error.category()]).inc();
    let attempts = {
        let mut f = shared.failures.lock();
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
    fn new(m: &Metrics, controller: &str) -> Self {
        let g = m.active_workers.with_label_values(&[controller]);
        g.inc();
        Self(g)
    }
}
impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How often a server is looked at without any change (a missed event cannot hide
/// drift for longer); it writes nothing when all is in place.
pub const PERIODIC_LOOK: Duration = Duration::from_secs(600);

async fn apply(server: &MCPServer, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    let shared = &ctx.shared;
    watch_what_it_names(ctx, server, &ns).await?;
    let resolution = resolve::resolve(server, ctx.view());
    let policy = shared.policy.as_ref().and_then(|p| (p.check)(&ns, &serde_json::to_value(&server.spec).ok()?));
    let mut observed = Observed { group_ref: resolution.group_ref.clone(), policy, ..Default::default() };

    if let Err(e) = server.spec.pod_template() {
        observed.pod_template_error = Some(e.to_string());
        write_status(server, ctx, &observed).await?;
        return Ok(Action::await_change());
    }

    let uid = server.uid().ok_or(Error::MissingField("metadata.uid"))?;
    observed.references = resolution.references;
    let children = desired_children(server, &shared.proxy, &resolution.resolved).ok_or(Error::MissingField("metadata.uid"))?;
    let mut restored = Vec::new();
    for child in &children {
        match apply_if_changed(ctx, &ns, child, &uid).await {
            Ok(created) => restored.extend(created.then(|| format!("{} {}", child.kind(), child.name()))),
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
    remove_unused_service_account(ctx, server, &ns, &uid, &children).await?;
    let created = (!restored.is_empty()).then(|| {
        info!(namespace = %ns, name = %name, created = ?restored, "created child objects");
        format!("Created {}", restored.join(", "))
    });

    let mut available = 0;
    if let Some(dep) = ctx.children.deployments.store().get(&ObjectRef::new(&name).within(&ns)) {
        let status = dep.status.clone().unwrap_or_default();
        observed.ready_replicas = status.ready_replicas.unwrap_or(0);
        available = status.available_replicas.unwrap_or(0);
        observed.rollout_failure = status.conditions.unwrap_or_default().into_iter().find_map(|c| {
            let failed = (c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                || (c.type_ == "ReplicaFailure" && c.status == "True");
            failed.then(|| c.message.unwrap_or_else(|| c.type_.clone()))
        });
    }
    if observed.ready_replicas == 0 && observed.rollout_failure.is_none() {
        // The pods are watched (their containers' waiting states only): a container
        // that cannot start triggers a reconcile, no polling.
        observed.container_failure = crate::kinds::mcpserver::status::container_failure(&ctx.children.server_pods(&ns, &name));
    }
    write_status_noting(server, ctx, &observed, created.as_deref()).await?;
    let soon = workload::ensure(ctx, server, &ns, available).await?;
    Ok(Action::requeue(soon.unwrap_or(PERIODIC_LOOK)))
}

/// How long a reconcile waits for a new ConfigMap watch to list before it retries.
const NAMED_CONFIGMAPS_SYNC: Duration = Duration::from_secs(30);

/// What a reconcile of `server` reads is watched in its namespace before it is read
/// (and listed): what the operator makes there, the configuration kinds it names,
/// from then on, and the ConfigMaps, while some server there names one (stopped once
/// no server in the namespace names any).
async fn watch_what_it_names(ctx: &Context, server: &MCPServer, ns: &str) -> Result<()> {
    futures::join!(ctx.children.watched_in(ns), ctx.caches.configs.named_by(server));
    let named = &ctx.caches.named_configmaps;
    if configmaps::named(server).is_empty() {
        release_named_configmaps(ctx, ns);
        return Ok(());
    }
    tokio::time::timeout(NAMED_CONFIGMAPS_SYNC, named.ensure(ns)).await.map_err(|_| Error::NotSynced("configmaps"))?;
    Ok(())
}

/// Stops the ConfigMap watch of `ns` when no server or remote proxy there (but those
/// being deleted) still names a ConfigMap.
fn release_named_configmaps(ctx: &Context, ns: &str) {
    let named = &ctx.caches.named_configmaps;
    if !named.watched(ns) {
        return;
    }
    let live_here = |meta: &kube::core::ObjectMeta| meta.namespace.as_deref() == Some(ns) && meta.deletion_timestamp.is_none();
    let servers = ctx.caches.servers.store().state();
    let proxies = ctx.caches.proxies.store().state();
    // Remote proxies name ConfigMaps too (their authorization policies).
    let needed = servers.iter().any(|s| live_here(&s.metadata) && !configmaps::named(s).is_empty())
        || proxies.iter().any(|p| {
            live_here(&p.metadata) && crate::kinds::mcpserver::remote::as_server(p).is_some_and(|s| !configmaps::named(&s).is_empty())
        });
    if !needed {
        named.stop(ns);
    }
}

/// Applies `child` unless the cache shows it as we last applied it and untouched
/// since. After a restart there is no record, so each child is applied once: drift
/// made while the operator was down is repaired, and an apply that changes nothing is
/// not stored by the API server. True when the child did not exist.
async fn apply_if_changed(ctx: &Context, ns: &str, child: &Child, uid: &str) -> Result<bool> {
    apply_child_if_changed(&ctx.shared, &ctx.children, ns, child, uid).await
}

/// `<name>-sa`, made for the MCP server while the server named no ServiceAccount of
/// its own, is deleted once it names one (only if this server controls it).
async fn remove_unused_service_account(ctx: &Context, server: &MCPServer, ns: &str, uid: &str, children: &[Child]) -> Result<()> {
    let unused = resources::ChildNames::for_server(&server.name_any()).mcp_service_account;
    if children.iter().any(|c| matches!(c, Child::ServiceAccount(_)) && c.name() == unused) {
        return Ok(());
    }
    let Some(cached) = ctx.children.service_accounts.store().get(&ObjectRef::new(&unused).within(ns)) else {
        return Ok(());
    };
    if delete_unused::<ServiceAccount>(&ctx.shared.client, ns, &cached.metadata, uid).await? {
        info!(namespace = %ns, name = %server.name_any(), service_account = %unused, "deleted the ServiceAccount the server no longer uses");
        ctx.shared.applied.lock().remove(&(ns.to_string(), "ServiceAccount", unused));
    }
    Ok(())
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
    let runner_label = format!("{}={name}", resources::NAME_LABEL);
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
    ctx.shared.status_written.lock().remove(&(ns.clone(), name.clone()));
    ctx.shared.healed.lock().remove(&(ns.clone(), name.clone()));
    release_named_configmaps(ctx, &ns);
    info!(namespace = %ns, name = %name, "MCPServer cleaned up");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
