//! The runtime: what runs any controller and knows no kind of its own. Caches (one
//! store per kind, one watch per kind per scope feeding it), leader election, metrics, probes and logging.
pub mod cache;
pub mod http;
pub mod leader;
pub mod logging;
pub mod metrics;
#[cfg(test)]
pub mod mock;
pub mod ondemand;
pub mod status;
pub mod watch;
pub mod watch_client;
