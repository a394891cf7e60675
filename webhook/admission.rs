//! AdmissionReview handling for MCPServers: pure functions from a request body to a
//! response, so every rule and every malformed input is tested without a server.

use base64::Engine;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use super::image::ImageRef;
use super::policy::{ResourcePolicy, Rules, TenancyPolicy};
use super::quantity::parse_milli;
use crate::api::{DEPRECATED_VERSION, DEPRECATION_WARNING, REMOVED_FIELDS};
use crate::config::Scope;

pub const TEAM_LABEL: &str = "toolhive.stacklok.dev/team";
pub const MCP_CONTAINER: &str = "mcp";


/// What the webhook knows besides the request: the policy, the operator's scope and
/// how many MCPServers each namespace holds (from a watch cache).
pub struct Facts<'a> {
    pub policy: &'a TenancyPolicy,
    pub scope: &'a Scope,
    pub server_count: &'a dyn Fn(&str) -> usize,
}

/// The AdmissionReview sent back, serialized straight from these fields (no JSON
/// tree is built per request).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer<'a> {
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: AnswerBody<'a>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnswerBody<'a> {
    /// Borrowed from the request body when it could be.
    pub uid: Cow<'a, str>,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AnswerStatus>,
    #[serde(rename = "patchType", skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnswerStatus {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub status: &'static str,
}

impl Outcome<'_> {
    /// The request's uid as echoed in the answer ("" when none could be read).
    pub fn uid(&self) -> &str {
        &self.response.response.uid
    }
}

impl Answer<'_> {
    /// The denial message, if this answer denies.
    pub fn message(&self) -> Option<&str> {
        self.response.status.as_ref().map(|s| s.message.as_str())
    }
}

/// The outcome, with bounded values for metric labels and log fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<'a> {
    pub response: Answer<'a>,
    pub allowed: bool,
    /// Low-cardinality reason: "allowed", "mutated", a rule name, or "malformed".
    pub reason: &'static str,
    pub namespace: Cow<'a, str>,
    pub operation: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Mutate,
    Validate,
}

/// A denial: field path, Kubernetes error type, detail, and the rule (bounded) for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub field: String,
    pub kind: &'static str,
    pub detail: String,
    pub rule: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.kind, self.detail)
    }
}

fn forbidden(field: impl Into<String>, rule: &'static str, detail: String) -> Violation {
    Violation { field: field.into(), kind: "Forbidden", detail, rule }
}

fn invalid(field: impl Into<String>, rule: &'static str, detail: String) -> Violation {
    Violation { field: field.into(), kind: "Invalid value", detail, rule }
}

fn operation_label(op: &str) -> &'static str {
    match op {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "UNKNOWN",
    }
}

/// Handles one AdmissionReview body. Never panics; malformed input yields a denial
/// that says what was wrong (echoing the uid when one could be read).
pub fn review<'a>(body: &'a [u8], mode: Mode, facts: &Facts) -> Outcome<'a> {
    if mode == Mode::Validate
        && let Some(outcome) = validate_typed(body, facts)
    {
        return outcome;
    }
    review_values(body, mode, facts)
}

/// The general path: the whole review as a JSON tree (mutation diffs it; every
/// malformed case is worded here).
fn review_values<'a>(body: &'a [u8], mode: Mode, facts: &Facts) -> Outcome<'a> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let request = parsed.as_ref().ok().and_then(|v| v.get("request"));
    let uid = request.and_then(|r| r.get("uid")).and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = answer_version(parsed.as_ref().ok().and_then(|v| v.get("apiVersion")).and_then(Value::as_str));
    let malformed = |uid: &str, message: String| Outcome {
        response: response(api_version, Cow::Owned(uid.to_string()), false, Some((400, "BadRequest", message)), None, &[]),
        allowed: false,
        reason: "malformed",
        namespace: Cow::Borrowed(""),
        operation: "UNKNOWN",
    };
    let request = match (&parsed, request) {
        (Err(e), _) => return malformed("", format!("request body is not valid JSON: {e}")),
        (Ok(_), None) => return malformed(&uid, "AdmissionReview has no request".into()),
        (Ok(_), Some(r)) => r,
    };
    if uid.is_empty() {
        return malformed("", "AdmissionReview request has no uid".into());
    }
    let operation = operation_label(request.get("operation").and_then(Value::as_str).unwrap_or_default());
    let namespace = request.get("namespace").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = request.get("kind").and_then(|k| k.get("kind")).and_then(Value::as_str).unwrap_or_default();
    let group = request.get("kind").and_then(|k| k.get("group")).and_then(Value::as_str).unwrap_or_default();
    if kind != "MCPServer" || group != crate::api::GROUP {
        let mut out = malformed(&uid, format!("this webhook admits toolhive.stacklok.dev MCPServers only, not {group}/{kind}"));
        out.operation = operation;
        out.namespace = Cow::Owned(namespace);
        return out;
    }
    let warnings = warnings_for(request.get("kind").and_then(|k| k.get("version")).and_then(Value::as_str).unwrap_or_default());
    let base = |allowed: bool, reason: &'static str, status, patch| Outcome {
        response: response(api_version, Cow::Owned(uid.clone()), allowed, status, patch, &warnings),
        allowed,
        reason,
        namespace: Cow::Owned(namespace.clone()),
        operation,
    };
    if never_reviewed(operation) {
        return base(true, "allowed", None, None);
    }
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return base(false, "malformed", Some((400, "BadRequest", format!("{operation} request has no object"))), None);
    };
    if namespace.is_empty() {
        return base(false, "malformed", Some((400, "BadRequest", "request has no namespace".into())), None);
    }
    match mode {
        Mode::Mutate => {
            let rules = facts.policy.rules_for(&namespace);
            let defaulted = apply_defaults(object, &namespace, &rules);
            let patch = json_patch::diff(object, &defaulted);
            if patch.0.is_empty() {
                base(true, "allowed", None, None)
            } else {
                let bytes = serde_json::to_vec(&patch).unwrap_or_default();
                base(true, "mutated", None, Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
            }
        }
        Mode::Validate => {
            let spec = object.get("spec");
            let old_spec = request.get("oldObject").filter(|o| o.is_object()).map(|o| o.get("spec"));
            let unchanged = old_spec.is_some_and(|old| old == spec);
            let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
            let view = spec.and_then(SpecView::of_value);
            let (allowed, reason, status) = verdict(operation, &namespace, view.as_ref(), unchanged, deleting, facts);
            base(allowed, reason, status, None)
        }
    }
}

