//! Whether a remote MCP server's URL may be reached from inside the cluster on a
//! tenant's behalf (MCPServerEntry, and MCPRemoteProxy after it). The host is judged
//! as written, with no DNS lookup: loopback, link-local (where cloud metadata
//! services live), the unspecified address and the API server's own names are never
//! allowed; private networks and `*.cluster.local` only when the object says so.

use std::net::{IpAddr, Ipv6Addr};

/// Why a remote URL is refused (the user's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteUrlError {
    #[error("remote URL is empty")]
    Empty,
    #[error("remote URL is invalid: {0}")]
    Invalid(String),
    #[error("remote URL must use http or https, not {0:?}")]
    Scheme(String),
    #[error("remote URL has no host")]
    NoHost,
    #[error("remote URL host {0} is never allowed: {1}")]
    Blocked(String, &'static str),
    #[error("remote URL host {0} is {1}; set allowPrivateEndpoint: true to reach it")]
    Private(String, &'static str),
}

/// Names that always reach something the tenant must not (the API server, the node,
/// a cloud metadata service), with any subdomain.
const BLOCKED_NAMES: &[&str] =
    &["localhost", "kubernetes.default.svc.cluster.local", "kubernetes.default.svc", "kubernetes.default", "metadata.google.internal"];

/// Checks `raw`; `allow_private` admits private networks and in-cluster names.
pub fn check(raw: &str, allow_private: bool) -> Result<(), RemoteUrlError> {
    if raw.is_empty() {
        return Err(RemoteUrlError::Empty);
    }
    let url = url::Url::parse(raw).map_err(|e| RemoteUrlError::Invalid(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(RemoteUrlError::Scheme(url.scheme().to_string()));
    }
    let host = url.host().ok_or(RemoteUrlError::NoHost)?;
    let shown = host.to_string();
    let ip = match host {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let under = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
            if BLOCKED_NAMES.iter().any(|blocked| under(blocked)) {
                return Err(RemoteUrlError::Blocked(shown, "a local, API server or metadata name"));
            }
            if !allow_private && under("cluster.local") {
                return Err(RemoteUrlError::Private(shown, "an in-cluster name"));
            }
            return Ok(());
        }
    };
    if let Some(why) = always_blocked(ip) {
        return Err(RemoteUrlError::Blocked(shown, why));
    }
    if !allow_private && is_private(ip) {
        return Err(RemoteUrlError::Private(shown, "a private address"));
    }
    Ok(())
}

fn always_blocked(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("in 0.0.0.0/8"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local, where cloud metadata services answer"),
        IpAddr::V6(v6) if v6 == Ipv6Addr::UNSPECIFIED => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_pass_and_local_or_metadata_ones_never_do() {
        for ok in ["https://mcp.example.com/mcp", "http://203.0.113.7:8080", "https://[2001:db8::1]/", "https://svc.team-a.svc:8443"] {
            assert_eq!(check(ok, false), Ok(()), "{ok}");
        }
        for (blocked, allow) in [
            ("http://127.0.0.1/", true),
            ("http://169.254.169.254/latest/meta-data", true),
            ("http://0.0.0.0:80", true),
            ("http://[::1]/", true),
            ("http://[fe80::1]/", true),
            ("http://[::ffff:127.0.0.1]/", true),
            ("http://localhost:8080", true),
            ("https://kubernetes.default.svc/api", true),
            ("http://METADATA.google.internal./", true),
        ] {
            assert!(matches!(check(blocked, allow), Err(RemoteUrlError::Blocked(..))), "{blocked}: {:?}", check(blocked, allow));
        }
    }

    #[test]
    fn private_endpoints_need_the_opt_in() {
        for private in
            ["http://10.1.2.3/", "http://172.20.0.1/", "http://192.168.1.1/", "http://[fd00::1]/", "http://mcp.team-a.svc.cluster.local/"]
        {
            assert!(matches!(check(private, false), Err(RemoteUrlError::Private(..))), "{private}");
            assert_eq!(check(private, true), Ok(()), "{private}");
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        assert_eq!(check("", false), Err(RemoteUrlError::Empty));
        assert!(matches!(check("ftp://mcp.example.com", false), Err(RemoteUrlError::Scheme(s)) if s == "ftp"));
        assert!(matches!(check("https://", false), Err(RemoteUrlError::Invalid(_))));
        assert!(matches!(check("not a url", false), Err(RemoteUrlError::Invalid(_))));
    }
}
