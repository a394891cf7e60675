//! The connections the watches go through: HTTP/2, so many watches share a few TLS
//! connections as streams instead of holding one HTTP/1.1 connection (TLS state and
//! buffers) each. Writes keep their own client, so watches can never take the streams
//! a write needs.

use std::sync::Arc;
use std::time::Duration;

use kube::client::ConfigExt;
use kube::{Client, Config};
use parking_lot::Mutex;
use tracing::{info, warn};

/// Hands each new watch a client: the first open connection with room for another
/// stream, or a new connection when every one is full.
pub struct WatchConnections {
    /// Each connection's client (shared by its watches) and how many it carries.
    open: Mutex<Vec<(Arc<Client>, usize)>>,
    /// Opens another connection; None: every watch goes through the first.
    another: Option<Box<dyn Fn() -> Result<Client, kube::Error> + Send + Sync>>,
    streams: usize,
}

impl WatchConnections {
    /// HTTP/2 connections to the API server `config` names, each carrying at most
    /// `streams` watches; they share one TLS configuration. Fails when the client
    /// configuration cannot be used.
    pub fn http2(config: &Config, streams: usize) -> Result<Arc<Self>, kube::Error> {
        let tls = config.rustls_client_config()?;
        let config = config.clone();
        let another = move || http2_client(&config, tls.clone());
        let first = another()?;
        Ok(Arc::new(Self { open: Mutex::new(vec![(Arc::new(first), 0)]), another: Some(Box::new(another)), streams: streams.max(1) }))
    }

    /// Every watch through `client` (HTTP/1.1: a connection per watch; and tests).
    pub fn single(client: Client) -> Arc<Self> {
        Arc::new(Self { open: Mutex::new(vec![(Arc::new(client), 0)]), another: None, streams: usize::MAX })
    }

    /// No connection at all, for scopes that watch nothing (tests).
    #[cfg(test)]
    pub fn none() -> Arc<Self> {
        Arc::new(Self { open: Mutex::new(Vec::new()), another: None, streams: usize::MAX })
    }

    /// The client a new watch goes through (counted as carrying it for the life of
    /// the process: watches are never given back, so a count only over-states).
    pub fn for_watch(&self) -> Arc<Client> {
        let mut open = self.open.lock();
        if let Some((client, carried)) = open.iter_mut().find(|(_, carried)| *carried < self.streams) {
            *carried += 1;
            return client.clone();
        }
        match self.another.as_ref().map(|another| another()) {
            Some(Ok(client)) => {
                info!(connections = open.len() + 1, streams = self.streams, "every watch connection is full: opening another");
                let client = Arc::new(client);
                open.push((client.clone(), 1));
                client
            }
            // Cannot happen once the first connection was made (the same configuration):
            // the least loaded connection takes it (it may wait for a free stream).
            Some(Err(e)) => {
                warn!(error = %e, "no new watch connection: sharing the least loaded one");
                least_loaded(&mut open)
            }
            None => least_loaded(&mut open),
        }
    }

    /// How many connections are open (tests).
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.open.lock().len()
    }
}

/// The connection carrying the fewest watches, now carrying one more.
fn least_loaded(open: &mut [(Arc<Client>, usize)]) -> Arc<Client> {
    let (client, carried) = open.iter_mut().min_by_key(|(_, carried)| *carried).expect("a first connection is always open");
    *carried += 1;
    client.clone()
}

/// A client that speaks HTTP/2 only, with keep-alive pings so a connection the API
/// server no longer answers is noticed and its watches restart on a new one.
fn http2_client(config: &Config, tls: rustls::ClientConfig) -> Result<Client, kube::Error> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http2().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_carries_at_most_its_streams_and_another_opens_when_all_are_full() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = made.clone();
        let another = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(crate::runtime::mock::mock_api(serde_json::json!({})).0)
        };
        let first = another().unwrap();
        let connections = WatchConnections { open: Mutex::new(vec![(Arc::new(first), 0)]), another: Some(Box::new(another)), streams: 2 };
        for _ in 0..5 {
            connections.for_watch();
        }
        assert_eq!(connections.connections(), 3, "5 watches, 2 per connection");
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 3);
        let carried: Vec<usize> = connections.open.lock().iter().map(|(_, n)| *n).collect();
        assert_eq!(carried, [2, 2, 1]);

        let single = WatchConnections::single(crate::runtime::mock::mock_api(serde_json::json!({})).0);
        for _ in 0..500 {
            single.for_watch();
        }
        assert_eq!(single.connections(), 1, "HTTP/1.1: one client, a connection per request");
    }
}
