//! Operator settings from flags and environment (names match the Helm chart).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/stacklok/toolhive/proxyrunner:v0.44.0";
pub const DEFAULT_VMCP_IMAGE: &str = "ghcr.io/stacklok/toolhive/vmcp:v0.44.0";
pub const LEADER_LEASE_NAME: &str = "toolhive-operator-leader-election";
pub const FIELD_MANAGER: &str = "toolhive-operator";
/// The address every proxy runner listens on unless the chart says otherwise.
pub const DEFAULT_PROXY_HOST: &str = "0.0.0.0";

/// Watches one HTTP/2 connection carries by default: the least a server should allow
/// (RFC 9113 asks for at least 100 concurrent streams). A stream over the server's
/// limit would wait, not fail, and a watch never ends: so a connection is never
/// given more watches than the server is known to allow. kube-apiserver allows 250
/// unless `--http2-max-streams-per-connection` says otherwise.
pub const STREAMS_PER_CONNECTION: usize = 100;

#[derive(Parser, Debug, Clone)]
#[command(name = "toolhive-operator", version, about = "Runs MCPServers and guards them with a tenancy admission webhook")]
pub struct Args {
    /// Address of the Prometheus /metrics endpoint (":8080" means all interfaces).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Only the holder of the Lease `toolhive-operator-leader-election` reconciles.
    #[arg(long, default_value_t = false)]
    pub leader_elect: bool,
    /// Address of the admission webhook (TLS). Empty disables the webhook.
    #[arg(long, default_value = ":9443")]
    pub webhook_bind_address: String,
    /// Directory holding tls.crt and tls.key for the webhook (a mounted Secret).
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    pub webhook_cert_dir: PathBuf,
    /// Be the webhook's certificate authority: keep a CA and serving certificate in
    /// this Secret of the operator's namespace (which must exist), renew them, and
    /// publish the CA as the caBundle of --webhook-configuration. Unset: read the pair
    /// from --webhook-cert-dir.
    #[arg(long)]
    pub webhook_cert_secret: Option<String>,
    /// DNS names and IP addresses for the serving certificate (with --webhook-cert-secret).
    #[arg(long, value_delimiter = ',')]
    pub webhook_cert_hosts: Vec<String>,
    /// Name of the Mutating- and ValidatingWebhookConfiguration whose caBundle is kept
    /// current (with --webhook-cert-secret).
    #[arg(long, default_value = "")]
    pub webhook_configuration: String,
    /// Carry the watches over HTTP/2, many sharing one connection as streams: much
    /// less memory in namespace mode. false: one HTTP/1.1 connection per watch (for
    /// an API server path that cannot carry HTTP/2).
    #[arg(long, env = "TOOLHIVE_WATCH_HTTP2", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_http2: bool,
    /// Watches one HTTP/2 connection carries (at most the API server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS, 250 for kube-apiserver unless set otherwise:
    /// a watch beyond it would wait for a stream for ever). Fewer connections, less
    /// memory.
    #[arg(long, env = "TOOLHIVE_WATCH_STREAMS_PER_CONNECTION", default_value_t = STREAMS_PER_CONNECTION)]
    pub watch_streams_per_connection: usize,
    /// PEM CA bundle: only clients with a certificate it signs may connect to the
    /// webhook (the API server, given its client certificate in an
    /// AdmissionConfiguration). Unset: any client may connect.
    #[arg(long)]
    pub webhook_client_ca: Option<PathBuf>,
    /// How often the operator-issued certificates are checked for renewal.
    #[arg(long, default_value_t = 60)]
    pub webhook_cert_check_seconds: u64,
    /// Tenancy policy file (YAML or JSON). Without it every namespace the operator
    /// watches is allowed and no registry restriction applies.
    #[arg(long, env = "TOOLHIVE_TENANCY_POLICY")]
    pub tenancy_policy: Option<PathBuf>,
    /// Namespace of the operator's own objects (lease); from the downward API.
    #[arg(long, env = "POD_NAMESPACE", default_value = "toolhive-system")]
    pub pod_namespace: String,
    /// Comma-separated namespaces to watch; unset means the whole cluster.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Image of the ToolHive proxy runner put into every proxy Deployment.
    #[arg(long, env = "TOOLHIVE_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,
    /// Image of the vMCP put into every VirtualMCPServer's Deployment.
    #[arg(long, env = "VMCP_IMAGE", default_value = DEFAULT_VMCP_IMAGE)]
    pub vmcp_image: String,
    /// Address every proxy runner listens on (its RunConfig `host`).
    #[arg(long, env = "TOOLHIVE_PROXY_HOST", default_value = DEFAULT_PROXY_HOST)]
    pub proxy_host: String,
    /// Redis (host:port) for the sessions of MCPServers that name no session storage.
    #[arg(long, env = "TOOLHIVE_DEFAULT_REDIS_ADDR")]
    pub default_redis_addr: Option<String>,
    /// Secret (in each server's namespace) holding that Redis's password.
    #[arg(long, env = "TOOLHIVE_DEFAULT_REDIS_SECRET_NAME")]
    pub default_redis_secret_name: Option<String>,
    /// Key of the password in that Secret.
    #[arg(long, env = "TOOLHIVE_DEFAULT_REDIS_SECRET_KEY", default_value = "redis-password")]
    pub default_redis_secret_key: String,
    /// TLS to the default Redis. Refused at start: the proxy runner this release
    /// drives cannot speak TLS to Redis.
    #[arg(long, env = "TOOLHIVE_DEFAULT_REDIS_TLS_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub default_redis_tls_enabled: bool,
    /// Comma-separated pull secrets every proxy (Deployment and ServiceAccounts) gets
    /// after its own; each must exist in the server's namespace.
    #[arg(long, env = "TOOLHIVE_DEFAULT_IMAGE_PULL_SECRETS", default_value = "")]
    pub default_image_pull_secrets: String,
    /// Text logs instead of JSON.
    #[arg(long, env = "UNSTRUCTURED_LOGS", default_value_t = false, action = clap::ArgAction::Set)]
    pub unstructured_logs: bool,
    /// MCPServers reconciled at the same time, across every watched namespace.
    #[arg(long, default_value_t = 16)]
    pub max_concurrent_reconciles: usize,
    /// Lease duration in seconds (standbys take over after this long without renewal).
    #[arg(long, default_value_t = 15)]
    pub leader_lease_seconds: u64,
}

