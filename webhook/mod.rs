//! The MCPServer admission webhook: axum over rustls, served by every replica.
//! Nothing on the request path calls the API server: namespace counts come from a
//! metadata watch cache, the policy from a file reloaded when it changes.

pub mod admission;
pub mod image;
pub mod issuer;
pub mod policy;
pub mod quantity;
pub mod serve;
pub mod tls;

pub use serve::{Timeouts, serve_tls, serve_tls_on};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::post,
};
use futures::StreamExt;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{debug_span, info, warn};

use crate::api::MCPServer;
use crate::config::Scope;
use crate::metrics::Metrics;
use admission::{Facts, Mode};
use policy::TenancyPolicy;

pub const MUTATE_PATH: &str = "/mutate-toolhive-stacklok-dev-v1beta1-mcpserver";
pub const VALIDATE_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-mcpserver";
pub const MUTATE_PATH_V1ALPHA1: &str = "/mutate-toolhive-stacklok-dev-v1alpha1-mcpserver";
pub const VALIDATE_PATH_V1ALPHA1: &str = "/validate-toolhive-stacklok-dev-v1alpha1-mcpserver";
/// The largest AdmissionReview the API server sends (object + oldObject near the
/// 3 MiB etcd limit each, plus envelope).
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

pub type ServerCounts = Arc<dyn Fn(&str) -> usize + Send + Sync>;

#[derive(Clone)]
pub struct WebhookState {
    pub policy: Arc<RwLock<Arc<TenancyPolicy>>>,
    pub scope: Arc<Scope>,
    pub counts: ServerCounts,
    pub metrics: Metrics,
}

/// What the handlers share: the state, and each hook's metric series resolved once
/// (a label lookup hashes and locks; these are hit on every request).
struct Served {
    state: WebhookState,
    mutate: HookMetrics,
    validate: HookMetrics,
}

struct HookMetrics {
    name: &'static str,
    answered_ok: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

impl HookMetrics {
    fn new(metrics: &Metrics, name: &'static str) -> Self {
        Self {
            name,
            answered_ok: metrics.webhook_requests.with_label_values(&[name, StatusCode::OK.as_str()]),
            latency: metrics.webhook_latency.with_label_values(&[name]),
        }
    }

    /// Counts one answer of this hook (200 through the series resolved up front).
    fn count(&self, metrics: &Metrics, code: StatusCode) {
        if code == StatusCode::OK {
            self.answered_ok.inc();
        } else {
            metrics.webhook_requests.with_label_values(&[self.name, code.as_str()]).inc();
        }
    }
}

pub fn router(state: WebhookState) -> Router {
    let served = Served {
        mutate: HookMetrics::new(&state.metrics, "mutate-mcpserver"),
        validate: HookMetrics::new(&state.metrics, "validate-mcpserver"),
        state,
    };
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .route(MUTATE_PATH_V1ALPHA1, post(mutate))
        .route(VALIDATE_PATH_V1ALPHA1, post(validate))
        .with_state(Arc::new(served))
}

// The state is shared behind one Arc: axum clones it per request, and cloning the
// metric handles one by one cost more than the admission rules themselves.
async fn mutate(State(s): State<Arc<Served>>, body: Body) -> Response {
    answer(&s, &s.mutate, Mode::Mutate, body).await
}

async fn validate(State(s): State<Arc<Served>>, body: Body) -> Response {
    answer(&s, &s.validate, Mode::Validate, body).await
}

async fn answer(s: &Served, hook: &HookMetrics, mode: Mode, body: Body) -> Response {
    match read_limited(body).await {
        Ok(body) => handle(&s.state, hook, mode, &body),
        Err((code, message)) => {
            hook.count(&s.state.metrics, code);
            (code, message).into_response()
        }
    }
}

/// The request body, up to the largest legal AdmissionReview. Read here, not by
/// axum's body-limit layer, so a refused body is counted like any other answer.
async fn read_limited(body: Body) -> Result<Bytes, (StatusCode, &'static str)> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err((StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than the largest AdmissionReview (7 MiB)")),
        Err(_) => Err((StatusCode::BAD_REQUEST, "request body could not be read")),
    }
}

fn handle(s: &WebhookState, hook: &HookMetrics, mode: Mode, body: &[u8]) -> Response {
    let m = &s.metrics;
    m.webhook_in_flight.inc();
    let start = Instant::now();
    let policy = s.policy.read().unwrap().clone();
    let facts = Facts { policy: &policy, scope: &s.scope, server_count: &*s.counts };
    let outcome = admission::review(body, mode, &facts);
    let code = if outcome.reason == "malformed" && outcome.uid().is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let decision = if outcome.allowed { "allowed" } else { "denied" };
    // A span per request only at debug level: formatting one for every admission
    // costs more than the rules. A denial is logged at info with the same fields.
    let _span = debug_span!("admission", webhook = hook.name, uid = outcome.uid(), namespace = %outcome.namespace,
        operation = outcome.operation, decision, reason = outcome.reason).entered();
    if !outcome.allowed {
        let message = outcome.response.message().unwrap_or_default();
        info!(webhook = hook.name, uid = outcome.uid(), namespace = %outcome.namespace, operation = outcome.operation,
            decision, reason = outcome.reason, message, "admission denied");
    }
    // Namespace is a label only for namespaces the operator serves (bounded); others are "other".
    let ns_label = if s.scope.allows(&outcome.namespace) && !outcome.namespace.is_empty() { outcome.namespace.as_ref() } else { "other" };
    m.admission_decisions.with_label_values(&[ns_label, outcome.operation, decision, outcome.reason]).inc();
    hook.count(m, code);
    hook.latency.observe(start.elapsed().as_secs_f64());
    m.webhook_in_flight.dec();
    json_response(code, &outcome.response)
}

