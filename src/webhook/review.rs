//! The AdmissionReview envelope: a request body in, an answer out. Pure, so every
//! malformed input is tested without a server; never panics, and every malformed
//! input gets an answer that says what was wrong (echoing the uid when there is one).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::mutate;
use super::rules::{self, Facts};

/// Which webhook is answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Mutate,
    Validate,
    /// The validating webhook of MCPRemoteProxies.
    ValidateRemoteProxy,
    /// The validating webhook of VirtualMCPServers.
    ValidateVirtualServer,
    /// The validating webhook of VirtualMCPCompositeToolDefinitions.
    ValidateCompositeTool,
    /// The validating webhook of EmbeddingServers.
    ValidateEmbeddingServer,
}

impl Hook {
    /// The kind the hook admits.
    fn kind(self) -> &'static str {
        match self {
            Hook::Mutate | Hook::Validate => "MCPServer",
            Hook::ValidateRemoteProxy => "MCPRemoteProxy",
            Hook::ValidateVirtualServer => "VirtualMCPServer",
            Hook::ValidateCompositeTool => "VirtualMCPCompositeToolDefinition",
            Hook::ValidateEmbeddingServer => "EmbeddingServer",
        }
    }
}

/// The answer, with bounded values for metric labels and log fields.
#[derive(Debug)]
pub struct Outcome {
    pub answer: AdmissionReview<DynamicObject>,
    pub allowed: bool,
    /// "allowed", "denied", or admitted despite rules in "warned" or "audited" mode.
    pub decision: &'static str,
    /// "allowed", "mutated", "malformed" or a [`rules::Rule`] name.
    pub reason: &'static str,
    pub uid: String,
    pub namespace: String,
    pub operation: &'static str,
}

impl Outcome {
    /// The denial message, if this answer denies.
    pub fn message(&self) -> Option<&str> {
        let response = self.answer.response.as_ref()?;
        (!response.allowed).then_some(response.result.message.as_str())
    }

    /// The answer as the API server reads it. kube serializes the patch (bytes) as an
    /// array of numbers (kube-rs/kube#1781); the AdmissionReview API wants base64.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        use base64::Engine;
        let mut answer = serde_json::to_value(&self.answer)?;
        let patch = self.answer.response.as_ref().and_then(|r| r.patch.as_ref());
        if let (Some(patch), Some(slot)) = (patch, answer.pointer_mut("/response/patch")) {
            *slot = Value::from(base64::engine::general_purpose::STANDARD.encode(patch));
        }
        serde_json::to_vec(&answer)
    }

    /// A malformed request that carried no uid cannot be answered as a review.
    pub fn unanswerable(&self) -> bool {
        self.reason == MALFORMED && self.uid.is_empty()
    }
}

const MALFORMED: &str = "malformed";

fn operation_label(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], hook: Hook, facts: &Facts) -> Outcome {
    // A byte-order mark is legal before JSON text from some clients; skip it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let request = match read(body) {
        Ok(request) => request,
        Err((uid, message)) => return malformed(uid, String::new(), "UNKNOWN", message),
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    let operation = operation_label(&request.operation);
    let refuse = |message: String| malformed(request.uid.clone(), namespace.clone(), operation, message);
    if request.uid.is_empty() {
        return refuse("AdmissionReview request has no uid".into());
    }
    if request.kind.kind != hook.kind() || request.kind.group != crate::shared::crd::GROUP {
        return refuse(format!(
            "this webhook admits {} {}s only, not {}/{}",
            crate::shared::crd::GROUP,
            hook.kind(),
            request.kind.group,
            request.kind.kind
        ));
    }
    let Some(object) = &request.object else {
        return refuse(format!("{operation} request has no object"));
    };
    if namespace.is_empty() {
        return refuse("request has no namespace".into());
    }
    let response = AdmissionResponse::from(&request);
    let (response, reason) = match hook {
        Hook::Mutate => mutate_object(response, object, &namespace, facts),
        Hook::Validate
        | Hook::ValidateRemoteProxy
        | Hook::ValidateVirtualServer
        | Hook::ValidateCompositeTool
        | Hook::ValidateEmbeddingServer => validate_object(response, &request, object, &namespace, hook, facts),
    };
    let decision = if !response.allowed {
        "denied"
    } else if response.warnings.is_some() {
        "warned"
    } else if !response.audit_annotations.is_empty() {
        "audited"
    } else {
        "allowed"
    };
    Outcome { allowed: response.allowed, decision, answer: response.into_review(), reason, uid: request.uid, namespace, operation }
}

