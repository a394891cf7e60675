//! What the configuration kinds an MCPServer references by name (MCPToolConfig,
//! MCPTelemetryConfig) have in common: the same status (Valid, observedGeneration,
//! configHash), kept by one status controller per kind and scope; resolution from
//! the MCPServer controller's cache, same namespace only; and the mapping from a
//! changed configuration to the servers that name it (found in the server cache,
//! never by listing).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::api::MCPServer;
pub use crate::api::SecretKeyRef;
use crate::error::Error;
use crate::runtime::cache::Cache;
use crate::status::condition;

/// The status every shared configuration kind keeps.
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

/// A configuration kind an MCPServer names in one of its `spec.*Ref` fields.
pub trait SharedConfig: crate::runtime::cache::Cached + Serialize {
    type Spec: Serialize + Clone;
    /// The reasons of the Valid condition, true and false (the reference's, per kind).
    const VALID_REASON: &'static str = "ValidationSucceeded";
    const INVALID_REASON: &'static str = "ValidationFailed";
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
    fn spec(&self) -> &Self::Spec;
    /// What is wrong with the spec (the user's message), if anything.
    fn problem(&self) -> Option<String>;
    fn status(&self) -> Option<&ConfigStatus>;
}

/// Implements [`SharedConfig`] for a kind whose spec has `problem()`: the MCPServer
/// field that names it (as users write it, and the Rust field holding a `name`), and
/// its condition on the MCPServer: `<prefix>RefValidated`, reasons `<prefix>RefValid`,
/// `<prefix>RefNotFound` and `<prefix><invalid>`; `reasons` overrides the kind's own
/// Valid condition reasons.
macro_rules! shared_config {
    ($kind:ty {
        spec: $spec:ty,
        field: $field:literal,
        server_field: $server_field:ident,
        condition: $prefix:literal,
        invalid: $invalid:literal
        $(, reasons: ($valid:literal, $failed:literal))?
        $(, also: $also_field:ident)? $(,)?
    }) => {
        impl $crate::sharedconfig::SharedConfig for $kind {
            type Spec = $spec;
            $(const VALID_REASON: &'static str = $valid;
            const INVALID_REASON: &'static str = $failed;)?
            const REF_FIELD: &'static str = $field;
            const REF_CONDITION: $crate::sharedconfig::RefCondition = $crate::sharedconfig::RefCondition {
                type_: concat!($prefix, "RefValidated"),
                valid: concat!($prefix, "RefValid"),
                not_found: concat!($prefix, "RefNotFound"),
                invalid: concat!($prefix, $invalid),
            };
            fn referenced_by(server: &$crate::api::MCPServer) -> Option<&str> {
                server.spec.$server_field.as_ref().map(|r| r.name.as_str())
            }
            $(fn also_referenced_by(server: &$crate::api::MCPServer) -> Option<&str> {
                server.spec.$also_field.as_ref().map(|r| r.name.as_str())
            })?
            fn spec(&self) -> &$spec {
                &self.spec
            }
            fn problem(&self) -> Option<String> {
                self.spec.problem()
            }
            fn status(&self) -> Option<&$crate::sharedconfig::ConfigStatus> {
                self.status.as_ref()
            }
        }
    };
}
pub(crate) use shared_config;

/// An environment variable read from a Secret's key (the operator never reads it).
pub fn secret_env(name: impl Into<String>, secret: &SecretKeyRef) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.name.clone(), key: secret.key.clone(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status for this configuration; an unchanged one yields an identical status.
pub fn desired_status<K: SharedConfig>(config: &K, now: Time) -> ConfigStatus {
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
        config_hash: crate::resources::hash_of(config.spec()),
    }
}

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
    <crate::toolconfig::MCPToolConfig as SharedConfig>::REF_CONDITION.type_,
    <crate::telemetry::MCPTelemetryConfig as SharedConfig>::REF_CONDITION.type_,
    <crate::oidc::MCPOIDCConfig as SharedConfig>::REF_CONDITION.type_,
    <crate::authz::MCPAuthzConfig as SharedConfig>::REF_CONDITION.type_,
    <crate::webhookconfig::MCPWebhookConfig as SharedConfig>::REF_CONDITION.type_,
    <crate::externalauth::MCPExternalAuthConfig as SharedConfig>::REF_CONDITION.type_,
    crate::authserver::REF_CONDITION,
];

/// What an MCPServer's references came to: a condition each, and why any failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    /// (type, status, reason, message) of each reference's condition.
    pub conditions: Vec<(&'static str, &'static str, &'static str, String)>,
    /// The messages of the references that could not be resolved.
    pub problems: Vec<String>,
}

