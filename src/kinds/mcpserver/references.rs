//! An MCPServer's references to the configuration kinds (MCPToolConfig,
//! MCPTelemetryConfig, ...): which field names each, the condition it gives the
//! server, resolution from the caches (same namespace only), and the mapping from a
//! changed configuration to the servers that name it (found in the server cache,
//! never by listing).

use std::sync::Arc;

use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::api::MCPServer;
use crate::kinds::{
    authz::MCPAuthzConfig, externalauth::MCPExternalAuthConfig, oidc::MCPOIDCConfig, telemetry::MCPTelemetryConfig,
    toolconfig::MCPToolConfig, webhookconfig::MCPWebhookConfig,
};
use crate::shared::configkind::ConfigKind;
use crate::shared::problem::{ConditionReport, Problem};

/// A configuration kind an MCPServer names in one of its `spec.*Ref` fields.
pub trait Referenced: ConfigKind {
    /// The MCPServer field that names it, as users write it: `spec.toolConfigRef`.
    const REF_FIELD: &'static str;
    /// The MCPServer condition about the reference: its type, and its reasons when the
    /// object is valid, missing, invalid.
    const REF_CONDITION: RefCondition;
    /// The name `server` gives in [`Self::REF_FIELD`], if any.
    fn referenced_by(server: &MCPServer) -> Option<&str>;
    /// The name another field of `server` gives, if the kind has one (an
    /// MCPExternalAuthConfig is also named by `spec.authServerRef`).
    fn also_referenced_by(_server: &MCPServer) -> Option<&str> {
        None
    }
}

/// Implements [`Referenced`]: the MCPServer field that names the kind (as users
/// write it, and the Rust field holding a `name`), and its condition on the
/// MCPServer: `<prefix>RefValidated`, reasons `<prefix>RefValid`, `<prefix>RefNotFound`
/// and `<prefix><invalid>`.
macro_rules! referenced {
    ($kind:ty {
        field: $field:literal,
        server_field: $server_field:ident,
        condition: $prefix:literal,
        invalid: $invalid:literal
        $(, also: $also_field:ident)? $(,)?
    }) => {
        impl Referenced for $kind {
            const REF_FIELD: &'static str = $field;
            const REF_CONDITION: RefCondition = RefCondition {
                type_: concat!($prefix, "RefValidated"),
                valid: concat!($prefix, "RefValid"),
                not_found: concat!($prefix, "RefNotFound"),
                invalid: concat!($prefix, $invalid),
            };
            fn referenced_by(server: &MCPServer) -> Option<&str> {
                server.spec.$server_field.as_ref().map(|r| r.name.as_str())
            }
            $(fn also_referenced_by(server: &MCPServer) -> Option<&str> {
                server.spec.$also_field.as_ref().map(|r| r.name.as_str())
            })?
        }
    };
}

referenced!(MCPToolConfig { field: "spec.toolConfigRef", server_field: tool_config_ref, condition: "ToolConfig", invalid: "RefNotValid" });
referenced!(MCPTelemetryConfig {
    field: "spec.telemetryConfigRef",
    server_field: telemetry_config_ref,
    condition: "TelemetryConfig",
    invalid: "RefInvalid",
});
referenced!(MCPOIDCConfig { field: "spec.oidcConfigRef", server_field: oidc_config_ref, condition: "OIDCConfig", invalid: "RefNotValid" });
referenced!(MCPAuthzConfig {
    field: "spec.authzConfigRef",
    server_field: authz_config_ref,
    condition: "AuthzConfig",
    invalid: "RefNotValid"
});
referenced!(MCPWebhookConfig {
    field: "spec.webhookConfigRef",
    server_field: webhook_config_ref,
    condition: "WebhookConfig",
    invalid: "RefNotValid",
});
referenced!(MCPExternalAuthConfig {
    field: "spec.externalAuthConfigRef",
    server_field: external_auth_config_ref,
    condition: "ExternalAuthConfig",
    invalid: "RefNotValid",
    also: auth_server_ref,
});

/// An MCPServer condition about one of its references.
pub struct RefCondition {
    pub type_: &'static str,
    pub valid: &'static str,
    pub not_found: &'static str,
    pub invalid: &'static str,
}

/// The condition types of every reference condition (a server that drops a reference
/// drops its condition).
pub const REF_CONDITION_TYPES: &[&str] = &[
    <crate::kinds::toolconfig::MCPToolConfig as Referenced>::REF_CONDITION.type_,
    <crate::kinds::telemetry::MCPTelemetryConfig as Referenced>::REF_CONDITION.type_,
    <crate::kinds::oidc::MCPOIDCConfig as Referenced>::REF_CONDITION.type_,
    <crate::kinds::authz::MCPAuthzConfig as Referenced>::REF_CONDITION.type_,
    <crate::kinds::webhookconfig::MCPWebhookConfig as Referenced>::REF_CONDITION.type_,
    <crate::kinds::externalauth::MCPExternalAuthConfig as Referenced>::REF_CONDITION.type_,
    super::authserver::REF_CONDITION,
];

/// What an MCPServer's references came to: a condition each, and why any failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    /// Each reference's condition.
    pub conditions: Vec<ConditionReport>,
    /// Why the references that could not be resolved were not.
    pub problems: Vec<Problem>,
}

/// `server`'s configuration of kind K from the cache: the spec when referenced, found
/// and valid; None without a reference, or with one that cannot be resolved. Either
/// way a referenced object adds its condition to `out`, and a failed one why (the
/// message the user reads).
pub fn resolve<K: Referenced>(server: &MCPServer, configs: &Store<K>, out: &mut References) -> Option<K::Spec> {
    let name = K::referenced_by(server)?;
    let ns = server.namespace().unwrap_or_default();
    let (field, kind, condition) = (K::REF_FIELD, K::kind(&()), K::REF_CONDITION);
    let (reason, problem) = match configs.get(&ObjectRef::new(name).within(&ns)) {
        None => (
            condition.not_found,
            Problem::at(field, format!("{kind} {name} not found in namespace {ns}; the proxy is stopped until it exists")),
        ),
        Some(config) => match config.problem() {
            Some(problem) => (condition.invalid, Problem::at(field, format!("{kind} {name} is invalid ({problem}); the proxy is stopped"))),
            None => {
                out.conditions.push(ConditionReport::new(condition.type_, true, condition.valid, format!("{kind} {name} is valid")));
                return Some(config.spec().clone());
            }
        },
    };
    out.conditions.push(ConditionReport::new(condition.type_, false, reason, problem.to_string()));
    out.problems.push(problem);
    None
}

/// The servers in the cache that reference `config`.
fn referencing<K: Referenced>(servers: &[Arc<MCPServer>], config: &K) -> Vec<ObjectRef<MCPServer>> {
    let (ns, name) = (config.namespace(), config.name_any());
    servers
        .iter()
        .filter(|s| s.namespace() == ns && [K::referenced_by(s), K::also_referenced_by(s)].contains(&Some(name.as_str())))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The mapper for the MCPServer controller: a changed K to the servers in the cache
/// that reference it.
pub fn referrers<K: Referenced>(servers: Store<MCPServer>) -> impl Fn(Arc<K>) -> Vec<ObjectRef<MCPServer>> + Send + Sync + 'static {
    move |config| referencing(&servers.state(), config.as_ref())
}
