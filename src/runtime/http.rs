//! Plain-HTTP endpoints: /healthz and /readyz on the health port, /metrics on the
//! metrics port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{Router, extract::State, http::StatusCode, routing::get};

use crate::runtime::metrics::Metrics;

/// What must be true before this replica reports ready.
#[derive(Default)]
pub struct Readiness {
    /// The MCPServer CRD is served.
    pub crd_present: AtomicBool,
    /// The webhook has a certificate and synced caches (true when the webhook is off).
    pub webhook_ready: AtomicBool,
}

impl Readiness {
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.crd_present.load(Ordering::Relaxed) {
            out.push("CRD mcpservers.toolhive.stacklok.dev is not installed (install the toolhive-operator-crds chart)");
        }
        if !self.webhook_ready.load(Ordering::Relaxed) {
            out.push("admission webhook has no certificate or its caches are not synced");
        }
        out
    }
}

pub fn health_router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(r): State<Arc<Readiness>>| async move {
                let problems = r.problems();
                if problems.is_empty() {
                    (StatusCode::OK, "ok".to_string())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n"))
                }
            }),
        )
        .with_state(readiness)
}

pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }),
        )
        .with_state(metrics)
}

pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await
}
