//! MCPWebhookConfig: HTTP webhooks the proxy calls on every MCP request, to change it
//! (mutating) or to accept or refuse it (validating). An MCPServer names one with
//! `spec.webhookConfigRef` (same namespace). The webhooks go into the RunConfig and
//! the request chain; their HMAC keys and TLS material are Secrets mounted in the
//! proxy (the operator never reads them). A missing or invalid one stops the proxy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::{configkind::ConfigStatus, refs::SecretKeyRef};

/// Webhooks for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1alpha1",
    kind = "MCPWebhookConfig",
    plural = "mcpwebhookconfigs",
    singular = "mcpwebhookconfig",
    shortname = "mwc",
    category = "toolhive",
    namespaced,
    status = "MCPWebhookConfigStatus",
    doc = "MCPWebhookConfig lists the webhooks the proxies of the MCPServers that reference it (spec.webhookConfigRef, same namespace) call.",
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.validating) ? size(self.validating) : 0) + (has(self.mutating) ? size(self.mutating) : 0) > 0",
    "message": "list at least one validating or mutating webhook",
}]))]
pub struct MCPWebhookConfigSpec {
    /// Called to accept or refuse each request, after the mutating ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validating: Vec<Webhook>,
    /// Called to change each request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutating: Vec<Webhook>,
}

pub type MCPWebhookConfigStatus = ConfigStatus;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// https, or http with `tlsConfig.insecureSkipVerify` (development only).
    #[schemars(url)]
    pub url: String,
    /// How long to wait for an answer, 1s to 30s (a Go duration: `5s`, `1m`); 10s when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// What a call that fails does to the request: `fail` refuses it, `ignore` lets it through.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<WebhookTls>,
    /// The key that signs each call (HMAC), from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTls {
    /// The CA the webhook's certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A client certificate and its key, for mutual TLS (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_secret_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpwebhookconfigs.yaml";
/// Where the webhooks' Secrets are mounted in the proxy.
const MOUNT_DIR: &str = "/etc/toolhive/webhooks";
const TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(30);

pub fn crd() -> CustomResourceDefinition {
    // v1alpha1 only, as ToolHive serves this kind (no v1beta1 yet).
    let value = serde_json::to_value(MCPWebhookConfig::crd()).expect("crd serializes");
    serde_json::from_value(crate::shared::crd::conditions_by_type(value)).expect("crd deserializes")
}

/// Which list a webhook is in.
#[derive(Clone, Copy)]
enum Kind {
    Validating,
    Mutating,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Validating => "validating",
            Kind::Mutating => "mutating",
        }
    }
}

impl Webhook {
    /// What is wrong with it (at `path`), if anything.
    fn problem(&self, path: &str) -> Option<String> {
        let insecure = self.tls_config.as_ref().and_then(|t| t.insecure_skip_verify).unwrap_or(false);
        match url::Url::parse(&self.url) {
            Err(e) => return Some(format!("{path}.url: {:?} is not a URL ({e})", self.url)),
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && insecure) => {}
            Ok(_) => return Some(format!("{path}.url: use https (http only with tlsConfig.insecureSkipVerify, for development)")),
        }
        if let Some(timeout) = &self.timeout {
            match timeout.parse::<kube::core::Duration>() {
                Err(e) => return Some(format!("{path}.timeout: {timeout:?} is not a duration ({e})")),
                Ok(d) if d.is_negative() || !TIMEOUT_RANGE.contains(&std::time::Duration::from(d)) => {
                    return Some(format!("{path}.timeout: {timeout} is outside 1s to 30s"));
                }
                Ok(_) => {}
            }
        }
        let tls = self.tls_config.as_ref()?;
        (tls.client_cert_secret_ref.is_some() != tls.client_key_secret_ref.is_some())
            .then(|| format!("{path}.tlsConfig: clientCertSecretRef and clientKeySecretRef go together (mutual TLS)"))
    }

    /// Each Secret this webhook reads, with what it is for and the file it becomes.
    fn secrets(&self) -> Vec<(&SecretKeyRef, &'static str, &'static str)> {
        let tls = self.tls_config.as_ref();
        [
            (self.hmac_secret_ref.as_ref(), "hmac", "hmac"),
            (tls.and_then(|t| t.ca_secret_ref.as_ref()), "tls_ca", "ca.crt"),
            (tls.and_then(|t| t.client_cert_secret_ref.as_ref()), "tls_client_cert", "tls.crt"),
            (tls.and_then(|t| t.client_key_secret_ref.as_ref()), "tls_client_key", "tls.key"),
        ]
        .into_iter()
        .filter_map(|(secret, purpose, file)| Some((secret?, purpose, file)))
        .collect()
    }
}

