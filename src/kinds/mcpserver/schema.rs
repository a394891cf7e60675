//! The MCPServer CRD as generated from the types in `api`, with what the types alone
//! cannot say: fields removed since v1alpha1, fields this operator refuses, the CEL
//! rules across fields, list maps keyed by name.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::api::{MCPServer, MCPServerSpec, SessionStorageConfig, SessionStorageProvider};
use crate::shared::crd::with_deprecated_version;

/// Fields removed from the API, the field that replaces each, and its old JSON type.
/// They stay in the schema only so the API server can refuse them with a message
/// naming the replacement (instead of silently pruning them).
pub const REMOVED_FIELDS: &[(&str, &str)] = &[
    ("port", "spec.proxyPort"),
    ("targetPort", "spec.mcpPort"),
    ("tools", "spec.toolConfigRef"),
    ("oidcConfig", "spec.oidcConfigRef"),
    ("telemetry", "spec.telemetryConfigRef"),
];

/// A field of the v1beta1 API this operator does not implement yet. Such fields are
/// refused (CRD rule and webhook) instead of accepted and ignored: an MCPServer that
/// asked for authentication or authorization must never run without it.
pub struct Unsupported {
    /// The field under `spec` (a dotted path for a nested one).
    pub field: &'static str,
    /// What it would have configured.
    pub what: &'static str,
    /// Whether a spec sets it (in a form this operator does not implement).
    pub set_in: fn(&MCPServerSpec) -> bool,
}

impl Unsupported {
    /// The CRD rule that refuses it, given its schema: absent, or for a list, empty.
    /// A nested field is looked at only where its parents are set (CEL's `has` of
    /// `a.b` fails when `a` is absent).
    pub fn rule(&self, schema: &Value) -> String {
        let refused = match schema["type"].as_str() {
            Some("array") => format!("!has(self.{0}) || size(self.{0}) == 0", self.field),
            _ => format!("!has(self.{})", self.field),
        };
        let parents: Vec<&str> = self.field.rmatch_indices('.').map(|(at, _)| &self.field[..at]).collect();
        parents.iter().rev().map(|parent| format!("!has(self.{parent})")).chain([refused]).collect::<Vec<_>>().join(" || ")
    }

    /// The field's value in a spec given as JSON, if it is there.
    pub fn value_in<'a>(&self, spec: &'a Value) -> Option<&'a Value> {
        spec.pointer(&format!("/{}", self.field.replace('.', "/")))
    }

    /// The schema of the field, found in the spec's schema.
    fn schema_in<'a>(&self, spec: &'a Value) -> &'a Value {
        self.field.split('.').fold(spec, |schema, part| &schema["properties"][part])
    }

    /// Why it is refused, as the user reads it.
    pub fn message(&self) -> String {
        format!(
            "spec.{} ({}) is not supported by this operator release; remove it, or the server would run without it",
            self.field, self.what
        )
    }
}

pub const UNSUPPORTED_FIELDS: &[Unsupported] = &[
    // Host paths mounted into the MCP server: a way out of the pod's isolation that
    // the Pod Security Standards refuse in podTemplateSpec; not carried out here.
    Unsupported { field: "volumes", what: "host path mounts", set_in: |s| !s.volumes.is_empty() },
    // The next three are enforced by the proxy runner itself, and only by runners
    // newer than the one this release drives (DEFAULT_RUNNER_IMAGE): carried in the
    // RunConfig, an older runner would ignore them. Accepted once the runner is.
    Unsupported {
        field: "maxRequestBodySize",
        what: "a request body limit, enforced only by proxy runners newer than v0.44.0",
        set_in: |s| s.max_request_body_size != 0,
    },
    Unsupported {
        field: "proxyReadTimeout",
        what: "a request read timeout, enforced only by proxy runners newer than v0.44.0",
        set_in: |s| s.proxy_read_timeout.is_some(),
    },
    Unsupported {
        field: "sessionStorage.tls",
        what: "TLS to Redis, spoken only by proxy runners newer than v0.44.0",
        set_in: |s| s.session_storage.as_ref().is_some_and(|storage| storage.tls.is_some()),
    },
];