/// `server`'s configuration of kind K from the cache: the spec when referenced, found
/// and valid; None without a reference, or with one that cannot be resolved. Either
/// way a referenced object adds its condition to `out`, and a failed one why (the
/// message the user reads).
pub fn resolve<K: SharedConfig>(server: &MCPServer, configs: &Store<K>, out: &mut References) -> Option<K::Spec> {
    let name = K::referenced_by(server)?;
    let ns = server.namespace().unwrap_or_default();
    let (field, kind, condition) = (K::REF_FIELD, K::kind(&()), K::REF_CONDITION);
    let (reason, problem) = match configs.get(&ObjectRef::new(name).within(&ns)) {
        None => (condition.not_found, format!("{field}: {kind} {name} not found in namespace {ns}; the proxy is stopped until it exists")),
        Some(config) => match config.problem() {
            Some(problem) => (condition.invalid, format!("{field}: {kind} {name} is invalid ({problem}); the proxy is stopped")),
            None => {
                out.conditions.push((condition.type_, "True", condition.valid, format!("{kind} {name} is valid")));
                return Some(config.spec().clone());
            }
        },
    };
    out.conditions.push((condition.type_, "False", reason, problem.clone()));
    out.problems.push(problem);
    None
}

/// The servers in the cache that reference `config`.
fn referencing<K: SharedConfig>(servers: &[Arc<MCPServer>], config: &K) -> Vec<ObjectRef<MCPServer>> {
    let (ns, name) = (config.namespace(), config.name_any());
    servers
        .iter()
        .filter(|s| s.namespace() == ns && [K::referenced_by(s), K::also_referenced_by(s)].contains(&Some(name.as_str())))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The mapper for the MCPServer controller: a changed K to the servers in the cache
/// that reference it.
pub fn referrers<K: SharedConfig>(servers: Store<MCPServer>) -> impl Fn(Arc<K>) -> Vec<ObjectRef<MCPServer>> + Send + Sync + 'static {
    move |config| referencing(&servers.state(), config.as_ref())
}

/// Keeps the status of every K in `configs` (one scope's cache) current until
/// `shutdown` resolves.
pub async fn run<K: SharedConfig>(
    client: Client,
    configs: Cache<K>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let results = Controller::for_shared_stream(configs.everything_then_changes(), configs.store().clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, crate::runtime::status::retry_status_write, Arc::new(client));
    crate::runtime::status::drive(K::kind(&()).as_ref(), results).await;
}

async fn reconcile<K: SharedConfig>(config: Arc<K>, client: Arc<Client>) -> Result<Action, Error> {
    let desired = desired_status(config.as_ref(), Time(jiff::Timestamp::now()));
    if config.status() != Some(&desired) {
        let (ns, name) = (config.namespace().unwrap_or_default(), config.name_any());
        crate::runtime::status::apply_status::<K>(&client, &ns, &name, &desired).await?;
        info!(kind = %K::kind(&()), namespace = %ns, name = %name, hash = %desired.config_hash, "status written");
    }
    Ok(Action::await_change())
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigMapKeyRef {
    #[serde(default)]
    pub name: String,
    /// The key holding the bundle; `ca.crt` when empty.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Where a kind mounts a CA bundle ConfigMap in the proxy: `<dir>/<configmap>/<key>`,
/// in a volume named `<volume_prefix><configmap>`.
pub struct CaBundleMount {
    pub dir: &'static str,
    pub volume_prefix: &'static str,
}

/// The key a CA bundle is read from when none is given.
const CA_BUNDLE_DEFAULT_KEY: &str = "ca.crt";

impl CaBundleMount {
    fn config_map<'a>(&self, bundle: &'a CaBundleRef) -> Option<(&'a str, &'a str)> {
        let r = bundle.config_map_ref.as_ref()?;
        Some((&r.name, if r.key.is_empty() { CA_BUNDLE_DEFAULT_KEY } else { &r.key }))
    }

    /// What is wrong with `bundle` (at `path`), if anything.
    pub fn problem(&self, bundle: &CaBundleRef, path: &str) -> Option<String> {
        let limit = 63 - self.volume_prefix.len();
        match &bundle.config_map_ref {
            None => Some(format!("{path}.configMapRef: name the ConfigMap")),
            Some(r) if r.name.is_empty() => Some(format!("{path}.configMapRef.name: name the ConfigMap")),
            Some(r) if r.name.len() > limit => Some(format!("{path}.configMapRef.name: at most {limit} characters (it names a volume)")),
            Some(_) => None,
        }
    }

    /// The bundle's path in the proxy.
    pub fn file(&self, bundle: &CaBundleRef) -> Option<String> {
        let (name, key) = self.config_map(bundle)?;
        Some(format!("{}/{name}/{key}", self.dir))
    }

    /// The volume and mount that put the bundle at [`Self::file`].
    pub fn volume(&self, bundle: &CaBundleRef) -> Option<(Volume, VolumeMount)> {
        let (name, key) = self.config_map(bundle)?;
        let volume_name = format!("{}{name}", self.volume_prefix);
        let volume = Volume {
            name: volume_name.clone(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.to_string(),
                items: Some(vec![KeyToPath { key: key.to_string(), path: key.to_string(), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mount =
            VolumeMount { name: volume_name, mount_path: format!("{}/{name}", self.dir), read_only: Some(true), ..Default::default() };
        Some((volume, mount))
    }
}