impl MCPWebhookConfigSpec {
    pub fn problem(&self) -> Option<String> {
        if self.validating.is_empty() && self.mutating.is_empty() {
            return Some("spec: list at least one validating or mutating webhook".into());
        }
        let lists = [(Kind::Validating, &self.validating), (Kind::Mutating, &self.mutating)];
        lists
            .into_iter()
            .find_map(|(kind, hooks)| hooks.iter().enumerate().find_map(|(i, hook)| hook.problem(&format!("spec.{}[{i}]", kind.as_str()))))
    }

    fn each(&self) -> impl Iterator<Item = (Kind, &Webhook)> {
        self.validating.iter().map(|w| (Kind::Validating, w)).chain(self.mutating.iter().map(|w| (Kind::Mutating, w)))
    }
}

crate::shared::configkind::config_kind!(MCPWebhookConfig { spec: MCPWebhookConfigSpec });

/// FNV-1a (32 bit) of the text the reference hashes a string as, in hex: the same
/// paths and volume names for the same webhook and Secret.
fn short_hash(text: &str) -> String {
    let hash = format!("(string){text}").bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{hash:x}")
}

/// The name a webhook's Secret goes by in the proxy: unique per list, webhook,
/// purpose and Secret key, upper-case letters, digits and `_` only.
fn secret_identifier(kind: Kind, webhook: &str, purpose: &str, secret: &SecretKeyRef) -> String {
    let text = format!("WEBHOOK_{}_{webhook}_{purpose}_{}", kind.as_str(), short_hash(&format!("{}/{}", secret.name, secret.key)));
    text.to_uppercase().chars().map(|c| if c.is_ascii_uppercase() || c.is_ascii_digit() { c } else { '_' }).collect()
}

fn mount_path(identifier: &str, file: &str) -> String {
    format!("{MOUNT_DIR}/{}/{file}", identifier.to_lowercase())
}

