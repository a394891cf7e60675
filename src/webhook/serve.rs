//! The TLS server under the webhook router: HTTP/1.1 with keep-alive, and limits on
//! how long a client may take to finish its TLS handshake, send a request's headers,
//! and complete a request.
//!
//! The header and request limits are checked against the clock whenever the
//! connection's task runs, and a per-connection tick makes it run at least every
//! tenth of the limit while a client stalls. So a request that arrives promptly (all
//! of them, from an API server) costs one clock read instead of registering and
//! cancelling two timers: the admission path is short enough for that to show.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::{Router, http::StatusCode, response::IntoResponse};
use hyper_util::rt::TokioIo;
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

impl Timeouts {
    /// How often a stalled connection is looked at: a tenth of the shortest limit.
    fn tick(&self) -> Duration {
        (self.headers.min(self.request) / 10).max(Duration::from_millis(5))
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
                WithinDeadline { inner: answer, deadline: Instant::now() + timeouts.request }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(ClockTimer).header_read_timeout(timeouts.headers).keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            // The tick only wakes this task; the connection then looks at its deadlines.
            let mut tick = tokio::time::interval(timeouts.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(connection);
            loop {
                tokio::select! {
                    _ = &mut connection => break,
                    _ = tick.tick() => {}
                }
            }
        });
    }
}

/// A request's answer, or 408 once its deadline has passed.
struct WithinDeadline<F> {
    inner: F,
    deadline: Instant,
}

impl<F, E> Future for WithinDeadline<F>
where
    F: Future<Output = Result<axum::response::Response, E>> + Unpin,
{
    type Output = Result<axum::response::Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(answer) = Pin::new(&mut self.inner).poll(cx) {
            return Poll::Ready(answer);
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(Ok(StatusCode::REQUEST_TIMEOUT.into_response()));
        }
        Poll::Pending
    }
}

/// A hyper timer whose sleeps only compare the clock when polled: they never wake
/// the task themselves (the connection's tick does).
#[derive(Clone, Copy)]
struct ClockTimer;

struct ClockSleep(Instant);

impl Future for ClockSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.0 { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl hyper::rt::Sleep for ClockSleep {}

impl hyper::rt::Timer for ClockTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ClockSleep(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ClockSleep(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}
