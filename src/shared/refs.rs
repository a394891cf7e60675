//! References to Secrets and ConfigMaps, as the API's kinds write them, and how the
//! proxy reads what they name (never the operator).

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, Volume, VolumeMount};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 subdomain: the name of a Secret, ConfigMap or ServiceAccount. Names
/// become references, paths and strings for the runner, so anything else (a `/`, a
/// `,`, `..`) is refused by the API server before it reaches the operator.
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label: a volume name.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A key of a Secret or ConfigMap.
pub const CONFIG_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// An absolute path, without the ':' that separates the runner's `host:container`.
pub const ABSOLUTE_PATH: &str = r"^/[^:]*$";
/// An environment variable name the runner can pass on.
pub const ENV_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// A key of a Secret in this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// An environment variable read from a Secret's key (the operator never reads it).
pub fn secret_env(name: impl Into<String>, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.name.clone(), key: secret.key.clone(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-map-type" = "atomic"))]
    pub config_map_ref: Option<CaBundleConfigMapRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CaBundleConfigMapRef {
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
