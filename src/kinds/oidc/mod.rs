//! MCPOIDCConfig: who may call an MCP server. The proxy checks every request's bearer
//! token against an OIDC provider: the cluster's own service account tokens
//! (`kubernetesServiceAccount`) or any provider (`inline`). An MCPServer names one with
//! `spec.oidcConfigRef` (same namespace), adding the audience its tokens must carry.
//! The resolved configuration goes into the RunConfig's `oidc_config` and the `auth`
//! step; a client secret reaches the proxy by `secretKeyRef`, a CA bundle as a mounted
//! ConfigMap. A missing or invalid one stops the proxy: a server that asked for
//! authentication never serves without it.

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::refs::DNS_SUBDOMAIN;
use crate::shared::{
    configkind::ConfigStatus,
    refs::{CaBundleMount, CaBundleRef, SecretKeyRef},
};

/// Token validation for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPOIDCConfig",
    plural = "mcpoidcconfigs",
    singular = "mcpoidcconfig",
    shortname = "mcpoidc",
    category = "toolhive",
    namespaced,
    status = "MCPOIDCConfigStatus",
    doc = "MCPOIDCConfig says how the proxies of the MCPServers that reference it (spec.oidcConfigRef, same namespace) authenticate requests.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'kubernetesServiceAccount' ? has(self.kubernetesServiceAccount) : !has(self.kubernetesServiceAccount)",
     "message": "kubernetesServiceAccount goes with type kubernetesServiceAccount, and only with it"},
    {"rule": "self.type == 'inline' ? has(self.inline) : !has(self.inline)",
     "message": "inline goes with type inline, and only with it"},
]))]
pub struct MCPOIDCConfigSpec {
    /// Which provider: the cluster's service account tokens, or one configured inline.
    #[serde(rename = "type")]
    pub source: OidcSource,
    /// With `type: kubernetesServiceAccount` (and only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_service_account: Option<ServiceAccountTokens>,
    /// With `type: inline` (and only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineProvider>,
}

pub type MCPOIDCConfigStatus = ConfigStatus;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OidcSource {
    #[default]
    #[serde(rename = "kubernetesServiceAccount")]
    KubernetesServiceAccount,
    #[serde(rename = "inline")]
    Inline,
}

/// Tokens the cluster issues to service accounts, checked against its own keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.serviceAccount) && !has(self.__namespace__)",
    "message": "serviceAccount and namespace are not enforced by this operator release (any service account's token with the audience is accepted); remove them",
}]))]
pub struct ServiceAccountTokens {
    #[serde(default = "cluster_issuer")]
    pub issuer: String,
    /// Where the keys are; discovered from the issuer when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub introspection_url: String,
    /// Reach the keys with the proxy's own service account token and the cluster's CA
    /// (true unless set false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cluster_auth: Option<bool>,
    /// Not enforced by this release (the proxy accepts any service account's token with
    /// the audience): refused rather than accepted and ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// Not enforced by this release: refused, as `serviceAccount`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

fn cluster_issuer() -> String {
    "https://kubernetes.default.svc".into()
}

/// Any OIDC provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineProvider {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub introspection_url: String,
    /// For token introspection.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// The client secret, read by the proxy from this Secret in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// A ConfigMap with the CA bundle the provider's certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
    /// A file in the proxy whose content is sent as a bearer token to fetch the keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_auth_token_path: String,
    #[serde(default, rename = "jwksAllowPrivateIP")]
    #[schemars(default)]
    pub jwks_allow_private_ip: bool,
    #[serde(default, rename = "protectedResourceAllowPrivateIP")]
    #[schemars(default)]
    pub protected_resource_allow_private_ip: bool,
    /// Plain HTTP to the provider: for development only.
    #[serde(default, rename = "insecureAllowHTTP")]
    #[schemars(default)]
    pub insecure_allow_http: bool,
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpoidcconfigs.yaml";
const CA_BUNDLE: CaBundleMount = CaBundleMount { dir: "/config/certs", volume_prefix: "oidc-ca-bundle-" };
/// Where every pod finds its service account's CA and token.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPOIDCConfig::crd()).expect("crd serializes"))
}

