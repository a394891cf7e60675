//! What the configuration kinds (MCPToolConfig, MCPTelemetryConfig, MCPOIDCConfig,
//! MCPAuthzConfig, MCPWebhookConfig, MCPExternalAuthConfig) share: one status
//! (Valid, observedGeneration, configHash) computed from the spec alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::condition;

/// The status every configuration kind keeps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A digest of the spec: changes when the configuration does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
}

pub const CONDITION_VALID: &str = "Valid";

/// A configuration kind: a spec that is valid or not, and the status that says so.
pub trait ConfigKind:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + Serialize
    + 'static
{
    type Spec: Serialize + Clone;
    /// The reasons of the Valid condition, true and false (the reference's, per kind).
    const VALID_REASON: &'static str = "ValidationSucceeded";
    const INVALID_REASON: &'static str = "ValidationFailed";
    fn spec(&self) -> &Self::Spec;
    /// What is wrong with the spec (the user's message), if anything.
    fn problem(&self) -> Option<String>;
    fn status(&self) -> Option<&ConfigStatus>;
}

/// Implements [`ConfigKind`] for a kind whose spec has `problem()`; `reasons`
/// overrides the Valid condition's reasons.
macro_rules! config_kind {
    ($kind:ty { spec: $spec:ty $(, reasons: ($valid:literal, $failed:literal))? $(,)? }) => {
        impl $crate::shared::configkind::ConfigKind for $kind {
            type Spec = $spec;
            $(const VALID_REASON: &'static str = $valid;
            const INVALID_REASON: &'static str = $failed;)?
            fn spec(&self) -> &$spec {
                &self.spec
            }
            fn problem(&self) -> Option<String> {
                self.spec.problem()
            }
            fn status(&self) -> Option<&$crate::shared::configkind::ConfigStatus> {
                self.status.as_ref()
            }
        }
    };
}
pub(crate) use config_kind;

/// The status for this configuration; an unchanged one yields an identical status.
pub fn desired_status<K: ConfigKind>(config: &K, now: Time) -> ConfigStatus {
    let previous = config.status().cloned().unwrap_or_default();
    let generation = config.meta().generation;
    let kind = K::kind(&());
    let (status, reason, message) = match config.problem() {
        None => ("True", K::VALID_REASON, format!("the {kind} is valid")),
        Some(problem) => ("False", K::INVALID_REASON, problem),
    };
    ConfigStatus {
        conditions: vec![condition(&previous.conditions, CONDITION_VALID, status, reason, &message, generation, &now)],
        observed_generation: generation,
        config_hash: super::meta::hash_of(config.spec()),
    }
}
