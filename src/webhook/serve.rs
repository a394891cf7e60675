//! The TLS server under the webhook router: HTTP/1.1 with keep-alive, and limits on
//! how long a client may take to finish its TLS handshake, send a request's headers,
//! and complete a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Router, http::StatusCode, response::IntoResponse};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;
use tracing::warn;

/// How long a client may take; a client over a limit is disconnected (headers,
/// handshake) or answered 408 Request Timeout (a request whose body stalls).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub handshake: Duration,
    /// From waiting for a request (including on an idle keep-alive connection) to
    /// having its headers.
    pub headers: Duration,
    /// From having the headers to the answer being ready.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let ten = Duration::from_secs(10);
        Self { handshake: ten, headers: ten, request: ten }
    }
}

/// Serves `router` over TLS with the default timeouts.
pub async fn serve_tls(addr: SocketAddr, tls: rustls::ServerConfig, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_tls_on(listener, tls, router, Timeouts::default()).await
}

pub async fn serve_tls_on(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    timeouts: Timeouts,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let answer = router.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    // A request whose body stalls is answered 408 once its time is up.
                    tokio::time::timeout(timeouts.request, answer).await.unwrap_or_else(|_| Ok(StatusCode::REQUEST_TIMEOUT.into_response()))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Headers (also the wait for the next request on a kept-alive connection) within the limit.
            builder.timer(TokioTimer::new()).header_read_timeout(timeouts.headers).keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
