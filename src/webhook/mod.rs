//! The MCPServer admission webhook, served by every replica over rustls.
//!
//! Layout, in the order a request meets it: `serve` (TLS connections and limits) ->
//! this module (routes, metrics, logging) -> `review` (the AdmissionReview envelope)
//! -> `mutate` (defaults) or `rules` (tenancy checks) -> `policy` (the platform
//! team's file). `counts` and `image` are what the rules read; `tls` and
//! `issuer` keep the serving certificate. Nothing on the request path calls the API
//! server.

pub mod budget;
pub mod counts;
pub mod embedding_server;
pub mod image;
pub mod issuer;
pub mod mutate;
pub mod namespaces;
pub mod pod_security;
pub mod policy;
pub mod remote_proxy;
pub mod review;
pub mod rules;
pub mod serve;
pub mod tls;
pub mod virtual_server;

pub use counts::{Ceiling, Quota, ServerCache};
pub use serve::{Limits, serve_tls, serve_tls_on};

use std::sync::Arc;
use std::time::Instant;

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{CONTENT_LENGTH, CONTENT_TYPE},
    },
    response::{IntoResponse, Response},
    routing::post,
};
use tracing::{debug_span, info};

use crate::runtime::metrics::Metrics;
use crate::shared::config::Scope;
use policy::{SharedPolicy, TenancyPolicy};
use review::{Hook, Outcome};
use rules::Facts;

/// The paths the chart registers (v1beta1 only: with `matchPolicy: Equivalent` the
/// API server sends v1alpha1 objects here converted).
pub const MUTATE_PATH: &str = "/mutate-toolhive-stacklok-dev-v1beta1-mcpserver";
pub const VALIDATE_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-mcpserver";
pub const VALIDATE_REMOTE_PROXY_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-mcpremoteproxy";
pub const VALIDATE_VIRTUAL_SERVER_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-virtualmcpserver";
pub const VALIDATE_COMPOSITE_TOOL_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-virtualmcpcompositetooldefinition";
pub const VALIDATE_EMBEDDING_SERVER_PATH: &str = "/validate-toolhive-stacklok-dev-v1beta1-embeddingserver";
/// The largest AdmissionReview the API server sends (object + oldObject near the
/// 3 MiB etcd limit each, plus envelope).
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

#[derive(Clone)]
pub struct WebhookState {
    pub policy: SharedPolicy,
    pub scope: Arc<Scope>,
    pub quota: Arc<dyn Quota>,
    /// Pod Security Admission levels of the namespaces (empty unless started).
    pub namespace_levels: Arc<namespaces::NamespaceLevels>,
    pub metrics: Metrics,
}

impl WebhookState {
    pub fn new(policy: TenancyPolicy, scope: Scope, quota: Arc<dyn Quota>, metrics: Metrics) -> Self {
        Self { policy: policy::shared(policy), scope: Arc::new(scope), quota, namespace_levels: Arc::default(), metrics }
    }

    /// Holds pod templates to the level each namespace's label enforces, where stricter.
    pub fn with_namespace_levels(self, namespace_levels: Arc<namespaces::NamespaceLevels>) -> Self {
        Self { namespace_levels, ..self }
    }
}

/// The check the controller runs on stored MCPServers: the validating rules under the
/// policy in force, each finding with its rule's mode (quota aside: a stored server
/// already holds its place). None while the policy is empty.
pub fn stored_server_check(state: &WebhookState) -> crate::kinds::mcpserver::status::PolicyCheck {
    use crate::kinds::mcpserver::status::PolicyFinding;
    let (policy, scope, levels) = (state.policy.clone(), state.scope.clone(), state.namespace_levels.clone());
    Arc::new(move |namespace: &str, spec: &serde_json::Value| {
        let policy = policy.read().clone();
        if *policy == TenancyPolicy::default() {
            return None;
        }
        let no_quota = |_: &str| 0usize;
        let facts = Facts { policy: &policy, scope: &scope, quota: &no_quota, namespaces: &levels };
        let judged = rules::judge(rules::validate(Some(spec), namespace, None, &facts), namespace, &facts);
        let findings = [("enforce", judged.enforced), ("warn", judged.warned), ("audit", judged.audited)]
            .into_iter()
            .flat_map(|(mode, violations)| {
                violations.into_iter().map(move |v| PolicyFinding { rule: v.rule.name(), mode, message: v.to_string() })
            })
            .collect();
        Some(findings)
    })
}

/// What the handlers share: the state, and each hook's metric series resolved once.
struct Served {
    state: WebhookState,
    mutate: HookMetrics,
    validate: HookMetrics,
    validate_remote_proxy: HookMetrics,
    validate_virtual_server: HookMetrics,
    validate_composite_tool: HookMetrics,
    validate_embedding_server: HookMetrics,
    budget: budget::ReviewBudget,
}

struct HookMetrics {
    name: &'static str,
    latency: prometheus::Histogram,
}

impl HookMetrics {
    fn new(metrics: &Metrics, name: &'static str) -> Self {
        Self { name, latency: metrics.webhook_latency.with_label_values(&[name]) }
    }

    fn count(&self, metrics: &Metrics, code: StatusCode) {
        metrics.webhook_requests.with_label_values(&[self.name, code.as_str()]).inc();
    }
}

