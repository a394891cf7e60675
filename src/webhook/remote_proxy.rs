//! The tenancy checks of an MCPRemoteProxy: the namespace may hold one, its remote
//! URL is one the cluster may reach on a tenant's behalf (never loopback,
//! link-local, metadata or API server hosts; private ones only with
//! `allowPrivateEndpoint`), its host is among the namespace's `allowedRemoteHosts`,
//! and it sets no field this release does not carry out.

use serde_json::Value;

use super::rules::{Facts, FieldError, Rule, Violation, admitted_spec};

/// One entry of `allowedRemoteHosts`: a host, or every subdomain of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    /// None when `text` is neither a host name (or address) nor `*.<domain>`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let (wildcard, host) = match text.strip_prefix("*.") {
            Some(domain) => (true, domain.to_string()),
            None => (false, text),
        };
        let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let valid = !host.is_empty() && (host.parse::<std::net::IpAddr>().is_ok() || host.split('.').all(label_ok));
        match (valid, wildcard) {
            (false, _) => None,
            (true, true) => Some(HostPattern::Subdomains(host)),
            (true, false) => Some(HostPattern::Exact(host)),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self {
            HostPattern::Exact(h) => host == *h,
            HostPattern::Subdomains(domain) => host.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        }
    }
}

/// Every violation of an MCPRemoteProxy with `spec` in `namespace`, all at once.
pub fn validate(spec: Option<&Value>, namespace: &str, facts: &Facts) -> Vec<Violation> {
    let spec = match admitted_spec(spec, namespace, facts) {
        Ok(spec) => spec,
        Err(refused) => return vec![refused],
    };
    let mut out = Vec::new();
    for (path, why) in crate::kinds::mcpserver::remote::UNSUPPORTED_FIELDS {
        if spec.get(path.trim_start_matches("spec.")).is_some() {
            out.push(Violation::new(path, FieldError::Forbidden, Rule::Unsupported, why));
        }
    }
    let url = spec.get("remoteUrl").and_then(Value::as_str).unwrap_or_default();
    let allow_private = spec.get("allowPrivateEndpoint").and_then(Value::as_bool).unwrap_or(false);
    if let Err(e) = crate::shared::remote_url::check(url, allow_private) {
        out.push(Violation::new("spec.remoteUrl", FieldError::Invalid, Rule::RemoteUrl, e.to_string()));
        return out;
    }
    let (rules, _) = facts.rules_in(namespace);
    if let Some(allowed) = &rules.allowed_remote_hosts {
        let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string())).unwrap_or_default();
        if !allowed.iter().filter_map(|p| HostPattern::parse(p)).any(|p| p.matches(&host)) {
            let listed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
            out.push(Violation::new(
                "spec.remoteUrl",
                FieldError::Forbidden,
                Rule::RemoteHost,
                format!("host {host:?} is not among the remote hosts namespace {namespace:?} may proxy (allowed: {listed})"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::Scope;
    use crate::webhook::policy::TenancyPolicy;
    use serde_json::json;

    fn violations(spec: Value, policy: &str) -> Vec<String> {
        let policy = TenancyPolicy::from_text(policy).unwrap();
        let scope = Scope::Namespaces(vec!["team".into()]);
        let no_quota = |_: &str| 0usize;
        let levels = crate::webhook::namespaces::NamespaceLevels::default();
        let facts = Facts { policy: &policy, scope: &scope, quota: &no_quota, namespaces: &levels };
        validate(Some(&spec), "team", &facts).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn hosts_match_exactly_or_as_subdomains() {
        let exact = HostPattern::parse("MCP.example.com").unwrap();
        assert!(exact.matches("mcp.example.com") && !exact.matches("x.mcp.example.com"));
        let sub = HostPattern::parse("*.example.com").unwrap();
        assert!(sub.matches("mcp.example.com") && sub.matches("a.b.example.com"));
        assert!(!sub.matches("example.com") && !sub.matches("badexample.com"));
        assert_eq!(HostPattern::parse("https://x"), None);
        assert_eq!(HostPattern::parse("*."), None);
    }

    #[test]
    fn remote_urls_are_checked_and_held_to_the_namespaces_hosts() {
        let policy = "defaults:\n  allowedRemoteHosts: ['*.example.com']\n";
        assert!(violations(json!({"remoteUrl": "https://mcp.example.com/mcp"}), policy).is_empty());
        let other = violations(json!({"remoteUrl": "https://mcp.evil.test/mcp"}), policy);
        assert_eq!(other.len(), 1, "{other:?}");
        assert!(other[0].starts_with("spec.remoteUrl: Forbidden: host \"mcp.evil.test\" is not among"), "{other:?}");
        let metadata = violations(json!({"remoteUrl": "http://169.254.169.254/"}), "{}");
        assert!(metadata[0].starts_with("spec.remoteUrl: Invalid value: remote URL host 169.254.169.254 is never allowed"), "{metadata:?}");
        let private = violations(json!({"remoteUrl": "http://10.0.0.5/mcp"}), "{}");
        assert!(private[0].contains("allowPrivateEndpoint"), "{private:?}");
        assert!(violations(json!({"remoteUrl": "http://10.0.0.5/mcp", "allowPrivateEndpoint": true}), "{}").is_empty());
        let unsupported = violations(json!({"remoteUrl": "https://mcp.example.com", "serviceAccount": "sa", "podTemplateSpec": {}}), "{}");
        assert_eq!(unsupported.len(), 2, "{unsupported:?}");
    }
}
