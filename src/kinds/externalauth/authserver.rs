//! The embedded authorization server: ToolHive's proxy runner itself acts as the
//! OAuth 2.0 authorization server its MCP clients log in to, federating the login to
//! one upstream identity provider, and then validates the tokens it issued. Configured
//! by an MCPExternalAuthConfig of type `embeddedAuthServer`, named by an MCPServer's
//! `spec.authServerRef` (or `spec.externalAuthConfigRef`).
//!
//! This release carries out the form a single MCPServer needs: an issuer, signing and
//! HMAC keys from Secrets (mounted, never read by the operator), token lifespans, one
//! upstream provider (OIDC, or OAuth 2.0 with explicit endpoints), in-memory storage.
//! Any other field (delegate clients, trusted issuers, CIMD, Redis storage, dynamic
//! client registration upstream, userinfo mappings) makes the configuration invalid
//! with its name, so a server that asked for it never runs without it.

use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::shared::refs::SecretKeyRef;

const KEYS_DIR: &str = "/etc/toolhive/authserver/keys";
const HMAC_DIR: &str = "/etc/toolhive/authserver/hmac";
/// The group the proxy pod's volumes belong to when it mounts the server's keys (the
/// reference's, too).
pub const KEYS_GROUP: i64 = 1000;
/// The scopes the proxy advertises when the server's oidcConfigRef names none.
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// `spec.embeddedAuthServer`, in the form this release carries out.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbeddedAuthServer {
    pub issuer: String,
    #[serde(default)]
    pub authorization_endpoint_base_url: String,
    #[serde(default)]
    pub signing_key_secret_refs: Vec<SecretKeyRef>,
    #[serde(default)]
    pub hmac_secret_refs: Vec<SecretKeyRef>,
    #[serde(default)]
    pub token_lifespans: Option<TokenLifespans>,
    pub upstream_providers: Vec<UpstreamProvider>,
    #[serde(default)]
    pub storage: Option<Storage>,
    #[serde(default)]
    pub disable_upstream_token_injection: bool,
    #[serde(default, rename = "insecureAllowHTTP")]
    pub insecure_allow_http: bool,
    #[serde(default)]
    pub baseline_client_scopes: Vec<String>,
    #[serde(default)]
    pub allow_confidential_client_registration: bool,
    #[serde(default, rename = "insecureAllowConfidentialOverLoopbackHTTP")]
    pub insecure_allow_confidential_over_loopback_http: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenLifespans {
    #[serde(default, rename(deserialize = "accessTokenLifespan"), skip_serializing_if = "String::is_empty")]
    pub access_token_lifespan: String,
    #[serde(default, rename(deserialize = "refreshTokenLifespan"), skip_serializing_if = "String::is_empty")]
    pub refresh_token_lifespan: String,
    #[serde(default, rename(deserialize = "authCodeLifespan"), skip_serializing_if = "String::is_empty")]
    pub auth_code_lifespan: String,
}