pub fn router(state: WebhookState) -> Router {
    let served = Served {
        mutate: HookMetrics::new(&state.metrics, "mutate-mcpserver"),
        validate: HookMetrics::new(&state.metrics, "validate-mcpserver"),
        validate_remote_proxy: HookMetrics::new(&state.metrics, "validate-mcpremoteproxy"),
        validate_virtual_server: HookMetrics::new(&state.metrics, "validate-virtualmcpserver"),
        validate_composite_tool: HookMetrics::new(&state.metrics, "validate-virtualmcpcompositetooldefinition"),
        validate_embedding_server: HookMetrics::new(&state.metrics, "validate-embeddingserver"),
        state,
        budget: budget::ReviewBudget::default(),
    };
    Router::new()
        .route(MUTATE_PATH, post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::Mutate, request).await }))
        .route(
            VALIDATE_PATH,
            post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::Validate, request).await }),
        )
        .route(
            VALIDATE_REMOTE_PROXY_PATH,
            post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::ValidateRemoteProxy, request).await }),
        )
        .route(
            VALIDATE_VIRTUAL_SERVER_PATH,
            post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::ValidateVirtualServer, request).await }),
        )
        .route(
            VALIDATE_COMPOSITE_TOOL_PATH,
            post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::ValidateCompositeTool, request).await }),
        )
        .route(
            VALIDATE_EMBEDDING_SERVER_PATH,
            post(|State(s): State<Arc<Served>>, request: Request| async move { answer(s, Hook::ValidateEmbeddingServer, request).await }),
        )
        .with_state(Arc::new(served))
}

async fn answer(served: Arc<Served>, hook: Hook, request: Request) -> Response {
    let metrics = match hook {
        Hook::Mutate => &served.mutate,
        Hook::Validate => &served.validate,
        Hook::ValidateRemoteProxy => &served.validate_remote_proxy,
        Hook::ValidateVirtualServer => &served.validate_virtual_server,
        Hook::ValidateCompositeTool => &served.validate_composite_tool,
        Hook::ValidateEmbeddingServer => &served.validate_embedding_server,
    };
    // The body is read within the budget by the size it declares (the largest legal
    // one when it declares none), then parsed within it by what parsing will take.
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .or_else(|| usize::try_from(axum::body::HttpBody::size_hint(request.body()).exact()?).ok())
        .unwrap_or(MAX_BODY_BYTES)
        .min(MAX_BODY_BYTES);
    let refuse = |refused: budget::Refused| {
        metrics.count(&served.state.metrics, refused.code);
        (refused.code, refused.message).into_response()
    };
    let mut permit = match served.budget.admit(declared).await {
        Ok(permit) => permit,
        Err(refused) => return refuse(refused),
    };
    let body = match read_limited(request.into_body(), declared).await {
        Ok(body) => body,
        Err((code, message)) => {
            metrics.count(&served.state.metrics, code);
            return (code, message).into_response();
        }
    };
    if let Err(refused) = served.budget.for_parsing(&mut permit, &body).await {
        return refuse(refused);
    }
    let state = &served.state;
    state.metrics.webhook_in_flight.inc();
    let start = Instant::now();
    // Parsing a review of up to 7 MiB is CPU work: off the async workers, so probes
    // and other connections are served meanwhile.
    let worker = {
        let served = served.clone();
        tokio::task::spawn_blocking(move || {
            let policy = served.state.policy.read().clone();
            let levels = &served.state.namespace_levels;
            let facts = Facts { policy: &policy, scope: &served.state.scope, quota: &*served.state.quota, namespaces: levels };
            review::review(&body, hook, &facts)
        })
    };
    let response = match worker.await {
        Ok(outcome) => {
            record(state, metrics.name, &outcome);
            let code = if outcome.unanswerable() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            metrics.count(&state.metrics, code);
            json_response(code, outcome.to_json())
        }
        Err(e) => {
            // A panic in the rules is a bug; the request is refused, the server lives on.
            tracing::error!(webhook = metrics.name, error = %e, "admission review failed");
            metrics.count(&state.metrics, StatusCode::INTERNAL_SERVER_ERROR);
            (StatusCode::INTERNAL_SERVER_ERROR, "the admission review failed").into_response()
        }
    };
    metrics.latency.observe(start.elapsed().as_secs_f64());
    state.metrics.webhook_in_flight.dec();
    response
}

/// Logs and counts one decision.
fn record(state: &WebhookState, webhook: &'static str, outcome: &Outcome) {
    let decision = outcome.decision;
    let _span = debug_span!("admission", webhook, uid = %outcome.uid, namespace = %outcome.namespace,
        operation = outcome.operation, decision, reason = outcome.reason)
    .entered();
    if let Some(message) = outcome.message() {
        info!(webhook, uid = %outcome.uid, namespace = %outcome.namespace, operation = outcome.operation,
            decision, reason = outcome.reason, message, "admission denied");
    }
    // Namespace is a label only for namespaces the operator serves (bounded); others are "other".
    let namespace =
        if !outcome.namespace.is_empty() && state.scope.allows(&outcome.namespace) { outcome.namespace.as_str() } else { "other" };
    state.metrics.admission_decisions.with_label_values(&[namespace, outcome.operation, decision, outcome.reason]).inc();
}

/// The request body, up to the largest legal AdmissionReview, read into one buffer
/// of the size it declares (collecting chunks and joining them would hold it twice).
/// Read here, not by a body-limit layer, so a refused body is counted like any other
/// answer.
async fn read_limited(mut body: Body, declared: usize) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    use http_body_util::BodyExt;
    let mut buffer = Vec::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err((StatusCode::BAD_REQUEST, "request body could not be read")) };
        if let Some(data) = frame.data_ref() {
            if buffer.len() + data.len() > MAX_BODY_BYTES {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than the largest AdmissionReview (7 MiB)"));
            }
            buffer.extend_from_slice(data);
        }
    }
    Ok(buffer)
}

fn json_response(code: StatusCode, answer: Result<Vec<u8>, serde_json::Error>) -> Response {
    match answer {
        Ok(text) => (code, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("writing the AdmissionReview answer: {e}")).into_response(),
    }
}