/// The request, or the uid (if one could be read) and what is wrong.
fn read(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, (String, String)> {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => review.try_into().map_err(|_| (String::new(), "AdmissionReview has no request".to_string())),
        // Only a failed read pays for a second look, to word the answer.
        Err(e) => match serde_json::from_slice::<Value>(body) {
            Err(_) => Err((String::new(), format!("request body is not valid JSON: {e}"))),
            Ok(tree) => {
                let uid = tree.pointer("/request/uid").and_then(Value::as_str).unwrap_or_default().to_string();
                if tree.get("request").is_none_or(Value::is_null) {
                    Err((uid, "AdmissionReview has no request".into()))
                } else {
                    Err((uid, format!("request is not a valid AdmissionReview: {e}")))
                }
            }
        },
    }
}

fn malformed(uid: String, namespace: String, operation: &'static str, message: String) -> Outcome {
    let mut response = deny(AdmissionResponse::invalid(""), 400, "BadRequest", message);
    response.uid = uid.clone();
    Outcome { answer: response.into_review(), allowed: false, decision: "denied", reason: MALFORMED, uid, namespace, operation }
}

fn mutate_object(response: AdmissionResponse, object: &DynamicObject, namespace: &str, facts: &Facts) -> (AdmissionResponse, &'static str) {
    let before = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(e) => return (deny(response, 400, "BadRequest", format!("object cannot be read: {e}")), MALFORMED),
    };
    let (rules, _) = facts.rules_in(namespace);
    let after = mutate::with_defaults(&before, namespace, &rules);
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return (response, "allowed");
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => (patched, "mutated"),
        Err(e) => (deny(response, 500, "InternalError", format!("the defaults could not be written as a patch: {e}")), MALFORMED),
    }
}

fn validate_object(
    response: AdmissionResponse,
    request: &AdmissionRequest<DynamicObject>,
    object: &DynamicObject,
    namespace: &str,
    hook: Hook,
    facts: &Facts,
) -> (AdmissionResponse, &'static str) {
    let spec = object.data.get("spec");
    // Changes that leave the spec alone (finalizers, labels, status) and objects being
    // deleted are never blocked, so deletion and status updates cannot get stuck on policy.
    let unchanged = request.operation == Operation::Update && request.old_object.as_ref().is_some_and(|old| old.data.get("spec") == spec);
    if unchanged || object.metadata.deletion_timestamp.is_some() {
        return (response, "allowed");
    }
    let name = object.metadata.name.as_deref().unwrap_or(request.name.as_str());
    let create = (request.operation == Operation::Create).then_some(rules::Create { name, dry_run: request.dry_run });
    let violations = match hook {
        Hook::ValidateRemoteProxy => super::remote_proxy::validate(spec, namespace, facts),
        Hook::ValidateVirtualServer => super::virtual_server::validate(spec, namespace, facts),
        Hook::ValidateCompositeTool => super::virtual_server::validate_definition(spec, namespace, facts),
        Hook::ValidateEmbeddingServer => {
            let old = request.old_object.as_ref().and_then(|old| old.data.get("spec"));
            super::embedding_server::validate(spec, old, namespace, facts)
        }
        Hook::Mutate | Hook::Validate => rules::validate(spec, namespace, create, facts),
    };
    let judged = rules::judge(violations, namespace, facts);
    let mut response = response;
    if !judged.warned.is_empty() {
        // kubectl prints each as "Warning: ..."; the rule is in warn mode, not yet enforced.
        let warnings = judged.warned.iter().map(|v| format!("{v} (policy rule {:?} in warn mode)", v.rule.name())).collect();
        response.warnings = Some(warnings);
    }
    if !judged.audited.is_empty() {
        response.audit_annotations.insert(AUDIT_ANNOTATION.into(), rules::denial_message(&judged.audited));
    }
    match (judged.enforced.first(), judged.warned.first(), judged.audited.first()) {
        (Some(first), _, _) => {
            let reason = first.rule.name();
            (deny(response, 403, "Forbidden", rules::denial_message(&judged.enforced)), reason)
        }
        (None, Some(first), _) | (None, None, Some(first)) => (response, first.rule.name()),
        (None, None, None) => (response, "allowed"),
    }
}

/// The audit annotation an admitted review carries for rules in audit mode (the API
/// server's audit log records it under the webhook's name).
pub const AUDIT_ANNOTATION: &str = "policy-audit";

fn deny(response: AdmissionResponse, code: u16, reason: &str, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = code;
    response.result.reason = reason.into();
    response.result.status = Some(kube::core::response::StatusSummary::Failure);
    response
}
