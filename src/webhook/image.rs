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
    #[error("{0:?} is not a valid image reference (at most 255 characters before the tag)")]
    Malformed(String),
    #[error("digest {0:?} must be <algorithm>:<hex>")]
    Digest(String),
    #[error("tag {0:?} is not valid")]
    Tag(String),
    #[error("registry {0:?} is not a valid host[:port]")]
    Registry(String),
    #[error(
        "repository {0:?} is not valid (lowercase letters and digits, separated by '.', '_', '__' or '-', in segments separated by '/')"
    )]
    Repository(String),
    #[error("{0:?} must start with a registry host such as ghcr.io or docker.io")]
    RuleHost(String),
    #[error("{0:?} has an empty path segment")]
    RuleSegment(String),
}

/// The pieces of the distribution reference grammar (`name[:tag][@digest]`), each
/// matched whole.
mod grammar {
    use regex::Regex;
    use std::sync::LazyLock;

    fn whole(pattern: &str) -> Regex {
        Regex::new(&format!("^(?:{pattern})$")).unwrap_or_else(|e| unreachable!("static pattern: {e}"))
    }

    const DOMAIN_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    const PATH_COMPONENT: &str = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    /// host (DNS name, IPv4 or bracketed IPv6) with an optional port.
    pub static DOMAIN: LazyLock<Regex> =
        LazyLock::new(|| whole(&format!(r"(?:{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")));
    pub static PATH: LazyLock<Regex> = LazyLock::new(|| whole(&format!("{PATH_COMPONENT}(?:/{PATH_COMPONENT})*")));
    pub static TAG: LazyLock<Regex> = LazyLock::new(|| whole("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
    pub static DIGEST: LazyLock<Regex> = LazyLock::new(|| whole("[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"));
}

/// The longest repository name (domain and path) the grammar allows.
const NAME_MAX: usize = 255;

impl<'a> ImageRef<'a> {
    /// Parses a reference as container runtimes resolve it: the first path segment
    /// is a registry when it holds a '.' or ':' or is `localhost`; otherwise the
    /// reference is on Docker Hub (`library/` for a single segment).
    pub fn parse(image: &'a str) -> Result<Self, ImageError> {
        if image.is_empty() {
            return Err(ImageError::Empty);
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) if grammar::DIGEST.is_match(digest) => (rest, Some(digest)),
            Some((_, digest)) => return Err(ImageError::Digest(digest.to_string())),
            None => (image, None),
        };
        // A tag follows the last ':' only if it is after the last '/' (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !grammar::TAG.is_match(tag)
        {
            return Err(ImageError::Tag(tag.to_string()));
        }
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(ImageError::Malformed(image.to_string()));
        }
        let (registry, repository): (Cow<str>, Cow<str>) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                if !grammar::DOMAIN.is_match(first) {
                    return Err(ImageError::Registry(first.to_string()));
                }
                let host = if first.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(first.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(first)
                };
                (host, Cow::Borrowed(path))
            }
            _ => (Cow::Borrowed(DOCKER_HUB), Cow::Borrowed(name)),
        };
        if !grammar::PATH.is_match(&repository) {
            return Err(ImageError::Repository(repository.into_owned()));
        }
        let registry =
            if registry == "index.docker.io" || registry == "registry-1.docker.io" { Cow::Borrowed(DOCKER_HUB) } else { registry };
        let repository =
            if registry == DOCKER_HUB && !repository.contains('/') { Cow::Owned(format!("library/{repository}")) } else { repository };
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
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let with_digest = format!("registry.local:5000/team/x@{digest}");
        let r = ImageRef::parse(&with_digest).unwrap();
        assert_eq!(r.registry, "registry.local:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(digest));
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
        // The distribution grammar exactly: no '.'/'..' segments, separators only between
        // letters and digits, a tag that starts with a word character, a real digest,
        // at most 255 characters of name.
        for bad in [
            "ghcr.io/acme/../x",
            "ghcr.io/./x",
            "ghcr.io/acme/-x",
            "ghcr.io/acme/x-",
            "ghcr.io/acme/x..y",
            "ghcr.io/acme/x:-tag",
            "ghcr.io/acme/x:.tag",
            "ghcr.io/acme/x@sha256:abc",
            "ghcr.io/acme//x",
            "-ghcr.io/x",
            "ghcr.io:port/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} is not a valid reference");
        }
        assert!(ImageRef::parse(&format!("ghcr.io/{}", "a".repeat(250))).is_err(), "over 255 characters");
        assert!(ImageRef::parse(&format!("ghcr.io/acme/x:{}", "t".repeat(129))).is_err(), "a tag over 128 characters");
        for good in ["ghcr.io/acme/x__y", "ghcr.io/acme/x---y", "ghcr.io/acme/x.y_z:v1.0-rc_1", "[::1]:5000/x", "127.0.0.1:5000/x"] {
            assert!(ImageRef::parse(good).is_ok(), "{good} is a valid reference");
        }
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
        assert!(port.matches(&ImageRef::parse(&format!("registry.local:5000/x@sha256:{}", "0".repeat(64))).unwrap()));
        assert!(!port.matches(&ImageRef::parse("registry.local/x").unwrap()));
        assert!(RegistryRule::parse("acme").is_err());
    }
}
