//! Clients for the watches: HTTP/2, so the watches of many scopes share a few TLS
//! connections as streams instead of holding one HTTP/1.1 connection (TLS state and
//! buffers) each. Writes keep their own client, so watches can never take the streams
//! a write needs.

use std::time::Duration;

use kube::client::ConfigExt;
use kube::{Client, Config};

/// Scopes whose watches share one connection: 5 × 15 watches plus the ConfigMaps
/// watched on demand stay under the 100 concurrent streams API servers commonly allow
/// on a connection (a stream over the limit would wait, not fail).
pub const SCOPES_PER_CONNECTION: usize = 5;

/// One HTTP/2 client for every [`SCOPES_PER_CONNECTION`] of `scopes`.
pub fn for_scopes(config: &Config, scopes: usize) -> Result<Vec<Client>, kube::Error> {
    (0..scopes.div_ceil(SCOPES_PER_CONNECTION).max(1)).map(|_| http2_client(config)).collect()
}

/// A client that speaks HTTP/2 only, with keep-alive pings so a connection the API
/// server no longer answers is noticed and its watches restart on a new one.
pub fn http2_client(config: &Config) -> Result<Client, kube::Error> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
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
