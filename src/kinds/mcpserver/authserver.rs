//! An MCPServer's embedded authorization server: which MCPExternalAuthConfig names
//! it (`spec.authServerRef`, or `spec.externalAuthConfigRef` of type
//! embeddedAuthServer), and what keeps the proxy from serving it.

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::api::MCPServer;
use super::references::References;
use super::resources::Resolved;
use crate::kinds::externalauth::authserver::{EmbeddedAuthServer, parse};
use crate::kinds::externalauth::{ExternalAuthType, MCPExternalAuthConfig, MCPExternalAuthConfigSpec};
use crate::shared::problem::{ConditionReport, Problem};

/// The MCPServer field that names the embedded authorization server.
const FIELD: &str = "spec.authServerRef";

/// The MCPServer condition about `spec.authServerRef` (the reference's type and reasons).
pub const REF_CONDITION: &str = "AuthServerRefValidated";

/// `server`'s embedded authorization server from the cache: named by
/// `spec.authServerRef`, or by `spec.externalAuthConfigRef` when that names one. A
/// failed authServerRef adds its condition and problem to `out`; so does a server
/// naming one both ways.
pub fn resolve(
    server: &MCPServer,
    configs: &Store<MCPExternalAuthConfig>,
    external_auth: Option<&MCPExternalAuthConfigSpec>,
    out: &mut References,
) -> Option<EmbeddedAuthServer> {
    let from_external_auth = external_auth.filter(|e| e.auth_type == ExternalAuthType::EmbeddedAuthServer);
    let Some(reference) = &server.spec.auth_server_ref else {
        return from_external_auth.and_then(|e| parse(e.embedded_auth_server.as_ref()).ok());
    };
    let ns = server.namespace().unwrap_or_default();
    let name = &reference.name;
    let (reason, problem) = match configs.get(&ObjectRef::new(name).within(&ns)) {
        None => (
            "AuthServerRefNotFound",
            Problem::at(FIELD, format!("MCPExternalAuthConfig {name} not found in namespace {ns}; the proxy is stopped until it exists")),
        ),
        Some(config) if config.spec.auth_type != ExternalAuthType::EmbeddedAuthServer => (
            "AuthServerRefInvalidType",
            Problem::at(FIELD, format!("MCPExternalAuthConfig {name} is not of type embeddedAuthServer; the proxy is stopped")),
        ),
        Some(_) if from_external_auth.is_some() => (
            "AuthServerRefInvalidConfig",
            Problem::general(
                "spec.authServerRef and spec.externalAuthConfigRef both name an embedded authorization server; name it in authServerRef only",
            ),
        ),
        Some(config) => match parse(config.spec.embedded_auth_server.as_ref()) {
            Err(problem) => (
                "AuthServerRefInvalidConfig",
                Problem::at(FIELD, format!("MCPExternalAuthConfig {name} is invalid ({problem}); the proxy is stopped")),
            ),
            Ok(parsed) => {
                out.conditions.push(ConditionReport::new(
                    REF_CONDITION,
                    true,
                    "AuthServerRefValid",
                    format!("MCPExternalAuthConfig {name} is valid"),
                ));
                return Some(parsed);
            }
        },
    };
    out.conditions.push(ConditionReport::new(REF_CONDITION, false, reason, problem.to_string()));
    out.problems.push(problem);
    None
}

/// What keeps the proxy runner from serving `config` for `server` (whose references
/// resolved to `resolved`), as the user reads it.
pub fn conflict(server: &MCPServer, config: &EmbeddedAuthServer, resolved: &Resolved) -> Option<Problem> {
    let Some(validation) = super::resources::oidc_validation(server, resolved) else {
        return Some(Problem::at(
            "spec.oidcConfigRef",
            "the embedded authorization server needs one (the proxy validates the tokens it issues)",
        ));
    };
    if validation.audience != validation.resource_url {
        return Some(Problem::at(
            "spec.oidcConfigRef.audience",
            format!(
                "must equal the resource URL ({}) when the embedded authorization server issues the tokens; set audience, or resourceUrl, so they match",
                validation.resource_url
            ),
        ));
    }
    if server.spec.authz_config.is_some() || resolved.authz.is_some() {
        return Some(Problem::general(
            "authorization policies together with the embedded authorization server are not carried out by this operator release",
        ));
    }
    if config.disable_upstream_token_injection
        && resolved.external_auth.as_ref().is_some_and(|e| e.auth_type == ExternalAuthType::TokenExchange)
    {
        return Some(Problem::general(
            "disableUpstreamTokenInjection cannot be combined with a token exchange (it would put the header back)",
        ));
    }
    None
}