/// The AdmissionReview version to answer in: the request's, of the two the API server speaks.
fn answer_version(requested: Option<&str>) -> &'static str {
    match requested {
        Some("admission.k8s.io/v1beta1") => "admission.k8s.io/v1beta1",
        _ => "admission.k8s.io/v1",
    }
}

/// Warnings returned with every answer for an object of this API version.
fn warnings_for(version: &str) -> Vec<String> {
    if version == DEPRECATED_VERSION { vec![DEPRECATION_WARNING.to_string()] } else { vec![] }
}

/// Operations admitted without looking at the object (nothing to default or check).
fn never_reviewed(operation: &str) -> bool {
    operation == "DELETE" || operation == "CONNECT"
}

/// The validating decision, shared by the typed fast path and the Value path.
/// `spec`: None when the object has no spec or a spec that is not an object.
/// `unchanged`: the request carries an old object whose spec equals this one.
fn verdict(
    operation: &str,
    namespace: &str,
    spec: Option<&SpecView>,
    unchanged: bool,
    deleting: bool,
    facts: &Facts,
) -> (bool, &'static str, Option<(u16, &'static str, String)>) {
    // Changes that leave the spec alone (finalizers, labels, status) are never
    // blocked, so deletion and status updates cannot get stuck on policy.
    if operation == "UPDATE" && unchanged {
        return (true, "allowed", None);
    }
    if deleting {
        return (true, "allowed", None);
    }
    let violations = validate(spec, namespace, operation == "CREATE", facts);
    if violations.is_empty() {
        return (true, "allowed", None);
    }
    let message = if violations.len() == 1 {
        violations[0].to_string()
    } else {
        format!("{} problems: {}", violations.len(), violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    };
    (false, violations[0].rule, Some((403, "Forbidden", message)))
}

/// The parts of a validating AdmissionReview the rules read, deserialized without
/// building a JSON tree for the rest (metadata, managedFields, userInfo...).
#[derive(serde::Deserialize)]
struct TypedReview<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: TypedRequest<'a>,
}

/// The request's fields the rules read. Deserialized by hand (below) for one reason:
/// the API server sends `operation` before `object`, so a CREATE's spec (nothing to
/// compare it with) is read straight into its typed fields in the same pass.
struct TypedRequest<'a> {
    uid: Cow<'a, str>,
    operation: Cow<'a, str>,
    namespace: Option<Cow<'a, str>>,
    kind: TypedKind<'a>,
    object: Option<ObjectRead<'a>>,
    old_object: Option<TypedObject<'a>>,
}

