//! Container image references, parsed the way container runtimes resolve them, so
//! registry rules match on the real registry host and repository path, never on a
//! string prefix ("ghcr.io.evil.com/x" is not "ghcr.io").

use std::borrow::Cow;

/// Borrowed from the reference text wherever normalisation leaves it unchanged, so
/// checking an image on the admission path allocates only when it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry host, with port if any ("docker.io", "registry.local:5000").
    pub registry: Cow<'a, str>,
    /// Repository path ("library/redis", "acme/tools/server").
    pub repository: Cow<'a, str>,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

const DOCKER_HUB: &str = "docker.io";

/// Why an image reference or a registry rule does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("image is empty")]
    Empty,
    #[error("{0:?} is not a valid image reference")]
    Malformed(String),
    #[error("digest {0:?} must be <algorithm>:<hex>")]
    Digest(String),
    #[error("tag {0:?} is not valid")]
    Tag(String),
    #[error("registry {0:?} is not a valid host[:port]")]
    Registry(String),
    #[error("repository {0:?} is not valid (lowercase path segments separated by '/')")]
    Repository(String),
    #[error("{0:?} must start with a registry host such as ghcr.io or docker.io")]
    RuleHost(String),
    #[error("{0:?} has an empty path segment")]
    RuleSegment(String),
}

impl<'a> ImageRef<'a> {
    pub fn parse(image: &'a str) -> Result<Self, ImageError> {
        if image.is_empty() {
            return Err(ImageError::Empty);
        }
        // Byte checks first (every reference an API server sends is ASCII); the
        // Unicode ones only for text that is not.
        let blank_or_control = image.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            || (!image.is_ascii() && image.chars().any(|c| c.is_whitespace() || c.is_control()));
        if image.len() > 4096 || blank_or_control {
            return Err(ImageError::Malformed(image.to_string()));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d.split_once(':').ok_or_else(|| ImageError::Digest(d.to_string()))?;
                if algo.is_empty() || hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ImageError::Digest(d.to_string()));
                }
                (r, Some(d))
            }
            None => (image, None),
        };
        // A tag follows the last ':' only if it is after the last '/' (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && (t.is_empty() || t.len() > 128 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(ImageError::Tag(t.to_string()));
        }
        let (registry, repository): (Cow<str>, Cow<str>) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                let host = if first.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(first.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(first)
                };
                (host, Cow::Borrowed(path))
            }
            _ => (Cow::Borrowed(DOCKER_HUB), Cow::Borrowed(name)),
        };
        if let Some((host, port)) = registry.split_once(':')
            && (host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ImageError::Registry(registry.into_owned()));
        }
        let registry =
            if registry == "index.docker.io" || registry == "registry-1.docker.io" { Cow::Borrowed(DOCKER_HUB) } else { registry };
        let repository =
            if registry == DOCKER_HUB && !repository.contains('/') { Cow::Owned(format!("library/{repository}")) } else { repository };
        if repository.is_empty()
            || repository.split('/').any(|seg| {
                seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            })
        {
            return Err(ImageError::Repository(repository.into_owned()));
        }
        Ok(Self { registry, repository, tag, digest })
    }
}

/// An allowed-registry entry: a registry host, optionally with a repository prefix
/// matched on whole path segments ("ghcr.io/acme" allows "ghcr.io/acme/x", not "ghcr.io/acmecorp/x").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRule {
    pub registry: String,
    pub path: Vec<String>,
}

impl RegistryRule {
    pub fn parse(rule: &str) -> Result<Self, ImageError> {
        let rule = rule.trim_end_matches('/');
        let (host, path) = rule.split_once('/').unwrap_or((rule, ""));
        if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(ImageError::RuleHost(rule.to_string()));
        }
        let host = host.to_ascii_lowercase();
        let host = if host == "index.docker.io" { DOCKER_HUB.to_string() } else { host };
        let path: Vec<String> = if path.is_empty() { vec![] } else { path.split('/').map(str::to_string).collect() };
        if path.iter().any(|s| s.is_empty()) {
            return Err(ImageError::RuleSegment(rule.to_string()));
        }
        Ok(Self { registry: host, path })
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        if self.registry != image.registry {
            return false;
        }
        let mut segments = image.repository.split('/');
        self.path.iter().all(|p| segments.next() == Some(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("ghcr.io/stackloklabs/osv-mcp/server:1.0").unwrap();
        assert_eq!((&*r.registry, &*r.repository, r.tag), ("ghcr.io", "stackloklabs/osv-mcp/server", Some("1.0")));
        let r = ImageRef::parse("redis").unwrap();
        assert_eq!((&*r.registry, &*r.repository), ("docker.io", "library/redis"));
        let r = ImageRef::parse("acme/tool").unwrap();
        assert_eq!((&*r.registry, &*r.repository), ("docker.io", "acme/tool"));
        let r = ImageRef::parse("registry.local:5000/team/x@sha256:abcdef").unwrap();
        assert_eq!(r.registry, "registry.local:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some("sha256:abcdef"));
        let r = ImageRef::parse("localhost/x:dev").unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("UPPER/case").is_err());
        assert!(ImageRef::parse("a b").is_err());
        assert!(ImageRef::parse("a\u{a0}b").is_err(), "a Unicode space");
        assert!(ImageRef::parse("ghcr.io/acme/x:t\u{e9}").is_err(), "a non-ASCII tag");
        assert!(ImageRef::parse("ghcr.io/acm\u{e9}/x").is_err(), "a non-ASCII repository");
        assert!(ImageRef::parse("ghcr.io:5x/acme/x").is_err(), "a port that is not a number");
        assert!(ImageRef::parse("x@sha256").is_err());
        assert!(ImageRef::parse("x:bad/tag").is_err());
    }

    #[test]
    fn rules_match_hosts_and_whole_segments() {
        let acme = RegistryRule::parse("ghcr.io/acme").unwrap();
        assert!(acme.matches(&ImageRef::parse("ghcr.io/acme/tool:1").unwrap()));
        assert!(!acme.matches(&ImageRef::parse("ghcr.io/acmecorp/tool").unwrap()));
        assert!(!acme.matches(&ImageRef::parse("ghcr.io.evil.com/acme/tool").unwrap()));
        let hub = RegistryRule::parse("docker.io/library").unwrap();
        assert!(hub.matches(&ImageRef::parse("redis").unwrap()));
        assert!(hub.matches(&ImageRef::parse("index.docker.io/library/redis").unwrap()));
        assert!(!hub.matches(&ImageRef::parse("someone/redis").unwrap()));
        let port = RegistryRule::parse("registry.local:5000").unwrap();
        assert!(port.matches(&ImageRef::parse("registry.local:5000/x@sha256:00").unwrap()));
        assert!(!port.matches(&ImageRef::parse("registry.local/x").unwrap()));
        assert!(RegistryRule::parse("acme").is_err());
    }
}