/// Storage of the server's sessions and tokens: in memory only, in this release.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default, rename = "type")]
    pub kind: String,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamProvider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub oidc_config: Option<OidcUpstream>,
    #[serde(default)]
    pub oauth2_config: Option<OAuth2Upstream>,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcUpstream {
    pub issuer_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_ref: Option<SecretKeyRef>,
    #[serde(default)]
    pub redirect_uri: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub additional_authorization_params: BTreeMap<String, String>,
    #[serde(default)]
    pub subject_claim: String,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2Upstream {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_ref: Option<SecretKeyRef>,
    #[serde(default)]
    pub redirect_uri: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub additional_authorization_params: BTreeMap<String, String>,
    #[serde(default, rename = "insecureAllowHTTP")]
    pub insecure_allow_http: bool,
    #[serde(default, rename = "allowPrivateIPs")]
    pub allow_private_ips: bool,
}

/// The section typed, or what this release cannot carry out in it (with its path).
pub fn parse(section: Option<&Value>) -> Result<EmbeddedAuthServer, String> {
    let section = section.ok_or("spec.embeddedAuthServer: required with type embeddedAuthServer")?;
    let config: EmbeddedAuthServer = serde_path_to_error::deserialize(section).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(".{path}") };
        format!("spec.embeddedAuthServer{at}: {} (not carried out by this operator release)", e.into_inner())
    })?;
    if config.issuer.is_empty() {
        return Err("spec.embeddedAuthServer.issuer: required".into());
    }
    if !config.insecure_allow_http && !config.issuer.starts_with("https://") {
        return Err("spec.embeddedAuthServer.issuer: must be an https URL (or set insecureAllowHTTP, for development)".into());
    }
    if config.storage.as_ref().is_some_and(|s| !s.kind.is_empty() && s.kind != "memory") {
        return Err("spec.embeddedAuthServer.storage.type: only memory storage is carried out by this operator release".into());
    }
    let [upstream] = config.upstream_providers.as_slice() else {
        return Err("spec.embeddedAuthServer.upstreamProviders: exactly one upstream provider is supported for an MCPServer".into());
    };
    let well_formed = match upstream.kind.as_str() {
        "oidc" => upstream.oidc_config.is_some() && upstream.oauth2_config.is_none(),
        "oauth2" => upstream.oauth2_config.is_some() && upstream.oidc_config.is_none(),
        _ => false,
    };
    if !well_formed {
        return Err(
            "spec.embeddedAuthServer.upstreamProviders[0]: type must be oidc (with oidcConfig) or oauth2 (with oauth2Config)".into()
        );
    }
    Ok(config)
}

/// The server configuration as the proxy runner reads it (RunConfig
/// `embedded_auth_server_config`): Secret keys as the files they are mounted at, the
/// upstream's client secret as the environment variable that holds it.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RunnerAuthServer {
    pub schema_version: &'static str,
    pub issuer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub authorization_endpoint_base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_config: Option<SigningKeys>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hmac_secret_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_lifespans: Option<TokenLifespans>,
    pub upstreams: Vec<RunnerUpstream>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baseline_client_scopes: Vec<String>,
    pub allowed_audiences: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disable_upstream_token_injection: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_allow_http: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_confidential_client_registration: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_allow_confidential_over_loopback_http: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SigningKeys {
    pub key_dir: &'static str,
    pub signing_key_file: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_key_files: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RunnerUpstream {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_config: Option<Value>,
}

fn key_file(index: usize) -> String {
    format!("key-{index}.pem")
}

fn hmac_file(index: usize) -> String {
    format!("hmac-{index}")
}

/// The environment variable holding an upstream's client secret.
fn client_secret_env(upstream: &str) -> String {
    format!("TOOLHIVE_UPSTREAM_CLIENT_SECRET_{}", upstream.replace('-', "_").to_uppercase())
}

/// The runner's configuration for `config`, serving `resource_url` (the server's
/// resource URL: the tokens' audience, and the base of the upstream's default
/// redirect URI) with `scopes` (the oidcConfigRef's).
pub fn runner_config(config: &EmbeddedAuthServer, resource_url: &str, scopes: &[String]) -> RunnerAuthServer {
    let redirect = |given: &str| {
        if given.is_empty() { format!("{}/oauth/callback", resource_url.trim_end_matches('/')) } else { given.to_string() }
    };
    let upstreams = config
        .upstream_providers
        .iter()
        .map(|u| {
            // What both kinds of upstream say of the client the server is to them.
            let client =
                |id: &str, secret: &Option<SecretKeyRef>, redirect_uri: &str, scopes: &[String], params: &BTreeMap<String, String>| {
                    let secret_env = secret.as_ref().map(|_| client_secret_env(&u.name)).unwrap_or_default();
                    serde_json::json!({"client_id": id, "client_secret_env_var": secret_env, "redirect_uri": redirect(redirect_uri),
                    "scopes": scopes, "additional_authorization_params": params})
                };
            let with = |mut fields: Value, more: Value| {
                if let (Some(f), Some(m)) = (fields.as_object_mut(), more.as_object()) {
                    f.extend(m.clone());
                }
                strip_empty(fields)
            };
            let oidc = u.oidc_config.as_ref().map(|o| {
                let fields = client(&o.client_id, &o.client_secret_ref, &o.redirect_uri, &o.scopes, &o.additional_authorization_params);
                with(fields, serde_json::json!({"issuer_url": o.issuer_url, "subject_claim": o.subject_claim}))
            });
            let oauth2 = u.oauth2_config.as_ref().map(|o| {
                let fields = client(&o.client_id, &o.client_secret_ref, &o.redirect_uri, &o.scopes, &o.additional_authorization_params);
                with(
                    fields,
                    serde_json::json!({"authorization_endpoint": o.authorization_endpoint, "token_endpoint": o.token_endpoint,
                    "allow_private_ips": o.allow_private_ips, "insecure_allow_http": o.insecure_allow_http}),
                )
            });
            RunnerUpstream { name: u.name.clone(), kind: u.kind.clone(), oidc_config: oidc, oauth2_config: oauth2 }
        })
        .collect();
    let files: Vec<String> = (0..config.signing_key_secret_refs.len()).map(key_file).collect();
    RunnerAuthServer {
        schema_version: "v0.1.0",
        issuer: config.issuer.clone(),
        authorization_endpoint_base_url: config.authorization_endpoint_base_url.clone(),
        signing_key_config: files.split_first().map(|(first, rest)| SigningKeys {
            key_dir: KEYS_DIR,
            signing_key_file: first.clone(),
            fallback_key_files: rest.to_vec(),
        }),
        hmac_secret_files: (0..config.hmac_secret_refs.len()).map(|i| format!("{HMAC_DIR}/{}", hmac_file(i))).collect(),
        token_lifespans: config.token_lifespans.clone(),
        upstreams,
        scopes_supported: scopes.to_vec(),
        baseline_client_scopes: config.baseline_client_scopes.clone(),
        allowed_audiences: vec![resource_url.to_string()],
        disable_upstream_token_injection: config.disable_upstream_token_injection,
        insecure_allow_http: config.insecure_allow_http,
        allow_confidential_client_registration: config.allow_confidential_client_registration,
        insecure_allow_confidential_over_loopback_http: config.insecure_allow_confidential_over_loopback_http,
    }
}

/// Drops the keys whose values are empty (the runner's omitempty).
fn strip_empty(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|_, v| match v {
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(b) => *b,
            _ => true,
        });
    }
    value
}