/// The object as read in the pass over the body.
enum ObjectRead<'a> {
    /// A CREATE's object, spec parsed (None: absent or null).
    Created { deleting: bool, spec: Option<Box<TypedSpec<'a>>> },
    /// Any other operation's (or a body in another field order): the spec's text,
    /// parsed once it has been compared with the old object's.
    Text(TypedObject<'a>),
}

/// A string borrowed from the body unless it has escapes (a bare `Cow<str>` read by
/// hand is always an owned copy: serde borrows only where a derive says `borrow`).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TypedRequest<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TypedRequest<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an AdmissionReview request")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                use serde::de::Error;
                let (mut uid, mut operation, mut namespace, mut kind, mut object, mut old_object) = (None, None, None, None, None, None);
                // A repeated field fails the typed read (the Value path then answers),
                // as a derived Deserialize would.
                fn once<T, E: Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
                    if slot.replace(value).is_some() { Err(E::duplicate_field(name)) } else { Ok(()) }
                }
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "uid" => once(&mut uid, map.next_value::<Text>()?.0, "uid")?,
                        "operation" => once(&mut operation, map.next_value::<Text>()?.0, "operation")?,
                        "namespace" => once(&mut namespace, map.next_value::<Option<Text>>()?.map(|t| t.0), "namespace")?,
                        "kind" => once(&mut kind, map.next_value()?, "kind")?,
                        "object" => {
                            let read = if operation.as_deref() == Some("CREATE") {
                                map.next_value::<Option<CreatedObject>>()?.map(|o| ObjectRead::Created {
                                    deleting: o.metadata.is_some_and(|m| m.deleting),
                                    spec: o.spec,
                                })
                            } else {
                                map.next_value::<Option<TypedObject>>()?.map(ObjectRead::Text)
                            };
                            once(&mut object, read, "object")?
                        }
                        "oldObject" => once(&mut old_object, map.next_value::<Option<TypedObject>>()?, "oldObject")?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(TypedRequest {
                    uid: uid.ok_or_else(|| M::Error::missing_field("uid"))?,
                    operation: operation.ok_or_else(|| M::Error::missing_field("operation"))?,
                    namespace: namespace.flatten(),
                    kind: kind.ok_or_else(|| M::Error::missing_field("kind"))?,
                    object: object.flatten(),
                    old_object: old_object.flatten(),
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

#[derive(serde::Deserialize)]
struct TypedKind<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct TypedObject<'a> {
    #[serde(default)]
    metadata: Option<TypedMeta>,
    /// The spec's text, kept to compare an UPDATE's old and new spec; Some("null")
    /// for an explicit null, as the Value path sees it.
    #[serde(borrow, default, deserialize_with = "some_raw")]
    spec: Option<&'a RawValue>,
}

/// A CREATE's object: the spec read into its typed fields in the same pass.
#[derive(serde::Deserialize)]
struct CreatedObject<'a> {
    #[serde(default)]
    metadata: Option<TypedMeta>,
    #[serde(borrow, default)]
    /// Boxed: the typed spec is a few hundred bytes, and each layer of the
    /// deserializer would otherwise move it by value.
    spec: Option<Box<TypedSpec<'a>>>,
}

fn some_raw<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The spec fields the rules read, borrowed from the request body. A field of a
/// type the rules do not expect fails this parse and sends the request to the
/// Value path, which words it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedSpec<'a> {
    #[serde(borrow, default)]
    image: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    transport: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resources: Option<TypedResources<'a>>,
    #[serde(default, deserialize_with = "array_len")]
    volumes: usize,
    #[serde(default)]
    pod_template_spec: Option<Value>,
    // The removed fields (crate::api::REMOVED_FIELDS), present or not.
    #[serde(default, deserialize_with = "present")]
    port: bool,
    #[serde(default, deserialize_with = "present")]
    target_port: bool,
    #[serde(default, deserialize_with = "present")]
    tools: bool,
    #[serde(default, deserialize_with = "present")]
    oidc_config: bool,
    #[serde(default, deserialize_with = "present")]
    telemetry: bool,
}

impl TypedSpec<'_> {
    fn view(&self) -> SpecView<'_> {
        SpecView {
            image: self.image.as_deref(),
            transport: self.transport.as_deref(),
            resources: self.resources.as_ref().map(TypedResources::view),
            volumes: self.volumes,
            pod_template: self.pod_template_spec.as_ref(),
            removed: [self.port, self.target_port, self.tools, self.oidc_config, self.telemetry],
        }
    }
}

/// The number of elements of an array; anything else counts as none (as the Value
/// path reads `spec.volumes`).
fn array_len<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Len;
    impl<'de> serde::de::Visitor<'de> for Len {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(0)
        }
        fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_str<E>(self, _: &str) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
    }
    d.deserialize_any(Len)
}

/// `resources` (requests/limits of cpu/memory) as sent; other keys are not read.
#[derive(serde::Deserialize)]
struct TypedResources<'a> {
    #[serde(borrow, default)]
    requests: Option<TypedAmounts<'a>>,
    #[serde(borrow, default)]
    limits: Option<TypedAmounts<'a>>,
}

#[derive(serde::Deserialize)]
struct TypedAmounts<'a> {
    #[serde(borrow, default, deserialize_with = "some_quantity")]
    cpu: Option<Amount<'a>>,
    #[serde(borrow, default, deserialize_with = "some_quantity")]
    memory: Option<Amount<'a>>,
}

impl TypedResources<'_> {
    fn view(&self) -> ResourcesView<'_> {
        fn amounts<'s>(a: &'s Option<TypedAmounts<'_>>) -> [Option<Amount<'s>>; 2] {
            a.as_ref().map_or([None, None], |a| [a.cpu.as_ref().map(Amount::reborrow), a.memory.as_ref().map(Amount::reborrow)])
        }
        ResourcesView { requests: amounts(&self.requests), limits: amounts(&self.limits) }
    }
}