/// A webhook as the proxy runner reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerWebhook {
    pub name: String,
    pub url: String,
    /// Nanoseconds (0: the runner's default).
    pub timeout: u128,
    pub failure_policy: FailurePolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<RunnerTls>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hmac_secret_ref: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerTls {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_bundle_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_cert_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_key_path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

fn runner_webhook(kind: Kind, webhook: &Webhook) -> RunnerWebhook {
    let file = |secret: Option<&SecretKeyRef>, purpose: &str, file: &str| {
        secret.map(|s| mount_path(&secret_identifier(kind, &webhook.name, purpose, s), file)).unwrap_or_default()
    };
    let timeout = webhook.timeout.as_deref().and_then(|t| t.parse::<kube::core::Duration>().ok());
    RunnerWebhook {
        name: webhook.name.clone(),
        url: webhook.url.clone(),
        timeout: timeout.map(|d| std::time::Duration::from(d).as_nanos()).unwrap_or(0),
        failure_policy: webhook.failure_policy,
        tls_config: webhook.tls_config.as_ref().map(|tls| RunnerTls {
            ca_bundle_path: file(tls.ca_secret_ref.as_ref(), "tls_ca", "ca.crt"),
            client_cert_path: file(tls.client_cert_secret_ref.as_ref(), "tls_client_cert", "tls.crt"),
            client_key_path: file(tls.client_key_secret_ref.as_ref(), "tls_client_key", "tls.key"),
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        }),
        hmac_secret_ref: file(webhook.hmac_secret_ref.as_ref(), "hmac", "hmac"),
    }
}

/// The validating and mutating webhooks, as the RunConfig lists them.
pub fn runner_webhooks(spec: &MCPWebhookConfigSpec) -> (Vec<RunnerWebhook>, Vec<RunnerWebhook>) {
    let list = |kind, webhooks: &[Webhook]| webhooks.iter().map(|w| runner_webhook(kind, w)).collect();
    (list(Kind::Validating, &spec.validating), list(Kind::Mutating, &spec.mutating))
}

/// The proxy's Secret volumes and mounts for the webhooks, one per Secret key used.
pub fn secret_volumes(spec: &MCPWebhookConfigSpec) -> Vec<(Volume, VolumeMount)> {
    let mut by_identifier = BTreeMap::new();
    for (kind, webhook) in spec.each() {
        for (secret, purpose, file) in webhook.secrets() {
            by_identifier.insert(secret_identifier(kind, &webhook.name, purpose, secret), (secret, file));
        }
    }
    by_identifier
        .into_iter()
        .map(|(identifier, (secret, file))| {
            let name = format!("whsec-{}", short_hash(&identifier));
            let volume = Volume {
                name: name.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.name.clone()),
                    items: Some(vec![KeyToPath { key: secret.key.clone(), path: file.to_string(), ..Default::default() }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            // The file itself (subPath), at the path the RunConfig gives the runner.
            let mount = VolumeMount {
                name,
                mount_path: mount_path(&identifier, file),
                sub_path: Some(file.to_string()),
                read_only: Some(true),
                ..Default::default()
            };
            (volume, mount)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> MCPWebhookConfigSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_hash_is_the_references() {
        // The reference's digest of the string "creds/key" (computed with its code).
        assert_eq!(short_hash("creds/key"), "3960c826");
    }

    #[test]
    fn webhooks_are_checked_for_what_the_proxy_would_trip_on() {
        let ok = spec(json!({"validating": [{"name": "policy", "url": "https://policy.example.com/check", "timeout": "5s"}]}));
        assert_eq!(ok.problem(), None);
        let plain = spec(json!({"mutating": [{"name": "m", "url": "http://m.svc/x"}]}));
        assert!(plain.problem().unwrap().starts_with("spec.mutating[0].url: use https"));
        let dev = spec(json!({"mutating": [{"name": "m", "url": "http://m.svc/x", "tlsConfig": {"insecureSkipVerify": true}}]}));
        assert_eq!(dev.problem(), None);
        let slow = spec(json!({"validating": [{"name": "a", "url": "https://a"}, {"name": "b", "url": "https://b", "timeout": "1m"}]}));
        assert!(slow.problem().unwrap().starts_with("spec.validating[1].timeout: 1m is outside"), "{:?}", slow.problem());
        let half = spec(
            json!({"validating": [{"name": "a", "url": "https://a", "tlsConfig": {"clientCertSecretRef": {"name": "c", "key": "crt"}}}]}),
        );
        assert!(half.problem().unwrap().contains("go together"));
        assert!(spec(json!({})).problem().is_some());
    }

    #[test]
    fn secrets_are_mounted_and_the_runner_is_given_their_paths() {
        let s = spec(json!({"validating": [{"name": "policy-check", "url": "https://p", "timeout": "2s", "failurePolicy": "ignore",
            "hmacSecretRef": {"name": "hooks", "key": "hmac"},
            "tlsConfig": {"caSecretRef": {"name": "hooks", "key": "ca"}}}]}));
        let (validating, mutating) = runner_webhooks(&s);
        assert!(mutating.is_empty());
        let rc = serde_json::to_value(&validating[0]).unwrap();
        assert_eq!((rc["timeout"].as_u64(), rc["failure_policy"].as_str()), (Some(2_000_000_000), Some("ignore")));
        let hmac = rc["hmac_secret_ref"].as_str().unwrap();
        assert!(hmac.starts_with("/etc/toolhive/webhooks/webhook_validating_policy_check_hmac_") && hmac.ends_with("/hmac"), "{hmac}");
        let volumes = secret_volumes(&s);
        assert_eq!(volumes.len(), 2);
        let (volume, mount) = volumes.iter().find(|(_, m)| m.mount_path == hmac).expect("the HMAC key mounted where the runner reads it");
        assert_eq!(mount.sub_path.as_deref(), Some("hmac"));
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!((secret.secret_name.as_deref(), secret.items.as_ref().unwrap()[0].key.as_str()), (Some("hooks"), "hmac"));
        assert!(volumes.iter().all(|(v, _)| v.name.starts_with("whsec-")));
    }
}