/// The name of the upstream whose token replaces the caller's on the way to the MCP
/// server (the runner's `upstreamswap` step).
pub fn provider_name(config: &RunnerAuthServer) -> &str {
    config.upstreams.first().map(|u| u.name.as_str()).filter(|n| !n.is_empty()).unwrap_or("default")
}

/// The Secret keys the runner reads, each mounted as its own file (read-only to the
/// runner's user), where the RunConfig says.
pub fn secret_volumes(config: &EmbeddedAuthServer) -> Vec<(Volume, VolumeMount)> {
    let mount = |volume: String, secret: &SecretKeyRef, dir: &str, file: String| {
        let items = vec![KeyToPath { key: secret.key.clone(), path: file.clone(), mode: None }];
        let source = SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(items),
            default_mode: Some(0o400),
            ..Default::default()
        };
        let v = Volume { name: volume.clone(), secret: Some(source), ..Default::default() };
        let m = VolumeMount {
            name: volume,
            mount_path: format!("{dir}/{file}"),
            sub_path: Some(file),
            read_only: Some(true),
            ..Default::default()
        };
        (v, m)
    };
    let keys = config.signing_key_secret_refs.iter().enumerate();
    let keys = keys.map(|(i, s)| mount(format!("authserver-signing-key-{i}"), s, KEYS_DIR, key_file(i)));
    let hmac = config.hmac_secret_refs.iter().enumerate();
    let hmac = hmac.map(|(i, s)| mount(format!("authserver-hmac-secret-{i}"), s, HMAC_DIR, hmac_file(i)));
    keys.chain(hmac).collect()
}