/// One resource amount as sent: a quantity string, a bare number, or anything else
/// (which the rules reject).
#[derive(Debug)]
enum Amount<'a> {
    Text(Cow<'a, str>),
    Number(serde_json::Number),
    Other,
}

impl<'a> Amount<'a> {
    fn of_value(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Amount::Text(Cow::Borrowed(s)),
            Value::Number(n) => Amount::Number(n.clone()),
            _ => Amount::Other,
        }
    }

    fn reborrow(&self) -> Amount<'_> {
        match self {
            Amount::Text(t) => Amount::Text(Cow::Borrowed(t)),
            Amount::Number(n) => Amount::Number(n.clone()),
            Amount::Other => Amount::Other,
        }
    }
}

/// An amount that is present, null included (null is not a quantity).
fn some_quantity<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Amount<'a>>, D::Error> {
    struct AmountVisitor;
    impl<'de> serde::de::Visitor<'de> for AmountVisitor {
        type Value = Amount<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Amount<'de>, E> {
            Ok(Amount::Text(Cow::Borrowed(s)))
        }
        fn visit_str<E>(self, s: &str) -> Result<Amount<'de>, E> {
            Ok(Amount::Text(Cow::Owned(s.to_string())))
        }
        fn visit_u64<E>(self, n: u64) -> Result<Amount<'de>, E> {
            Ok(Amount::Number(n.into()))
        }
        fn visit_i64<E>(self, n: i64) -> Result<Amount<'de>, E> {
            Ok(Amount::Number(n.into()))
        }
        fn visit_f64<E>(self, n: f64) -> Result<Amount<'de>, E> {
            Ok(serde_json::Number::from_f64(n).map_or(Amount::Other, Amount::Number))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Amount<'de>, E> {
            Ok(Amount::Other)
        }
        fn visit_unit<E>(self) -> Result<Amount<'de>, E> {
            Ok(Amount::Other)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Amount<'de>, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Amount::Other)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Amount<'de>, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(Amount::Other)
        }
    }
    d.deserialize_any(AmountVisitor).map(Some)
}

/// A resources block as the ceilings read it: [cpu, memory] of requests and limits.
pub struct ResourcesView<'a> {
    requests: [Option<Amount<'a>>; 2],
    limits: [Option<Amount<'a>>; 2],
}

impl<'a> ResourcesView<'a> {
    fn of_value(resources: &'a Value) -> Self {
        let amounts = |section: &str| -> [Option<Amount<'a>>; 2] {
            let s = resources.get(section);
            ["cpu", "memory"].map(|r| s.and_then(|s| s.get(r)).map(Amount::of_value))
        };
        ResourcesView { requests: amounts("requests"), limits: amounts("limits") }
    }
}

/// What the rules read of a spec, from either parse.
pub struct SpecView<'a> {
    image: Option<&'a str>,
    transport: Option<&'a str>,
    resources: Option<ResourcesView<'a>>,
    volumes: usize,
    pod_template: Option<&'a Value>,
    /// Presence of each of REMOVED_FIELDS, in its order.
    removed: [bool; REMOVED_FIELDS.len()],
}

impl<'a> SpecView<'a> {
    /// None when the spec is not an object.
    fn of_value(spec: &'a Value) -> Option<Self> {
        let map = spec.as_object()?;
        Some(Self {
            image: map.get("image").and_then(Value::as_str),
            transport: map.get("transport").and_then(Value::as_str),
            resources: map.get("resources").map(ResourcesView::of_value),
            volumes: map.get("volumes").and_then(Value::as_array).map_or(0, Vec::len),
            pod_template: map.get("podTemplateSpec"),
            removed: std::array::from_fn(|i| map.contains_key(REMOVED_FIELDS[i].0)),
        })
    }
}

#[derive(serde::Deserialize)]
struct TypedMeta {
    /// Present at all (even null) means the object is being deleted, as in the Value path.
    #[serde(rename = "deletionTimestamp", default, deserialize_with = "present")]
    deleting: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// The validating path for well-formed reviews of MCPServers. None sends the request
/// to the Value path, which words every malformed case.
fn validate_typed<'a>(body: &'a [u8], facts: &Facts) -> Option<Outcome<'a>> {
    // One UTF-8 check of the whole body instead of one per string.
    let text = std::str::from_utf8(body).ok()?;
    let review: TypedReview = serde_json::from_str(text).ok()?;
    let r = review.request;
    let namespace = r.namespace.unwrap_or_default();
    if r.uid.is_empty() || r.kind.kind != "MCPServer" || r.kind.group != crate::api::GROUP || namespace.is_empty() {
        return None;
    }
    let operation = operation_label(&r.operation);
    let api_version = answer_version(review.api_version.as_deref());
    let warnings = warnings_for(&r.kind.version);
    let (allowed, reason, status) = if never_reviewed(operation) {
        (true, "allowed", None)
    } else {
        let (deleting, unchanged, spec) = match r.object? {
            ObjectRead::Created { deleting, spec } => (deleting, false, spec),
            ObjectRead::Text(object) => {
                let unchanged = r.old_object.is_some_and(|old| same_spec(old.spec, object.spec));
                let spec = match object.spec {
                    Some(raw) if raw.get().starts_with('{') => Some(serde_json::from_str::<Box<TypedSpec>>(raw.get()).ok()?),
                    _ => None,
                };
                (object.metadata.is_some_and(|m| m.deleting), unchanged, spec)
            }
        };
        let view = spec.as_deref().map(TypedSpec::view);
        verdict(operation, &namespace, view.as_ref(), unchanged, deleting, facts)
    };
    Some(Outcome {
        response: response(api_version, r.uid, allowed, status, None, &warnings),
        allowed,
        reason,
        namespace,
        operation,
    })
}

