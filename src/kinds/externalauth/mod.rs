//! MCPExternalAuthConfig: how the proxy authenticates to what is behind it. An
//! MCPServer names one with `spec.externalAuthConfigRef` (same namespace). This
//! release carries out `tokenExchange` (the caller's token exchanged at an OAuth 2.0
//! token endpoint, RFC 8693, before the request reaches the MCP server) and
//! `unauthenticated`; the other types are stored, for compatibility, but are invalid
//! here, so a server naming one never runs without what it asked for.

pub mod authserver;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::shared::{configkind::ConfigStatus, refs::SecretKeyRef};

/// Authentication to the backend for the MCPServers that reference it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "toolhive.stacklok.dev",
    version = "v1beta1",
    kind = "MCPExternalAuthConfig",
    plural = "mcpexternalauthconfigs",
    singular = "mcpexternalauthconfig",
    shortname = "extauth",
    shortname = "mcpextauth",
    category = "toolhive",
    namespaced,
    status = "MCPExternalAuthConfigStatus",
    doc = "MCPExternalAuthConfig says how the proxies of the MCPServers that reference it (spec.externalAuthConfigRef, same namespace) authenticate to their backend.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type=='Valid')].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = section_rules()))]
pub struct MCPExternalAuthConfigSpec {
    /// Which kind of authentication; the section of the same name configures it.
    #[serde(rename = "type")]
    pub auth_type: ExternalAuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchange>,
    /// A header whose value comes from a Secret, added to each request a remote
    /// proxy sends (MCPRemoteProxy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_injection: Option<HeaderInjection>,
    /// A bearer token from a Secret, sent to a remote MCP server (MCPRemoteProxy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<BearerToken>,
    /// The sections of the types this release does not carry out: kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub embedded_auth_server: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub aws_sts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub upstream_inject: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub obo: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::shared::crd::free_form_object")]
    pub xaa: Option<Value>,
}

pub type MCPExternalAuthConfigStatus = ConfigStatus;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExternalAuthType {
    #[default]
    TokenExchange,
    HeaderInjection,
    BearerToken,
    Unauthenticated,
    EmbeddedAuthServer,
    AwsSts,
    UpstreamInject,
    Obo,
    Xaa,
}