/// The upstreams' client secrets, by reference to their Secrets.
pub fn proxy_env(config: &EmbeddedAuthServer) -> Vec<EnvVar> {
    let secrets = config.upstream_providers.iter().filter_map(|u| {
        let secret = u.oidc_config.as_ref().and_then(|o| o.client_secret_ref.as_ref());
        let secret = secret.or_else(|| u.oauth2_config.as_ref().and_then(|o| o.client_secret_ref.as_ref()))?;
        Some(crate::shared::refs::secret_env(client_secret_env(&u.name), secret))
    });
    secrets.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section() -> Value {
        json!({"issuer": "https://tools.example.com",
            "signingKeySecretRefs": [{"name": "keys", "key": "signing.pem"}, {"name": "keys", "key": "old.pem"}],
            "hmacSecretRefs": [{"name": "keys", "key": "hmac"}],
            "tokenLifespans": {"accessTokenLifespan": "30m"},
            "upstreamProviders": [{"name": "corp-sso", "type": "oauth2", "oauth2Config": {
                "authorizationEndpoint": "https://login.example.com/authorize", "tokenEndpoint": "https://login.example.com/token",
                "clientId": "tools", "clientSecretRef": {"name": "keys", "key": "client-secret"}}}]})
    }

    #[test]
    fn the_runner_reads_keys_as_files_and_the_client_secret_from_the_environment() {
        let config = parse(Some(&section())).unwrap();
        let runner = serde_json::to_value(runner_config(&config, "https://tools.example.com/mcp/", &[])).unwrap();
        assert_eq!(
            runner,
            json!({"schema_version": "v0.1.0", "issuer": "https://tools.example.com",
                "signing_key_config": {"key_dir": KEYS_DIR, "signing_key_file": "key-0.pem", "fallback_key_files": ["key-1.pem"]},
                "hmac_secret_files": ["/etc/toolhive/authserver/hmac/hmac-0"],
                "token_lifespans": {"access_token_lifespan": "30m"},
                "upstreams": [{"name": "corp-sso", "type": "oauth2", "oauth2_config": {
                    "authorization_endpoint": "https://login.example.com/authorize", "token_endpoint": "https://login.example.com/token",
                    "client_id": "tools", "client_secret_env_var": "TOOLHIVE_UPSTREAM_CLIENT_SECRET_CORP_SSO",
                    "redirect_uri": "https://tools.example.com/mcp/oauth/callback"}}],
                "allowed_audiences": ["https://tools.example.com/mcp/"]})
        );
        let env = proxy_env(&config);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "TOOLHIVE_UPSTREAM_CLIENT_SECRET_CORP_SSO");
        let mounts: Vec<String> = secret_volumes(&config).into_iter().map(|(_, m)| m.mount_path).collect();
        assert_eq!(
            mounts,
            ["/etc/toolhive/authserver/keys/key-0.pem", "/etc/toolhive/authserver/keys/key-1.pem", "/etc/toolhive/authserver/hmac/hmac-0"]
        );
    }

    #[test]
    fn what_this_release_does_not_carry_out_is_named() {
        let mut delegated = section();
        delegated["delegateClients"] = json!([{"clientId": "x"}]);
        assert!(parse(Some(&delegated)).unwrap_err().contains("delegateClients"), "{:?}", parse(Some(&delegated)));
        let mut dcr = section();
        dcr["upstreamProviders"][0]["oauth2Config"]["dcrConfig"] = json!({"discoveryUrl": "https://x"});
        let err = parse(Some(&dcr)).unwrap_err();
        assert!(err.starts_with("spec.embeddedAuthServer.upstreamProviders[0].oauth2Config") && err.contains("dcrConfig"), "{err}");
        let mut redis = section();
        redis["storage"] = json!({"type": "redis"});
        assert!(parse(Some(&redis)).unwrap_err().contains("only memory storage"));
        let mut two = section();
        two["upstreamProviders"] = json!([two["upstreamProviders"][0], two["upstreamProviders"][0]]);
        assert!(parse(Some(&two)).unwrap_err().contains("exactly one upstream"));
        let mut http = section();
        http["issuer"] = json!("http://tools.example.com");
        assert!(parse(Some(&http)).unwrap_err().contains("https"));
        assert!(parse(None).is_err());
    }
}