/// Whether two specs (as sent; None when absent) are equal as JSON. The API server
/// writes both the same way, so equal specs are almost always equal text; anything
/// else is compared as parsed values.
fn same_spec(old: Option<&RawValue>, new: Option<&RawValue>) -> bool {
    match (old, new) {
        (None, None) => true,
        (Some(a), Some(b)) if a.get() == b.get() => true,
        (Some(a), Some(b)) => {
            let parse = |r: &RawValue| serde_json::from_str::<Value>(r.get()).ok();
            parse(a).is_some_and(|a| Some(a) == parse(b))
        }
        _ => false,
    }
}

fn response<'a>(api_version: &'static str, uid: Cow<'a, str>, allowed: bool, status: Option<(u16, &'static str, String)>, patch: Option<String>, warnings: &[String]) -> Answer<'a> {
    Answer {
        api_version,
        kind: "AdmissionReview",
        response: AnswerBody {
            uid,
            allowed,
            status: status.map(|(code, reason, message)| AnswerStatus { code, reason, message, status: "Failure" }),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: warnings.to_vec(),
        },
    }
}

/// Defaults filled in by the mutating webhook; a field the user set is never changed.
pub fn apply_defaults(object: &Value, namespace: &str, rules: &Rules) -> Value {
    let mut obj = object.clone();
    if !obj.get("spec").is_some_and(Value::is_object) {
        return obj;
    }
    let spec = &mut obj["spec"];
    set_if_absent(spec, "transport", json!("stdio"));
    set_if_absent(spec, "proxyMode", json!("streamable-http"));
    set_if_absent(spec, "proxyPort", json!(8080));
    if spec["transport"] != "stdio" {
        let port = spec["proxyPort"].clone();
        set_if_absent(spec, "mcpPort", port);
    }
    if let Some(rp) = &rules.proxy_resources {
        if !spec.get("resources").is_some_and(Value::is_object) {
            spec["resources"] = json!({});
        }
        default_resources(&mut spec["resources"], rp);
        if spec["resources"].as_object().is_some_and(|m| m.is_empty()) {
            spec.as_object_mut().map(|m| m.remove("resources"));
        }
    }
    if let Some(rp) = &rules.mcp_resources
        && (!rp.defaults.requests.is_empty() || !rp.defaults.limits.is_empty())
    {
        if !spec.get("podTemplateSpec").is_some_and(Value::is_object) {
            spec["podTemplateSpec"] = json!({});
        }
        let pts = &mut spec["podTemplateSpec"];
        if !pts.get("spec").is_some_and(Value::is_object) {
            pts["spec"] = json!({});
        }
        if !pts["spec"].get("containers").is_some_and(Value::is_array) {
            pts["spec"]["containers"] = json!([]);
        }
        let containers = pts["spec"]["containers"].as_array_mut().expect("array");
        if !containers.iter().any(|c| c["name"] == MCP_CONTAINER) {
            containers.push(json!({"name": MCP_CONTAINER}));
        }
        for c in containers.iter_mut().filter(|c| c["name"] == MCP_CONTAINER) {
            if !c.get("resources").is_some_and(Value::is_object) {
                c["resources"] = json!({});
            }
            default_resources(&mut c["resources"], rp);
        }
    }
    let team = rules.team.clone().unwrap_or_else(|| namespace.to_string());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if !obj["metadata"].get("labels").is_some_and(Value::is_object) {
        obj["metadata"]["labels"] = json!({});
    }
    set_if_absent(&mut obj["metadata"]["labels"], TEAM_LABEL, json!(team));
    obj
}

impl super::policy::ResourceAmounts {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

fn default_resources(resources: &mut Value, rp: &ResourcePolicy) {
    for (section, amounts) in [("requests", &rp.defaults.requests), ("limits", &rp.defaults.limits)] {
        if amounts.is_empty() {
            continue;
        }
        if !resources.get(section).is_some_and(Value::is_object) {
            resources[section] = json!({});
        }
        if let Some(cpu) = &amounts.cpu {
            set_if_absent(&mut resources[section], "cpu", json!(cpu));
        }
        if let Some(mem) = &amounts.memory {
            set_if_absent(&mut resources[section], "memory", json!(mem));
        }
    }
}

fn set_if_absent(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let absent = map.get(key).is_none_or(|v| v.is_null() || v.as_str() == Some(""));
        if absent {
            map.insert(key.to_string(), value);
        }
    }
}