/// Whether `url` is an http(s) URL with a host, and plain http only when allowed.
fn url_problem(path: &str, url: &str, insecure_allowed: bool) -> Option<String> {
    if url.is_empty() {
        return None;
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("{path}: {url:?} is not a URL ({e})")),
    };
    match parsed.scheme() {
        _ if parsed.host_str().is_none_or(str::is_empty) => Some(format!("{path}: {url:?} has no host")),
        "https" => None,
        "http" if insecure_allowed => None,
        "http" => Some(format!("{path}: {url:?} is plain HTTP; use https (insecureAllowHTTP is for development only)")),
        other => Some(format!("{path}: scheme {other:?} in {url:?}; use https")),
    }
}

impl MCPOIDCConfigSpec {
    /// What is wrong with it, if anything (a stored object the schema's rules did not
    /// see, and what they cannot check).
    pub fn problem(&self) -> Option<String> {
        match (self.source, &self.kubernetes_service_account, &self.inline) {
            (OidcSource::KubernetesServiceAccount, Some(sa), None) => {
                (!sa.service_account.is_empty() || !sa.namespace.is_empty()).then(|| {
                    "spec.kubernetesServiceAccount: serviceAccount and namespace are not enforced by this operator release; remove them"
                        .to_string()
                })
            }
            (OidcSource::Inline, None, Some(inline)) => {
                let insecure = inline.insecure_allow_http;
                if inline.issuer.is_empty() {
                    return Some("spec.inline.issuer: required".into());
                }
                url_problem("spec.inline.issuer", &inline.issuer, insecure)
                    .or_else(|| url_problem("spec.inline.jwksUrl", &inline.jwks_url, insecure))
                    .or_else(|| inline.ca_bundle_ref.as_ref().and_then(|b| CA_BUNDLE.problem(b, "spec.inline.caBundleRef")))
            }
            _ => Some("spec: set exactly the section its type names (kubernetesServiceAccount or inline)".into()),
        }
    }
}

crate::shared::configkind::config_kind!(MCPOIDCConfig { spec: MCPOIDCConfigSpec, reasons: ("ConfigValid", "ConfigInvalid") });

/// A reference to a shared MCPOIDCConfig with per-server overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcConfigRef {
    /// Name of the MCPOIDCConfig in this namespace (a name, never a path to another
    /// namespace).
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
    /// The audience a token must carry to reach this server.
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Scopes advertised for this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Protected resource URL advertised to clients.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_url: String,
}

/// The token validation the proxy runner reads (its field names, every field written).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokenValidation {
    pub issuer: String,
    pub audience: String,
    #[serde(rename = "JWKSURL")]
    pub jwks_url: String,
    #[serde(rename = "ClientID")]
    pub client_id: String,
    /// Always empty here: the secret reaches the proxy as TOOLHIVE_OIDC_CLIENT_SECRET.
    pub client_secret: String,
    #[serde(rename = "CACertPath")]
    pub ca_cert_path: String,
    pub auth_token_file: String,
    #[serde(rename = "AllowPrivateIP")]
    pub allow_private_ip: bool,
    #[serde(rename = "InsecureAllowHTTP")]
    pub insecure_allow_http: bool,
    #[serde(rename = "IntrospectionURL")]
    pub introspection_url: String,
    #[serde(rename = "ResourceURL")]
    pub resource_url: String,
    pub scopes: Option<Vec<String>>,
}

