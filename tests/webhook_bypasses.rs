//! Attempts a determined tenant makes to get past the validating webhook, each with the
//! field path its denial must name; and a property test: whatever arrives, the answer
//! is a well-formed AdmissionReview, never a crash.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use toolhive_operator::config::Scope;
use toolhive_operator::metrics::Metrics;
use toolhive_operator::webhook::{self, VALIDATE_PATH, policy::TenancyPolicy};
use tower::ServiceExt;

const POLICY: &str = r##"
contact: "#platform"
defaults:
  allowedRegistries: [ghcr.io/acme]
  mcpResources: {max: {cpu: "1", memory: 1Gi}}
"##;

fn app() -> axum::Router {
    let policy = TenancyPolicy::from_text(POLICY).unwrap();
    webhook::router(webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(|_: &str| 0), Metrics::default()))
}

fn review(spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1", "operation": "CREATE", "namespace": "team-a", "userInfo": {"username": "tenant"},
            "kind": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "kind": "MCPServer"},
            "resource": {"group": "toolhive.stacklok.dev", "version": "v1beta1", "resource": "mcpservers"},
            "object": {"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "metadata": {"name": "s"}, "spec": spec}
        }
    })
}

async fn call(body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::post(VALIDATE_PATH).header("content-type", "application/json").body(Body::from(body)).unwrap();
    let res = app().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A spec whose podTemplateSpec.spec is `pod`.
fn with_pod(pod: Value) -> Value {
    json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": pod}})
}

fn container(extra: Value) -> Value {
    let mut c = json!({"name": "mcp"});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// (what is tried, the spec, a fragment the denial must contain).
fn attempts() -> Vec<(&'static str, Value, String)> {
    let pod = "spec.podTemplateSpec.spec";
    let mut out: Vec<(&'static str, Value, String)> = vec![
        // Field names in another case: honoured by the runner's Go decoder.
        ("HostNetwork", with_pod(json!({"HostNetwork": true})), format!("{pod}.HostNetwork: Invalid value: unknown field")),
        ("hostpid", with_pod(json!({"hostpid": true})), format!("{pod}.hostpid: Invalid value")),
        ("HostIPC", with_pod(json!({"HostIPC": true})), format!("{pod}.HostIPC: Invalid value")),
        (
            "Privileged",
            with_pod(json!({"containers": [container(json!({"securityContext": {"Privileged": true}}))]})),
            format!("{pod}.containers[0].securityContext.Privileged"),
        ),
        ("SecurityContext", with_pod(json!({"SecurityContext": {"runAsUser": 0}})), format!("{pod}.SecurityContext")),
        (
            "Volumes HostPath",
            with_pod(json!({"volumes": [{"name": "h", "HostPath": {"path": "/"}}]})),
            format!("{pod}.volumes[0].HostPath"),
        ),
        ("Volumes", with_pod(json!({"Volumes": [{"name": "h", "hostPath": {"path": "/"}}]})), format!("{pod}.Volumes")),
        (
            "capabilities.Add",
            with_pod(json!({"containers": [container(json!({"securityContext": {"capabilities": {"Add": ["SYS_ADMIN"]}}}))]})),
            format!("{pod}.containers[0].securityContext.capabilities.Add"),
        ),
        (
            "InitContainers",
            with_pod(json!({"InitContainers": [{"name": "i", "image": "docker.io/evil"}]})),
            format!("{pod}.InitContainers"),
        ),
        (
            "Limits",
            with_pod(json!({"containers": [container(json!({"resources": {"Limits": {"cpu": "64"}}}))]})),
            format!("{pod}.containers[0].resources.Limits"),
        ),
        ("Containers", with_pod(json!({"Containers": [{"name": "x", "image": "docker.io/evil"}]})), format!("{pod}.Containers")),
        (
            "metadata Labels",
            json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"metadata": {"Labels": {"a": "b"}}}}),
            "spec.podTemplateSpec.metadata.Labels".into(),
        ),
        ("runAsuser", with_pod(json!({"securityContext": {"runAsuser": 0}})), format!("{pod}.securityContext.runAsuser")),
        // Images of every container, not only spec.image.
        (
            "sidecar image",
            with_pod(json!({"containers": [container(json!({})), {"name": "side", "image": "docker.io/library/alpine"}]})),
            format!("{pod}.containers[1].image: Forbidden: registry \"docker.io\""),
        ),
        (
            "initContainer image",
            with_pod(json!({"initContainers": [{"name": "init", "image": "quay.io/x/y"}]})),
            format!("{pod}.initContainers[0].image: Forbidden"),
        ),
        (
            "ephemeral image",
            with_pod(json!({"ephemeralContainers": [{"name": "debug", "image": "docker.io/busybox"}]})),
            format!("{pod}.ephemeralContainers[0].image: Forbidden"),
        ),
        (
            "mcp image override",
            with_pod(json!({"containers": [container(json!({"image": "evil.example.com/x"}))]})),
            format!("{pod}.containers[0].image: Forbidden"),
        ),
        (
            "lookalike registry",
            with_pod(json!({"containers": [container(json!({"image": "ghcr.io.evil.com/acme/x"}))]})),
            format!("{pod}.containers[0].image: Forbidden"),
        ),
        (
            "container image path traversal",
            with_pod(json!({"containers": [container(json!({"image": "ghcr.io/acme/../x"}))]})),
            format!("{pod}.containers[0].image: Invalid value"),
        ),
        // Pod features in their exact spelling.
        ("hostNetwork", with_pod(json!({"hostNetwork": true})), format!("{pod}.hostNetwork: Forbidden")),
        ("hostPID", with_pod(json!({"hostPID": true})), format!("{pod}.hostPID: Forbidden")),
        (
            "privileged",
            with_pod(json!({"containers": [container(json!({"securityContext": {"privileged": true}}))]})),
            format!("{pod}.containers[0].securityContext.privileged: Forbidden"),
        ),
        (
            "privileged init",
            with_pod(json!({"initContainers": [{"name": "i", "securityContext": {"privileged": true}}]})),
            format!("{pod}.initContainers[0].securityContext.privileged: Forbidden"),
        ),
        (
            "escalation",
            with_pod(json!({"containers": [container(json!({"securityContext": {"allowPrivilegeEscalation": true}}))]})),
            "allowPrivilegeEscalation: Forbidden".into(),
        ),
        ("root user", with_pod(json!({"securityContext": {"runAsUser": 0}})), format!("{pod}.securityContext.runAsUser: Forbidden")),
        (
            "root in container",
            with_pod(json!({"containers": [container(json!({"securityContext": {"runAsUser": 0}}))]})),
            format!("{pod}.containers[0].securityContext.runAsUser: Forbidden"),
        ),
        ("runAsNonRoot false", with_pod(json!({"securityContext": {"runAsNonRoot": false}})), "runAsNonRoot: Forbidden".into()),
        (
            "hostPath",
            with_pod(json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})),
            format!("{pod}.volumes[0].hostPath: Forbidden"),
        ),
        (
            "add capability",
            with_pod(json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}))]})),
            "capabilities.add: Forbidden".into(),
        ),
        (
            "runAsUser as text",
            with_pod(json!({"securityContext": {"runAsUser": "0"}})),
            format!("{pod}.securityContext.runAsUser: Invalid value"),
        ),
        ("hostNetwork as text", with_pod(json!({"hostNetwork": "true"})), format!("{pod}.hostNetwork: Invalid value")),
        (
            "mcp cpu above the ceiling",
            with_pod(json!({"containers": [container(json!({"resources": {"limits": {"cpu": "2"}}}))]})),
            "resources.limits.cpu: Forbidden: 2 exceeds".into(),
        ),
        (
            "mcp memory in exa",
            with_pod(json!({"containers": [container(json!({"resources": {"requests": {"memory": "1Ei"}}}))]})),
            "resources.requests.memory: Forbidden".into(),
        ),
        (
            "mcp cpu as exponent",
            with_pod(json!({"containers": [container(json!({"resources": {"limits": {"cpu": "1e1"}}}))]})),
            "resources.limits.cpu: Forbidden".into(),
        ),
        // ServiceAccounts the operator manages.
        (
            "runner account",
            json!({"image": "ghcr.io/acme/tool", "serviceAccount": "other-proxy-runner"}),
            "spec.serviceAccount: Forbidden".into(),
        ),
        ("deprecated account alias", with_pod(json!({"serviceAccount": "other-proxy-runner"})), format!("{pod}.serviceAccount: Forbidden")),
        // Images.
        ("unlisted registry", json!({"image": "docker.io/library/redis"}), "spec.image: Forbidden: registry \"docker.io\"".into()),
        ("lookalike host", json!({"image": "ghcr.io.evil.com/acme/x"}), "spec.image: Forbidden".into()),
        ("prefix, not a segment", json!({"image": "ghcr.io/acmecorp/x"}), "spec.image: Forbidden".into()),
        ("dot segment", json!({"image": "ghcr.io/acme/./x"}), "spec.image: Invalid value".into()),
        ("dot-dot segment", json!({"image": "ghcr.io/acme/../x"}), "spec.image: Invalid value".into()),
        ("dash tag", json!({"image": "ghcr.io/acme/x:-latest"}), "spec.image: Invalid value".into()),
        ("long component", json!({"image": format!("ghcr.io/acme/{}", "x".repeat(260))}), "spec.image: Invalid value".into()),
        ("short digest", json!({"image": "ghcr.io/acme/x@sha256:abc"}), "spec.image: Invalid value".into()),
        ("uppercase path", json!({"image": "ghcr.io/Acme/x"}), "spec.image: Invalid value".into()),
        ("space", json!({"image": "ghcr.io/acme/x y"}), "spec.image: Invalid value".into()),
        ("no image", json!({"image": ""}), "spec.image: Required value".into()),
        // Sizes.
        (
            "huge pod template",
            with_pod(json!({"containers": [container(json!({"args": vec!["x".repeat(1024); 200]}))]})),
            "spec.podTemplateSpec: Too long: may be at most 131072 bytes".into(),
        ),
        (
            "huge spec",
            json!({"image": "ghcr.io/acme/tool", "args": vec!["y".repeat(1024); 600]}),
            "spec: Too long: may be at most 524288 bytes".into(),
        ),
        // Removed fields.
        ("removed oidcConfig", json!({"image": "ghcr.io/acme/tool", "oidcConfig": {}}), "spec.oidcConfig: Forbidden".into()),
        ("removed port", json!({"image": "ghcr.io/acme/tool", "port": 1}), "spec.port: Forbidden".into()),
    ];
    // Every host namespace and volume in another case, too.
    for key in ["HOSTNETWORK", "hostnetwork", "hostIpc", "HostUsers", "ShareProcessNamespace"] {
        out.push(("case variant", with_pod(json!({key: true})), format!("{pod}.{key}: Invalid value")));
    }
    out
}