/// The sections, by the type each goes with (one per type but `unauthenticated`).
const SECTIONS: &[&str] =
    &["tokenExchange", "headerInjection", "bearerToken", "embeddedAuthServer", "awsSts", "upstreamInject", "obo", "xaa"];

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenExchange {
    /// The OAuth 2.0 token endpoint.
    pub token_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// The client secret, from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// The audience of the token asked for.
    pub audience: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub scopes: Vec<String>,
    /// What the caller's token is: access_token, id_token or jwt (short or URN form).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = r"^(access_token|id_token|jwt|urn:ietf:params:oauth:token-type:(access_token|id_token|jwt))?$"))]
    pub subject_token_type: String,
    /// Put the exchanged token in this header instead of replacing Authorization.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_token_header_name: String,
    /// Which upstream provider's token (of an embedded authorization server) to
    /// exchange: not carried out by this release, so it must be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject_provider_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderInjection {
    /// The HTTP header to add.
    #[schemars(length(min = 1))]
    pub header_name: String,
    /// The Secret key holding its value.
    pub value_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerToken {
    /// The Secret key holding the token.
    pub token_secret_ref: SecretKeyRef,
}

/// Whether the type authenticates a proxy to a remote MCP server: what an
/// MCPRemoteProxy does with it, and an MCPServer (its backend is its own container)
/// cannot.
impl ExternalAuthType {
    /// The type as a manifest spells it (`spec.type`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
}

pub fn remote_only(auth_type: ExternalAuthType) -> bool {
    matches!(auth_type, ExternalAuthType::HeaderInjection | ExternalAuthType::BearerToken)
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpexternalauthconfigs.yaml";

pub fn crd() -> CustomResourceDefinition {
    crate::shared::crd::with_deprecated_version(serde_json::to_value(MCPExternalAuthConfig::crd()).expect("crd serializes"))
}

/// The spec's CEL rules: each type's section goes with that type only, and
/// `unauthenticated` takes none.
fn section_rules() -> Value {
    let mut rules: Vec<Value> = SECTIONS
        .iter()
        .map(|s| json!({"rule": format!("self.type == '{s}' ? has(self.{s}) : !has(self.{s})"), "message": format!("{s} goes with type {s}, and only with it")}))
        .collect();
    let none = SECTIONS.iter().map(|s| format!("!has(self.{s})")).collect::<Vec<_>>().join(" && ");
    rules.push(
        json!({"rule": format!("self.type == 'unauthenticated' ? ({none}) : true"), "message": "type unauthenticated takes no section"}),
    );
    Value::Array(rules)
}

impl MCPExternalAuthConfigSpec {
    /// What is wrong with it for this operator, if anything.
    pub fn problem(&self) -> Option<String> {
        let type_name = self.auth_type.name();
        match self.auth_type {
            ExternalAuthType::Unauthenticated => None,
            ExternalAuthType::TokenExchange => match &self.token_exchange {
                None => Some("spec.tokenExchange: required with type tokenExchange".into()),
                Some(t) if t.token_url.is_empty() || t.audience.is_empty() => {
                    Some("spec.tokenExchange: tokenUrl and audience are required".into())
                }
                Some(t) if !t.subject_provider_name.is_empty() => Some(
                    "spec.tokenExchange.subjectProviderName: exchanging an embedded authorization server's upstream token (rather than the caller's) is not carried out by this operator release; remove it"
                        .into(),
                ),
                Some(_) => None,
            },
            // Carried out for remote proxies (see `remote_only`); the schema requires
            // their fields.
            ExternalAuthType::HeaderInjection | ExternalAuthType::BearerToken => None,
            ExternalAuthType::AwsSts => Some(format!(
                "spec.type: {type_name} (signing requests to a remote MCP server with AWS credentials) is not carried out by this operator release"
            )),
            ExternalAuthType::UpstreamInject | ExternalAuthType::Xaa => Some(format!(
                "spec.type: {type_name} is not carried out by this operator release, for an MCPServer or for a virtual MCP server's backends"
            )),
            ExternalAuthType::Obo => Some("spec.type: obo needs an enterprise build of the proxy runner".into()),
            ExternalAuthType::EmbeddedAuthServer => crate::kinds::externalauth::authserver::parse(self.embedded_auth_server.as_ref()).err(),
        }
    }
}

crate::shared::configkind::config_kind!(MCPExternalAuthConfig { spec: MCPExternalAuthConfigSpec });

/// The token exchange as the proxy runner reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerTokenExchange {
    pub token_url: String,
    pub client_id: String,
    /// Always empty: the secret reaches the proxy as TOOLHIVE_TOKEN_EXCHANGE_CLIENT_SECRET.
    pub client_secret: String,
    pub audience: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject_token_type: String,
    pub header_strategy: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub external_token_header_name: String,
}

/// The RunConfig's token exchange for `spec`, when it is one.
pub fn token_exchange(spec: &MCPExternalAuthConfigSpec) -> Option<RunnerTokenExchange> {
    let t = spec.token_exchange.as_ref().filter(|_| spec.auth_type == ExternalAuthType::TokenExchange)?;
    let short = t.subject_token_type.strip_prefix("urn:ietf:params:oauth:token-type:").unwrap_or(&t.subject_token_type);
    Some(RunnerTokenExchange {
        token_url: t.token_url.clone(),
        client_id: t.client_id.clone(),
        client_secret: String::new(),
        audience: t.audience.clone(),
        scopes: t.scopes.clone(),
        subject_token_type: if short.is_empty() { String::new() } else { format!("urn:ietf:params:oauth:token-type:{short}") },
        header_strategy: if t.external_token_header_name.is_empty() { "replace" } else { "custom" },
        external_token_header_name: t.external_token_header_name.clone(),
    })
}

/// The proxy's environment: the token exchange client secret, by reference.
pub fn proxy_env(spec: &MCPExternalAuthConfigSpec) -> Option<EnvVar> {
    let secret = spec.token_exchange.as_ref()?.client_secret_ref.as_ref()?;
    Some(crate::shared::refs::secret_env("TOOLHIVE_TOKEN_EXCHANGE_CLIENT_SECRET", secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> MCPExternalAuthConfigSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn token_exchange_is_carried_out_and_other_types_are_refused_with_the_reason() {
        let exchange = spec(json!({"type": "tokenExchange", "tokenExchange": {"tokenUrl": "https://idp/token", "audience": "backend",
            "clientId": "proxy", "clientSecretRef": {"name": "idp", "key": "secret"}, "subjectTokenType": "id_token"}}));
        assert_eq!(exchange.problem(), None);
        let runner = serde_json::to_value(token_exchange(&exchange).unwrap()).unwrap();
        assert_eq!(
            runner,
            json!({"token_url": "https://idp/token", "client_id": "proxy", "client_secret": "", "audience": "backend",
                "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", "header_strategy": "replace"})
        );
        let env = proxy_env(&exchange).unwrap();
        assert_eq!((env.name.as_str(), env.value), ("TOOLHIVE_TOKEN_EXCHANGE_CLIENT_SECRET", None));
        assert_eq!(spec(json!({"type": "unauthenticated"})).problem(), None);
        let header = spec(
            json!({"type": "headerInjection", "headerInjection": {"headerName": "X-Key", "valueSecretRef": {"name": "s", "key": "k"}}}),
        );
        assert_eq!(header.problem(), None, "carried out for remote proxies");
        assert!(remote_only(header.auth_type) && !remote_only(exchange.auth_type));
        assert!(spec(json!({"type": "awsSts", "awsSts": {}})).problem().unwrap().contains("awsSts (signing requests"));
        assert!(spec(json!({"type": "xaa", "xaa": {}})).problem().unwrap().contains("virtual MCP server"));
        assert!(
            spec(json!({"type": "embeddedAuthServer", "embeddedAuthServer": {}})).problem().unwrap().contains("spec.embeddedAuthServer")
        );
        let upstream =
            spec(json!({"type": "tokenExchange", "tokenExchange": {"tokenUrl": "u", "audience": "a", "subjectProviderName": "github"}}));
        assert!(upstream.problem().unwrap().contains("subjectProviderName"));
    }

    #[test]
    fn crd_is_the_references_shape() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["extauth", "mcpextauth"]));
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["x-kubernetes-validations"].as_array().unwrap().len(), 9);
        assert_eq!(spec["properties"]["type"]["enum"].as_array().unwrap().len(), 9);
        assert_eq!(spec["properties"]["awsSts"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(spec["properties"]["headerInjection"]["required"], json!(["headerName", "valueSecretRef"]));
        assert_eq!(spec["properties"]["tokenExchange"]["required"], json!(["audience", "tokenUrl"]));
    }
}