/// The token validation for a proxy whose reference is `reference`, with the
/// resolved `spec`: the provider's settings, and the reference's audience, scopes and
/// resource URL (`service_url`, the proxy Service's address, unless it gives one).
pub fn token_validation(reference: &OidcConfigRef, service_url: &str, spec: &MCPOIDCConfigSpec) -> Option<TokenValidation> {
    let resource_url = if reference.resource_url.is_empty() { service_url.to_string() } else { reference.resource_url.clone() };
    let mut out = TokenValidation {
        issuer: String::new(),
        audience: reference.audience.clone(),
        jwks_url: String::new(),
        client_id: String::new(),
        client_secret: String::new(),
        ca_cert_path: String::new(),
        auth_token_file: String::new(),
        allow_private_ip: false,
        insecure_allow_http: false,
        introspection_url: String::new(),
        resource_url,
        scopes: (!reference.scopes.is_empty()).then(|| reference.scopes.clone()),
    };
    match spec.source {
        OidcSource::KubernetesServiceAccount => {
            let sa = spec.kubernetes_service_account.clone().unwrap_or_default();
            out.issuer = if sa.issuer.is_empty() { cluster_issuer() } else { sa.issuer };
            out.jwks_url = sa.jwks_url;
            out.introspection_url = sa.introspection_url;
            if sa.use_cluster_auth.unwrap_or(true) {
                out.ca_cert_path = format!("{SERVICE_ACCOUNT_DIR}/ca.crt");
                out.auth_token_file = format!("{SERVICE_ACCOUNT_DIR}/token");
                out.allow_private_ip = true;
            }
        }
        OidcSource::Inline => {
            let inline = spec.inline.as_ref()?;
            out.issuer = inline.issuer.clone();
            out.jwks_url = inline.jwks_url.clone();
            out.introspection_url = inline.introspection_url.clone();
            out.client_id = inline.client_id.clone();
            out.ca_cert_path = inline.ca_bundle_ref.as_ref().and_then(|b| CA_BUNDLE.file(b)).unwrap_or_default();
            out.auth_token_file = inline.jwks_auth_token_path.clone();
            out.allow_private_ip = inline.jwks_allow_private_ip;
            out.insecure_allow_http = inline.insecure_allow_http;
        }
    }
    Some(out)
}

/// The proxy's environment: the client secret, by reference to its Secret.
pub fn proxy_env(spec: &MCPOIDCConfigSpec) -> Option<EnvVar> {
    let secret = spec.inline.as_ref()?.client_secret_ref.as_ref()?;
    Some(crate::shared::refs::secret_env("TOOLHIVE_OIDC_CLIENT_SECRET", secret))
}

/// The CA bundle's volume and mount in the proxy, when there is one.
pub fn ca_bundle_volume(spec: &MCPOIDCConfigSpec) -> Option<(Volume, VolumeMount)> {
    CA_BUNDLE.volume(spec.inline.as_ref()?.ca_bundle_ref.as_ref()?)
}

/// The cluster's signing keys, as a pod reaches them inside the cluster.
pub const CLUSTER_JWKS_URL: &str = "https://kubernetes.default.svc/openid/v1/jwks";