/// The names in a comma-separated list, trimmed, empty entries skipped, each once.
pub fn name_list(raw: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "TOOLHIVE_DEFAULT_REDIS_TLS_ENABLED=true (operator.defaultRedis.tls.enabled) is not supported by this release: the proxy runner it drives (v0.44.0) cannot speak TLS to Redis; unset it, or use a Redis reachable without TLS"
    )]
    DefaultRedisTls,
    #[error("WATCH_NAMESPACE={0:?} has an empty entry; give a comma-separated list of namespaces, or unset it to watch the whole cluster")]
    EmptyNamespace(String),
    #[error("WATCH_NAMESPACE entry {0:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63 characters)")]
    InvalidNamespace(String),
    #[error("invalid bind address {address:?}: {reason}")]
    Bind { address: String, reason: std::net::AddrParseError },
}

/// Which namespaces the operator works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// Parses WATCH_NAMESPACE. Unset means the whole cluster; anything set must be a
    /// comma-separated list of valid namespace names (an empty list is an error, never
    /// "watch everything").
    pub fn parse(watch_namespace: Option<&str>) -> Result<Self, ConfigError> {
        let Some(raw) = watch_namespace else { return Ok(Scope::Cluster) };
        let mut out: Vec<String> = Vec::new();
        for part in raw.split(',') {
            let ns = part.trim();
            if ns.is_empty() {
                return Err(ConfigError::EmptyNamespace(raw.to_string()));
            }
            if !is_dns1123_label(ns) {
                return Err(ConfigError::InvalidNamespace(ns.to_string()));
            }
            if !out.iter().any(|o| o == ns) {
                out.push(ns.to_string());
            }
        }
        Ok(Scope::Namespaces(out))
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// ":8080" -> 0.0.0.0:8080; "127.0.0.1:0" as given.
pub fn parse_bind(addr: &str) -> Result<SocketAddr, ConfigError> {
    let full = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
    full.parse().map_err(|reason| ConfigError::Bind { address: addr.to_string(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_namespace_parsing() {
        assert_eq!(Scope::parse(None), Ok(Scope::Cluster));
        assert_eq!(Scope::parse(Some("a, b,a")), Ok(Scope::Namespaces(vec!["a".into(), "b".into()])));
        assert!(Scope::parse(Some("")).unwrap_err().to_string().contains("empty entry"));
        assert!(Scope::parse(Some("a,,b")).is_err());
        assert!(Scope::parse(Some("Team_A")).unwrap_err().to_string().contains("not a valid namespace"));
        assert!(Scope::parse(Some("-a")).is_err());
        assert!(Scope::Namespaces(vec!["a".into()]).allows("a"));
        assert!(!Scope::Namespaces(vec!["a".into()]).allows("b"));
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind(":8080").unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(parse_bind("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_bind("nope").is_err());
    }
}
