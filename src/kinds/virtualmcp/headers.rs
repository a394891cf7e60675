//! The headers of a caller's request the vMCP forwards to every backend
//! (`passthroughHeaders`), checked before they reach its file.

use crate::shared::problem::Problem;

/// Headers never forwarded from a caller to the backends: routing, hop-by-hop,
/// smuggling and identity-spoofing headers, and credentials (the vMCP refuses to
/// start with any of them).
const RESTRICTED_HEADERS: &[&str] = &[
    "Host",
    "Connection",
    "Keep-Alive",
    "Te",
    "Trailer",
    "Upgrade",
    "Http2-Settings",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Proxy-Connection",
    "Transfer-Encoding",
    "Content-Length",
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-Ip",
    "Authorization",
    "Cookie",
];

/// The header names in `names` (at `path`) the vMCP cannot forward, with why.
pub fn passthrough_problems(names: &[String], path: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if hyper::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(Problem::at(at, format!("{name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)")));
        } else if let Some(restricted) = RESTRICTED_HEADERS.iter().find(|r| r.eq_ignore_ascii_case(name)) {
            problems.push(Problem::at(
                at,
                format!("{restricted} may not be forwarded from callers to backends (routing, hop-by-hop, identity and credential headers never are)"),
            ));
        } else if !seen.insert(name.to_ascii_lowercase()) {
            problems.push(Problem::at(at, format!("{name:?} is listed twice")));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::kinds::virtualmcp::config::{parse, rendered};

    #[test]
    fn caller_headers_to_forward_reach_the_file_and_restricted_malformed_or_repeated_ones_are_refused() {
        let parsed = parse(Some(&json!({"passthroughHeaders": ["X-Tenant", "X-Request-Id"]})), "g").unwrap();
        let back = rendered(&parsed);
        assert_eq!(back["passthroughHeaders"], json!(["X-Tenant", "X-Request-Id"]));

        let bad = json!({"passthroughHeaders": ["cookie", "bad header", "X-Tenant", "x-tenant", "X-Forwarded-For"]});
        let found: Vec<(String, String)> = parse(Some(&bad), "g").unwrap_err().into_iter().map(|p| (p.path, p.message)).collect();
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.config.passthroughHeaders[0]",
                "spec.config.passthroughHeaders[1]",
                "spec.config.passthroughHeaders[3]",
                "spec.config.passthroughHeaders[4]"
            ]
        );
        assert!(found[0].1.starts_with("Cookie may not be forwarded"), "{found:?}");
        assert!(found[1].1.contains("is not a header name"), "{found:?}");
        assert!(found[2].1.contains("listed twice"), "{found:?}");
        assert!(found[3].1.starts_with("X-Forwarded-For may not be forwarded"), "{found:?}");
    }
}