/// Every policy violation of `object` in `namespace`, all at once.
pub fn validate(spec: Option<&SpecView>, namespace: &str, creating: bool, facts: &Facts) -> Vec<Violation> {
    let mut out = Vec::new();
    let policy = facts.policy;
    let in_scope = facts.scope.allows(namespace);
    let in_policy = policy.allowed_namespaces.is_empty() || policy.allowed_namespaces.iter().any(|n| n == namespace);
    if !in_scope || !in_policy {
        let allowed: Vec<String> = match facts.scope {
            Scope::Namespaces(list) if policy.allowed_namespaces.is_empty() => list.clone(),
            Scope::Namespaces(list) => list.iter().filter(|n| policy.allowed_namespaces.contains(n)).cloned().collect(),
            Scope::Cluster => policy.allowed_namespaces.clone(),
        };
        let ask = if policy.contact.is_empty() { "your platform team".to_string() } else { policy.contact.clone() };
        out.push(forbidden(
            "metadata.namespace",
            "namespace",
            format!("namespace {namespace:?} may not hold MCPServers (allowed: {}); ask {ask} to allow it", allowed.join(", ")),
        ));
        return out;
    }
    let rules = policy.rules_for(namespace);
    let Some(spec) = spec else {
        out.push(invalid("spec", "spec", "spec must be an object".into()));
        return out;
    };

    for ((old, new), present) in REMOVED_FIELDS.iter().zip(spec.removed) {
        if present {
            out.push(forbidden(format!("spec.{old}"), "removed-field", format!("this field was removed; use {new}")));
        }
    }

    match spec.image {
        None | Some("") => out.push(Violation { field: "spec.image".into(), kind: "Required value", detail: "an image is required".into(), rule: "image" }),
        Some(image) => match ImageRef::parse(image) {
            Err(e) => out.push(invalid("spec.image", "image", e)),
            Ok(img) => {
                if let Some(allowed) = &rules.allowed_registries {
                    let ok = rules.registry_rules().iter().any(|r| r.matches(&img));
                    if !ok {
                        out.push(forbidden(
                            "spec.image",
                            "registry",
                            format!(
                                "registry {:?} is not allowed in namespace {namespace:?} (allowed: {})",
                                img.registry,
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
            }
        },
    }

    let transport = spec.transport.unwrap_or("stdio");
    if let Some(allowed) = &rules.allowed_transports
        && !allowed.iter().any(|t| t == transport)
    {
        out.push(forbidden("spec.transport", "transport", format!("transport {transport:?} is not allowed in namespace {namespace:?} (allowed: {})", allowed.join(", "))));
    }

    if creating && let Some(max) = rules.max_mcp_servers {
        let have = (facts.server_count)(namespace);
        if have >= max as usize {
            out.push(forbidden("metadata.namespace", "quota", format!("namespace {namespace:?} already has {have} MCPServers, the most it may hold is {max}")));
        }
    }

    if let Some(rp) = &rules.proxy_resources
        && let Some(res) = &spec.resources
    {
        check_ceiling(res, rp, "spec.resources", &mut out);
    }

    if spec.volumes > 0 && !rules.allow_host_path_volumes.unwrap_or(false) {
        out.push(forbidden("spec.volumes", "host-path", format!("hostPath volumes are not allowed in namespace {namespace:?}")));
    }

    if let Some(pts) = spec.pod_template {
        check_pod_template(pts, &rules, &mut out);
    }
    out
}

fn check_ceiling(resources: &ResourcesView, rp: &ResourcePolicy, path: &str, out: &mut Vec<Violation>) {
    for (section, amounts) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for ((res, max), amount) in [("cpu", &rp.max.cpu), ("memory", &rp.max.memory)].into_iter().zip(amounts) {
            let Some(amount) = amount else { continue };
            // The field path is built only for a violation: most requests have none.
            let field = || format!("{path}.{section}.{res}");
            let number;
            let text = match amount {
                Amount::Text(s) => s.as_ref(),
                Amount::Number(n) => {
                    number = n.to_string();
                    number.as_str()
                }
                Amount::Other => {
                    out.push(invalid(field(), "resources", "must be a quantity such as \"500m\" or \"128Mi\"".into()));
                    continue;
                }
            };
            match parse_milli(text) {
                Err(e) => out.push(invalid(field(), "resources", e)),
                Ok(v) => {
                    if let Some(max) = max
                        && let Ok(m) = parse_milli(max)
                        && v > m
                    {
                        out.push(forbidden(field(), "resources", format!("{text} exceeds the namespace maximum of {max}")));
                    }
                }
            }
        }
    }
}

fn check_pod_template(pts: &Value, rules: &Rules, out: &mut Vec<Violation>) {
    let base = "spec.podTemplateSpec.spec";
    let Some(spec) = pts.get("spec") else { return };
    let sec = rules.pod_security.clone().unwrap_or_default();
    if !sec.allow_host_namespaces {
        for key in ["hostNetwork", "hostPID", "hostIPC", "hostUsers"] {
            let on = spec.get(key).and_then(Value::as_bool).unwrap_or(false);
            // hostUsers defaults to true; only hostNetwork/PID/IPC set to true share a host namespace.
            if on && key != "hostUsers" {
                out.push(forbidden(format!("{base}.{key}"), "pod-security", "host namespaces are not allowed".into()));
            }
        }
    }
    if !sec.allow_host_path
        && let Some(vols) = spec.get("volumes").and_then(Value::as_array)
    {
        for (i, v) in vols.iter().enumerate() {
            if v.get("hostPath").is_some() {
                out.push(forbidden(format!("{base}.volumes[{i}].hostPath"), "pod-security", "hostPath volumes are not allowed".into()));
            }
        }
    }
    if !sec.allow_run_as_root {
        check_run_as_root(spec.get("securityContext"), &format!("{base}.securityContext"), out);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = spec.get(list).and_then(Value::as_array) else { continue };
        for (i, c) in containers.iter().enumerate() {
            let path = format!("{base}.{list}[{i}]");
            let sc = c.get("securityContext");
            if !sec.allow_privileged && sc.and_then(|s| s.get("privileged")).and_then(Value::as_bool) == Some(true) {
                out.push(forbidden(format!("{path}.securityContext.privileged"), "pod-security", "privileged containers are not allowed".into()));
            }
            if !sec.allow_privileged && sc.and_then(|s| s.get("allowPrivilegeEscalation")).and_then(Value::as_bool) == Some(true) {
                out.push(forbidden(format!("{path}.securityContext.allowPrivilegeEscalation"), "pod-security", "privilege escalation is not allowed".into()));
            }
            if !sec.allow_added_capabilities
                && sc.and_then(|s| s.pointer("/capabilities/add")).and_then(Value::as_array).is_some_and(|a| !a.is_empty())
            {
                out.push(forbidden(format!("{path}.securityContext.capabilities.add"), "pod-security", "adding capabilities is not allowed".into()));
            }
            if !sec.allow_run_as_root {
                check_run_as_root(sc, &format!("{path}.securityContext"), out);
            }
            if list == "containers"
                && c.get("name").and_then(Value::as_str) == Some(MCP_CONTAINER)
                && let (Some(rp), Some(res)) = (&rules.mcp_resources, c.get("resources"))
            {
                check_ceiling(&ResourcesView::of_value(res), rp, &format!("{path}.resources"), out);
            }
        }
    }
}

fn check_run_as_root(sc: Option<&Value>, path: &str, out: &mut Vec<Violation>) {
    let Some(sc) = sc else { return };
    if sc.get("runAsUser").and_then(Value::as_i64) == Some(0) {
        out.push(forbidden(format!("{path}.runAsUser"), "pod-security", "running as root (UID 0) is not allowed".into()));
    }
    if sc.get("runAsNonRoot").and_then(Value::as_bool) == Some(false) {
        out.push(forbidden(format!("{path}.runAsNonRoot"), "pod-security", "runAsNonRoot may not be false".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})).unwrap()
    }

    /// The review as the API server writes it: the request's fields in the order of
    /// its AdmissionRequest type (json! sorts keys, which puts `object` first).
    fn as_sent(body: &[u8]) -> Option<Vec<u8>> {
        const ORDER: [&str; 15] = ["uid", "kind", "resource", "subResource", "requestKind", "requestResource", "requestSubResource",
            "name", "namespace", "operation", "userInfo", "object", "oldObject", "dryRun", "options"];
        let review: Value = serde_json::from_slice(body).ok()?;
        let fields = review.get("request")?.as_object()?;
        let mut keys: Vec<&String> = fields.keys().filter(|k| !ORDER.contains(&k.as_str())).collect();
        keys.splice(0..0, ORDER.iter().filter_map(|k| fields.get_key_value(*k).map(|(k, _)| k)));
        let request = keys.iter().map(|k| format!("{}:{}", Value::from(k.as_str()), fields[k.as_str()])).collect::<Vec<_>>().join(",");
        Some(format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{request}}}}}"#).into_bytes())
    }

    fn req(op: &str, version: &str, object: Value, old: Value) -> Value {
        json!({
            "uid": "u-1", "operation": op, "namespace": "team-a", "userInfo": {"username": "alice"},
            "kind": {"group": "toolhive.stacklok.dev", "version": version, "kind": "MCPServer"},
            "object": object, "oldObject": old
        })
    }

    /// The typed fast path answers exactly as the JSON-tree path for every shape it
    /// accepts, and hands everything else over.
    #[test]
    fn typed_validation_matches_the_value_path() {
        let policy = TenancyPolicy::from_text(
            "contact: ops\ndefaults:\n  allowedRegistries: [ghcr.io/acme]\n  maxMCPServers: 1\n  proxyResources: {max: {cpu: '1'}}\n",
        )
        .unwrap();
        let counts = |_: &str| 1usize;
        let facts = Facts { policy: &policy, scope: &Scope::Cluster, server_count: &counts };
        let ok = json!({"metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}, "spec": {"image": "ghcr.io/acme/x"}});
        let bad = json!({"metadata": {"name": "a"}, "spec": {"image": "docker.io/x", "port": 1, "resources": {"limits": {"cpu": "2"}}}});
        let deleting = json!({"metadata": {"name": "a", "deletionTimestamp": null}, "spec": {"image": "docker.io/x"}});
        let bodies = [
            envelope(req("CREATE", "v1beta1", ok.clone(), Value::Null)),
            envelope(req("UPDATE", "v1beta1", bad.clone(), Value::Null)),
            envelope(req("UPDATE", "v1beta1", bad.clone(), bad.clone())),
            envelope(req("UPDATE", "v1beta1", bad.clone(), ok.clone())),
            envelope(req("UPDATE", "v1alpha1", deleting, ok.clone())),
            envelope(req("CREATE", "v1beta1", json!({"spec": null}), Value::Null)),
            envelope(req("UPDATE", "v1beta1", json!({"spec": 5}), json!({}))),
            envelope(req("DELETE", "v1beta1", Value::Null, ok.clone())),
            envelope(req("CREATE", "v1beta1", json!("not an object"), Value::Null)),
            envelope(json!({"uid": 7, "operation": "CREATE"})),
            b"{not json".to_vec(),
            // Typed path: every removed field, volumes of any shape, a pod template,
            // an UPDATE whose spec differs only in key order, specs absent on both sides.
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "port": 1, "targetPort": null,
                "tools": [], "oidcConfig": {}, "telemetry": "x", "volumes": [{"hostPath": "/"}, 2]}}), Value::Null)),
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "volumes": {"a": [1]},
                "podTemplateSpec": {"spec": {"hostPID": true, "containers": [{"name": "mcp", "securityContext": {"privileged": true}}]}}}}), Value::Null)),
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "volumes": "none", "transport": null}}), Value::Null)),
            envelope(req("UPDATE", "v1beta1", json!({"spec": {"image": "docker.io/x", "transport": "sse"}}),
                serde_json::from_str(r#"{"spec": {"transport": "sse", "image": "docker.io/x"}}"#).unwrap())),
            envelope(req("UPDATE", "v1beta1", json!({"metadata": {}}), json!({"metadata": {"labels": {}}}))),
            // Resources of every shape the ceilings read: null, numbers, an escaped
            // string, a map where a quantity belongs, a null section.
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "resources": {
                "requests": {"cpu": null, "memory": 5}, "limits": {"cpu": 2.5, "memory": {"x": 1}}}}}), Value::Null)),
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "resources": {
                "requests": null, "limits": {"cpu": "1500m", "memory": "1Gi\u{1}"}, "claims": [1]}}}), Value::Null)),
            // Value path: types the rules do not expect, a body that is not UTF-8.
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "resources": {"requests": "1"}}}), Value::Null)),
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": 5, "port": 1}}), Value::Null)),
            envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x", "transport": ["sse"]}}), Value::Null)),
            [&envelope(req("CREATE", "v1beta1", json!({"spec": {"image": "ghcr.io/acme/x"}}), Value::Null))[..], b"\xff"].concat(),
        ];
        let mut typed = 0;
        for body in &bodies {
            if validate_typed(body, &facts).is_some() {
                typed += 1;
            }
            assert_eq!(review(body, Mode::Validate, &facts), review_values(body, Mode::Validate, &facts), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(typed, 15, "the well-formed reviews take the typed path");
        // In the API server's field order a CREATE's spec is read in the one pass.
        let mut read_in_one_pass = 0;
        for body in bodies.iter().filter_map(|b| as_sent(b)) {
            let text = std::str::from_utf8(&body).unwrap();
            if let Ok(TypedReview { request: TypedRequest { object: Some(ObjectRead::Created { .. }), uid, operation, .. }, .. }) = serde_json::from_str(text) {
                assert!(matches!((uid, operation), (Cow::Borrowed(_), Cow::Borrowed(_))), "borrowed from the body, not copied");
                read_in_one_pass += 1;
            }
            assert_eq!(review(&body, Mode::Validate, &facts), review_values(&body, Mode::Validate, &facts), "{text}");
        }
        assert_eq!(read_in_one_pass, 7, "the well-formed CREATEs with an object are read in one pass");
        let denied = review(&bodies[1], Mode::Validate, &facts);
        assert!(!denied.allowed);
        let message = denied.response.message().unwrap();
        assert!(message.starts_with("3 problems"), "{message}");
        for field in ["spec.port", "spec.image", "spec.resources.limits.cpu"] {
            assert!(message.contains(field), "{field} in {message}");
        }
    }
}