/// For a pod without an API token of its own (the vMCP): the cluster's CA from the
/// `kube-root-ca.crt` ConfigMap every namespace holds, where a token mount would put
/// it (`token_validation`'s `ca_cert_path` for cluster tokens).
pub fn cluster_ca_volume() -> (Volume, VolumeMount) {
    let name = "kube-root-ca";
    let volume = Volume {
        name: name.into(),
        config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
            name: "kube-root-ca.crt".into(),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    (volume, VolumeMount { name: name.into(), mount_path: SERVICE_ACCOUNT_DIR.into(), read_only: Some(true), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> MCPOIDCConfigSpec {
        serde_json::from_value(value).unwrap()
    }

    const SERVICE_URL: &str = "http://mcp-fetch-proxy.team-a.svc.cluster.local:8080";

    fn validation(reference: serde_json::Value, spec: &MCPOIDCConfigSpec) -> Option<TokenValidation> {
        token_validation(&serde_json::from_value(reference).unwrap(), SERVICE_URL, spec)
    }

    #[test]
    fn cluster_tokens_use_the_pods_own_account_to_reach_the_keys() {
        let cluster = spec(json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {}}));
        let v = validation(json!({"name": "o", "audience": "fetch"}), &cluster).unwrap();
        assert_eq!(v.issuer, "https://kubernetes.default.svc");
        assert_eq!(v.ca_cert_path, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
        assert_eq!((v.auth_token_file.as_str(), v.allow_private_ip), ("/var/run/secrets/kubernetes.io/serviceaccount/token", true));
        assert_eq!(v.resource_url, "http://mcp-fetch-proxy.team-a.svc.cluster.local:8080");
        let text = serde_json::to_value(&v).unwrap();
        assert_eq!((text["Audience"].as_str(), &text["Scopes"]), (Some("fetch"), &serde_json::Value::Null));
        let own = spec(json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {"useClusterAuth": false}}));
        let v = validation(json!({"name": "o", "audience": "a", "scopes": ["s"], "resourceUrl": "https://x"}), &own).unwrap();
        assert_eq!((v.ca_cert_path.as_str(), v.allow_private_ip, v.resource_url.as_str()), ("", false, "https://x"));
        assert_eq!(v.scopes, Some(vec!["s".to_string()]));
    }

    #[test]
    fn an_inline_provider_is_checked_and_its_secret_and_bundle_are_referenced() {
        let inline = spec(json!({"type": "inline", "inline": {"issuer": "https://idp.example.com", "clientId": "c",
            "clientSecretRef": {"name": "idp", "key": "secret"}, "caBundleRef": {"configMapRef": {"name": "idp-ca", "key": ""}}}}));
        assert_eq!(inline.problem(), None);
        let v = validation(json!({"name": "o", "audience": "a"}), &inline).unwrap();
        assert_eq!((v.client_id.as_str(), v.client_secret.as_str()), ("c", ""));
        assert_eq!(v.ca_cert_path, "/config/certs/idp-ca/ca.crt");
        let env = proxy_env(&inline).unwrap();
        let secret = env.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((env.name.as_str(), env.value, secret.name.as_str()), ("TOOLHIVE_OIDC_CLIENT_SECRET", None, "idp"));
        let (volume, mount) = ca_bundle_volume(&inline).unwrap();
        assert_eq!((volume.name.as_str(), mount.mount_path.as_str()), ("oidc-ca-bundle-idp-ca", "/config/certs/idp-ca"));

        let plain = spec(json!({"type": "inline", "inline": {"issuer": "http://idp"}}));
        assert!(plain.problem().unwrap().contains("plain HTTP"), "{:?}", plain.problem());
        let allowed = spec(json!({"type": "inline", "inline": {"issuer": "http://idp", "insecureAllowHTTP": true}}));
        assert_eq!(allowed.problem(), None);
        let bad_jwks = spec(json!({"type": "inline", "inline": {"issuer": "https://idp", "jwksUrl": "ftp://idp/keys"}}));
        assert!(bad_jwks.problem().unwrap().contains("spec.inline.jwksUrl"));
        let mismatched = spec(json!({"type": "inline", "kubernetesServiceAccount": {}}));
        assert!(mismatched.problem().unwrap().contains("exactly the section"));
        let unenforced = spec(json!({"type": "kubernetesServiceAccount", "kubernetesServiceAccount": {"serviceAccount": "ci"}}));
        assert!(unenforced.problem().unwrap().contains("not enforced"));
    }

    #[test]
    fn crd_is_the_references_shape_and_refuses_what_is_not_enforced() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mcpoidc"]));
        let v = &crd["spec"]["versions"][0];
        let columns: Vec<&str> = v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Source", "Valid", "Age"]);
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["type"]["enum"], json!(["kubernetesServiceAccount", "inline"]));
        assert_eq!(spec["properties"]["kubernetesServiceAccount"]["properties"]["issuer"]["default"], "https://kubernetes.default.svc");
        assert_eq!(spec["properties"]["inline"]["required"], json!(["issuer"]));
        assert_eq!(spec["x-kubernetes-validations"].as_array().unwrap().len(), 2);
    }
}