#[tokio::test]
async fn every_bypass_attempt_is_denied_naming_its_field() {
    let attempts = attempts();
    for (what, spec, expected) in &attempts {
        let (code, out) = call(review(spec.clone()).to_string().into_bytes()).await;
        assert_eq!(code, StatusCode::OK, "{what}");
        let response = &out["response"];
        assert_eq!(response["allowed"], false, "{what} must be denied: {out}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected.as_str()), "{what}: expected {expected:?} in {message:?}");
    }
    println!("{} bypass attempts, all denied", attempts.len());
}

#[tokio::test]
async fn what_the_policy_allows_stays_allowed() {
    for spec in [
        json!({"image": "ghcr.io/acme/tool:1.0"}),
        json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": {"containers": [{"name": "mcp", "image": "ghcr.io/acme/tool:2", "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}}}]}}}),
        json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"metadata": {"labels": {"a": "b"}}, "spec": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k", "operator": "Exists"}]}}}),
        json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000}, "containers": [{"name": "mcp", "env": [{"name": "A", "value": "b"}]}]}}}),
        json!({"image": "ghcr.io/acme/tool", "serviceAccount": "my-tools"}),
    ] {
        let (_, out) = call(review(spec.clone()).to_string().into_bytes()).await;
        assert_eq!(out["response"]["allowed"], true, "{spec}: {out}");
    }
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-zA-Z0-9 ./:@_-]{0,12}".prop_map(Value::from),
        prop_oneof![Just("hostNetwork"), Just("containers"), Just("image"), Just("securityContext"), Just("1Ei"), Just("mcp")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,10}",
                    Just("spec".to_string()),
                    Just("containers".to_string()),
                    Just("securityContext".to_string()),
                    Just("image".to_string()),
                    Just("resources".to_string()),
                    Just("limits".to_string()),
                    Just("cpu".to_string()),
                    Just("podTemplateSpec".to_string())
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A spec, a pod template or a whole request of any shape: the webhook answers
    /// with a well-formed AdmissionReview (or a plain 400 for a body with no uid) and
    /// never fails internally.
    #[test]
    fn any_input_gets_a_well_formed_answer(spec in json_value(), template in json_value(), request in json_value()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut with_template = json!({"image": "ghcr.io/acme/tool"});
        with_template["podTemplateSpec"] = template;
        for body in [review(spec.clone()), review(with_template), json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})] {
            let (code, out) = rt.block_on(call(body.to_string().into_bytes()));
            prop_assert!(code == StatusCode::OK || code == StatusCode::BAD_REQUEST, "status {code} for {body}");
            prop_assert_eq!(&out["kind"], "AdmissionReview", "{}", out);
            prop_assert!(out["response"]["allowed"].is_boolean(), "{}", out);
            if code == StatusCode::OK {
                prop_assert_eq!(&out["response"]["uid"], &body["request"]["uid"]);
            }
        }
    }
}