impl MCPServerSpec {
    /// The UNSUPPORTED_FIELDS this spec sets.
    pub fn unsupported_fields(&self) -> Vec<&'static Unsupported> {
        UNSUPPORTED_FIELDS.iter().filter(|u| (u.set_in)(self)).collect()
    }

    /// Whether spec.replicas asks a stdio server for more than one proxy, which it
    /// never gets: each proxy attaches to the server's stdin and stdout, so a second
    /// would split its replies.
    pub fn stdio_replicas_capped(&self) -> bool {
        self.transport == super::api::Transport::Stdio && self.replicas.is_some_and(|r| r > 1)
    }

    /// The spec's session storage when it is Redis.
    pub fn redis_sessions(&self) -> Option<&SessionStorageConfig> {
        self.session_storage.as_ref().filter(|s| s.provider == SessionStorageProvider::Redis)
    }
}

/// The schema a removed field keeps, typed as it was so CEL can see it.
fn removed_field_schema(field: &str, replacement: &str) -> Value {
    let description = format!("Removed; use {replacement}. Setting it is refused.");
    match field {
        "port" | "targetPort" => json!({"description": description, "type": "integer"}),
        "tools" => json!({"description": description, "type": "array", "items": {"type": "string"}}),
        _ => json!({"description": description, "type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    }
}

/// CEL rules on the spec that the API server enforces (besides enums and ranges).
const SPEC_RULES: &[(&str, &str)] = &[
    ("!(has(self.authzConfig) && has(self.authzConfigRef))", "authzConfig and authzConfigRef are mutually exclusive; set only one"),
    (
        "!has(self.rateLimiting) || (has(self.sessionStorage) && self.sessionStorage.provider == 'redis')",
        "rateLimiting requires sessionStorage with provider 'redis'",
    ),
    // Per-caller buckets without an authenticated caller would count nobody.
    (
        "!(has(self.rateLimiting) && has(self.rateLimiting.perUser)) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",
        "rateLimiting.perUser requires authentication (oidcConfigRef or externalAuthConfigRef)",
    ),
    (
        "!has(self.rateLimiting) || !has(self.rateLimiting.tools) || self.rateLimiting.tools.all(t, !has(t.perUser)) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",
        "per-tool perUser rate limiting requires authentication (oidcConfigRef or externalAuthConfigRef)",
    ),
];

/// The full CRD: v1beta1 (served, storage) and v1alpha1 (served, deprecated) sharing
/// one schema, so the API server needs no conversion.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(MCPServer::crd()).expect("crd serializes");
    let version = &mut value["spec"]["versions"][0];
    {
        let spec = &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut rules: Vec<Value> = SPEC_RULES.iter().map(|(rule, message)| json!({"rule": rule, "message": message})).collect();
        for (old, new) in REMOVED_FIELDS {
            spec["properties"][*old] = removed_field_schema(old, new);
            rules.push(json!({"rule": format!("!has(self.{old})"), "message": format!("spec.{old} was removed; use {new}")}));
        }
        for unsupported in UNSUPPORTED_FIELDS {
            rules.push(json!({"rule": unsupported.rule(unsupported.schema_in(spec)), "message": unsupported.message()}));
        }
        spec["x-kubernetes-validations"] = json!(rules);
    }
    with_deprecated_version(value)
}

pub const CRD_CHART_FILE: &str = "deploy/charts/toolhive-operator-crds/templates/toolhive.stacklok.dev_mcpservers.yaml";

/// Why `spec.podTemplateSpec` is not a pod template: the path inside it and the error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PodTemplateError {
    /// Below `spec.podTemplateSpec` ("." for the template itself).
    pub path: String,
    pub message: String,
}

impl super::api::MCPServerSpec {
    /// `spec.podTemplateSpec` typed. It is a patch over the pod the runner builds, so
    /// it may leave out the container list a whole template requires.
    pub fn pod_template(&self) -> Result<Option<k8s_openapi::api::core::v1::PodTemplateSpec>, PodTemplateError> {
        let Some(template) = &self.pod_template_spec else { return Ok(None) };
        parse_pod_template(template).map(Some)
    }
}

pub fn parse_pod_template(template: &Value) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec, PodTemplateError> {
    let mut template = template.clone();
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("containers").or_insert_with(|| Value::Array(Vec::new()));
    }
    serde_path_to_error::deserialize(&template)
        .map_err(|e| PodTemplateError { path: e.path().to_string(), message: e.into_inner().to_string() })
}
