//! The TLS server under the webhook router: HTTP/1.1 with keep-alive, and limits on
//! how many connections it holds, how large a request's headers may grow, and how long
//! a client may take to finish its TLS handshake, send a request's headers, and
//! complete a request. With them, and the router's budget for bodies, what any client
//! can make the process hold is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Router, http::StatusCode, response::IntoResponse};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;
use tracing::{debug, warn};

/// What one client may take; a client over a limit is disconnected (connections,
/// headers, handshake) or answered 408 Request Timeout (a request whose body stalls).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake: Duration,
    /// From waiting for a request (including on an idle keep-alive connection) to
    /// having its headers.
    pub headers: Duration,
    /// From having the headers to the answer being ready.
    pub request: Duration,
    /// Connections held at once; one more is closed as soon as it is accepted, before
    /// its handshake. An idle one costs its TLS and read buffers (about 12 KiB), so
    /// this bounds what idle or slow connections can hold.
    pub connections: usize,
    /// Connections held at once from one peer address: one client cannot take every
    /// slot. The API server opens one per review in flight (HTTP/1.1), from the few
    /// addresses of the control plane.
    pub connections_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let ten = Duration::from_secs(10);
        Self { handshake: ten, headers: ten, request: ten, connections: 1024, connections_per_peer: 128 }
    }
}

/// Largest read buffer of a connection, so largest request head: an AdmissionReview
/// request's headers are a few hundred bytes. (The body is streamed past it.)
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Serves `router` over TLS with the default limits.
pub async fn serve_tls(addr: SocketAddr, tls: rustls::ServerConfig, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_tls_on(listener, tls, router, Limits::default()).await
}

pub async fn serve_tls_on(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    limits: Limits,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let peers = Arc::new(PeerCounts::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(limit = limits.connections, "webhook connection refused: at the connection limit");
            continue;
        };
        let Some(peer_slot) = PeerCounts::enter(&peers, peer.ip(), limits.connections_per_peer) else {
            debug!(%peer, limit = limits.connections_per_peer, "webhook connection refused: at the limit for its address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let Ok(Ok(tls)) = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let answer = router.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    // A request whose body stalls is answered 408 once its time is up.
                    tokio::time::timeout(limits.request, answer).await.unwrap_or_else(|_| Ok(StatusCode::REQUEST_TIMEOUT.into_response()))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Headers (also the wait for the next request on a kept-alive connection) within the limit.
            builder.timer(TokioTimer::new()).header_read_timeout(limits.headers).max_buf_size(MAX_READ_BUFFER).keep_alive(true);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

/// Connections held per peer address.
#[derive(Default)]
struct PeerCounts(parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in its peer's count, given back when dropped.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    peer: std::net::IpAddr,
}

impl PeerCounts {
    fn enter(counts: &Arc<Self>, peer: std::net::IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut held = counts.0.lock();
        let n = held.entry(peer).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot { counts: counts.clone(), peer })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.counts.0.lock();
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}