/// The answer as JSON, written into a buffer that fits a typical answer at once.
fn json_response(code: StatusCode, answer: &admission::Answer) -> Response {
    let mut text = Vec::with_capacity(256);
    match serde_json::to_writer(&mut text, answer) {
        Ok(()) => (code, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], text).into_response(),
        // Only string-keyed structs are written, which cannot fail; answer plainly if it did.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("writing the AdmissionReview answer: {e}")).into_response(),
    }
}

/// Loads the policy file; None path means the permissive default.
pub fn load_policy(path: Option<&PathBuf>) -> Result<TenancyPolicy, String> {
    match path {
        None => Ok(TenancyPolicy::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("reading tenancy policy {}: {e}", p.display()))?;
            TenancyPolicy::from_text(&text)
        }
    }
}

/// Re-reads the policy every `poll`; an invalid file is reported and the last good
/// policy stays.
pub async fn watch_policy(path: PathBuf, shared: Arc<RwLock<Arc<TenancyPolicy>>>, poll: Duration, metrics: Metrics) {
    let mut last_text = std::fs::read_to_string(&path).ok();
    loop {
        tokio::time::sleep(poll).await;
        let text = std::fs::read_to_string(&path).ok();
        if text == last_text {
            continue;
        }
        last_text = text;
        match load_policy(Some(&path)) {
            Ok(p) => {
                *shared.write().unwrap() = Arc::new(p);
                metrics.policy_reloads.with_label_values(&["success"]).inc();
                info!(path = %path.display(), "tenancy policy reloaded");
            }
            Err(e) => {
                metrics.policy_reloads.with_label_values(&["error"]).inc();
                warn!(path = %path.display(), error = %e, "tenancy policy rejected; keeping the last good one");
            }
        }
    }
}

/// MCPServer names per namespace as one watch sees them. A relist rebuilds only this
/// watch's view (one view per watched namespace in namespace mode, never shared, so
/// one namespace's relist cannot wipe another's).
#[derive(Debug, Default)]
pub struct NamespaceCounts {
    live: HashMap<String, HashSet<String>>,
    relisting: Option<HashMap<String, HashSet<String>>>,
    synced: bool,
}

impl NamespaceCounts {
    /// Folds one watch event in.
    pub fn apply(&mut self, event: watcher::Event<PartialObjectMeta<MCPServer>>) {
        let key = |o: &PartialObjectMeta<MCPServer>| (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default());
        match event {
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(&o);
                self.relisting.get_or_insert_with(HashMap::new).entry(ns).or_default().insert(name);
            }
            watcher::Event::InitDone => {
                self.live = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                let (ns, name) = key(&o);
                self.live.entry(ns).or_default().insert(name);
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(&o);
                if let Some(names) = self.live.get_mut(&ns) {
                    names.remove(&name);
                    if names.is_empty() {
                        self.live.remove(&ns);
                    }
                }
            }
        }
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.live.get(namespace).map_or(0, HashSet::len)
    }

    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// How many MCPServers each namespace holds, from metadata watches (one per scope
/// namespace), answered in O(1) without an API call.
pub struct ServerCache {
    views: Vec<Arc<RwLock<NamespaceCounts>>>,
}

impl ServerCache {
    /// Starts the watches; they run for the life of the process.
    pub fn start(client: &Client, scope: &Scope, metrics: &Metrics) -> Arc<Self> {
        let apis: Vec<Api<PartialObjectMeta<MCPServer>>> = match scope {
            Scope::Cluster => vec![Api::all(client.clone())],
            Scope::Namespaces(list) => list.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        };
        let views = apis
            .into_iter()
            .map(|api| {
                let view = Arc::new(RwLock::new(NamespaceCounts::default()));
                let writer = view.clone();
                let restarts = metrics.watch_restarts.with_label_values(&["mcpservers-webhook"]);
                tokio::spawn(async move {
                    watcher(api, watcher::Config::default())
                        .default_backoff()
                        .for_each(|event| {
                            match event {
                                Ok(e) => writer.write().unwrap().apply(e),
                                Err(_) => restarts.inc(),
                            }
                            futures::future::ready(())
                        })
                        .await
                });
                view
            })
            .collect();
        Arc::new(Self { views })
    }

    pub async fn wait_synced(&self) {
        while !self.views.iter().all(|v| v.read().unwrap().synced()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.views.iter().map(|v| v.read().unwrap().count(namespace)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(ns: &str, name: &str) -> PartialObjectMeta<MCPServer> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap()
    }

    #[test]
    fn counts_follow_the_watch_and_a_relist_replaces_the_view() {
        let mut c = NamespaceCounts::default();
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(server("a", "one")));
        assert!(!c.synced(), "not synced before the list is complete");
        c.apply(watcher::Event::InitDone);
        assert!(c.synced());
        c.apply(watcher::Event::Apply(server("a", "two")));
        c.apply(watcher::Event::Apply(server("a", "two")));
        c.apply(watcher::Event::Apply(server("b", "one")));
        assert_eq!((c.count("a"), c.count("b"), c.count("c")), (2, 1, 0), "an update is not a second server");
        c.apply(watcher::Event::Delete(server("a", "one")));
        assert_eq!(c.count("a"), 1);
        // A relist after a dropped watch: the old view serves until the new one is complete.
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(server("b", "one")));
        assert_eq!(c.count("a"), 1, "still the old view mid-relist");
        c.apply(watcher::Event::InitDone);
        assert_eq!((c.count("a"), c.count("b")), (0, 1), "what vanished while disconnected is gone");
    }
}
