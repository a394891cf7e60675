//! Attempts a determined tenant makes to get past the validating webhook, each with the
//! field path its denial must name; and a property test: whatever arrives, the answer
//! is a well-formed AdmissionReview, never a crash.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use toolhive_operator::runtime::metrics::Metrics;
use toolhive_operator::shared::config::Scope;
use toolhive_operator::webhook::{self, VALIDATE_PATH, policy::TenancyPolicy};
use tower::ServiceExt;

const POLICY: &str = r##"
contact: "#platform"
defaults:
  allowedRegistries: [ghcr.io/acme]
  mcpResources: {max: {cpu: "1", memory: 1Gi}}
namespaces:
  team-caps:
    podSecurity: {allowAddedCapabilities: true}
  team-restricted:
    podSecurityStandard: restricted
    podSecurity: {allowAddedCapabilities: true, allowRunAsRoot: true}
"##;

fn app() -> axum::Router {
    let policy = TenancyPolicy::from_text(POLICY).unwrap();
    webhook::router(webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(|_: &str| 0), Metrics::default()))
}

fn review(spec: Value) -> Value {
    review_in("team-a", spec)
}

fn review_in(namespace: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1", "operation": "CREATE", "namespace": namespace, "userInfo": {"username": "tenant"},
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
        // Fields this operator does not implement: refused, never accepted and ignored.
        (
            "host path volumes not carried out",
            json!({"image": "ghcr.io/acme/tool", "volumes": [{"name": "root", "hostPath": "/", "mountPath": "/host"}]}),
            "spec.volumes: Forbidden".into(),
        ),
        // A refill period the runner could not read would keep the proxy from starting.
        (
            "rate limit refill period that is not a duration",
            json!({"image": "ghcr.io/acme/tool", "sessionStorage": {"provider": "redis", "address": "redis:6379"},
                   "rateLimiting": {"tools": [{"name": "t", "shared": {"maxTokens": 1, "refillPeriod": "1 day"}}]}}),
            "spec.rateLimiting.tools[0].shared.refillPeriod: Invalid value".into(),
        ),
    ];
    // The baseline Pod Security Standard (the default level), every control.
    let c0 = format!("{pod}.containers[0]");
    for (what, pod_spec, field) in [
        (
            "host port",
            json!({"containers": [container(json!({"ports": [{"containerPort": 80, "hostPort": 80}]}))]}),
            format!("{c0}.ports[0].hostPort"),
        ),
        (
            "seccomp unconfined (pod)",
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            format!("{pod}.securityContext.seccompProfile.type"),
        ),
        (
            "seccomp unconfined (container)",
            json!({"containers": [container(json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}))]}),
            format!("{c0}.securityContext.seccompProfile.type"),
        ),
        (
            "apparmor unconfined (pod)",
            json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
            format!("{pod}.securityContext.appArmorProfile.type"),
        ),
        (
            "apparmor unconfined (container)",
            json!({"containers": [container(json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}))]}),
            format!("{c0}.securityContext.appArmorProfile.type"),
        ),
        (
            "proc mount",
            json!({"containers": [container(json!({"securityContext": {"procMount": "Unmasked"}}))]}),
            format!("{c0}.securityContext.procMount"),
        ),
        (
            "unsafe sysctl",
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
            format!("{pod}.securityContext.sysctls[0].name"),
        ),
        (
            "selinux type",
            json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
            format!("{pod}.securityContext.seLinuxOptions.type"),
        ),
        (
            "selinux user",
            json!({"containers": [container(json!({"securityContext": {"seLinuxOptions": {"user": "system_u"}}}))]}),
            format!("{c0}.securityContext.seLinuxOptions.user"),
        ),
        (
            "selinux role",
            json!({"securityContext": {"seLinuxOptions": {"role": "sysadm_r"}}}),
            format!("{pod}.securityContext.seLinuxOptions.role"),
        ),
        (
            "windows host process (pod)",
            json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}),
            format!("{pod}.securityContext.windowsOptions.hostProcess"),
        ),
        (
            "windows host process (container)",
            json!({"containers": [container(json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}))]}),
            format!("{c0}.securityContext.windowsOptions.hostProcess"),
        ),
        (
            "host port in an init container",
            json!({"initContainers": [{"name": "i", "ports": [{"containerPort": 1, "hostPort": 22}]}]}),
            format!("{pod}.initContainers[0].ports[0].hostPort"),
        ),
    ] {
        out.push((what, with_pod(pod_spec), format!("{field}: Forbidden:")));
    }
    // Every host namespace and volume in another case, too.
    for key in ["HOSTNETWORK", "hostnetwork", "hostIpc", "HostUsers", "ShareProcessNamespace"] {
        out.push(("case variant", with_pod(json!({key: true})), format!("{pod}.{key}: Invalid value")));
    }
    out
}

/// Attempts in namespaces whose policy differs: (namespace, what, spec, expected).
fn attempts_elsewhere() -> Vec<(&'static str, &'static str, Value, String)> {
    let pod = "spec.podTemplateSpec.spec";
    let caps = |cap: &str| with_pod(json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": [cap]}}}))]}));
    vec![
        // Capabilities allowed as an exception: still only the baseline ones.
        (
            "team-caps",
            "a capability beyond baseline",
            caps("SYS_ADMIN"),
            format!(
                "{pod}.containers[0].securityContext.capabilities.add[0]: Forbidden: adding the capability SYS_ADMIN is not allowed by the baseline Pod Security Standard"
            ),
        ),
        // Restricted: volume types, capabilities, escalation, seccomp, root even when excepted.
        (
            "team-restricted",
            "an nfs volume",
            with_pod(json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]})),
            format!("{pod}.volumes[0].nfs: Forbidden: a nfs volume is not allowed by the restricted"),
        ),
        (
            "team-restricted",
            "a baseline capability",
            caps("CHOWN"),
            format!("{pod}.containers[0].securityContext.capabilities.add[0]: Forbidden"),
        ),
        (
            "team-restricted",
            "escalation",
            with_pod(json!({"containers": [container(json!({"securityContext": {"allowPrivilegeEscalation": true}}))]})),
            "allowPrivilegeEscalation: Forbidden".into(),
        ),
        (
            "team-restricted",
            "root, excepted but restricted",
            with_pod(json!({"securityContext": {"runAsUser": 0}})),
            format!("{pod}.securityContext.runAsUser: Forbidden: running as UID 0 is not allowed by the restricted"),
        ),
        (
            "team-restricted",
            "seccomp unconfined",
            with_pod(json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})),
            "seccompProfile.type: Forbidden".into(),
        ),
    ]
}

#[tokio::test]
async fn every_bypass_attempt_is_denied_naming_its_field() {
    let attempts: Vec<(&str, &str, Value, String)> =
        attempts().into_iter().map(|(what, spec, expected)| ("team-a", what, spec, expected)).chain(attempts_elsewhere()).collect();
    for (namespace, what, spec, expected) in &attempts {
        let (code, out) = call(review_in(namespace, spec.clone()).to_string().into_bytes()).await;
        assert_eq!(code, StatusCode::OK, "{what}");
        let response = &out["response"];
        assert_eq!(response["allowed"], false, "{what} must be denied: {out}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected.as_str()), "{what} in {namespace}: expected {expected:?} in {message:?}");
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
        json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}], "seLinuxOptions": {"type": "container_t"}}}}}),
    ] {
        let (_, out) = call(review(spec.clone()).to_string().into_bytes()).await;
        assert_eq!(out["response"]["allowed"], true, "{spec}: {out}");
    }
    let net_bind = json!({"image": "ghcr.io/acme/tool", "podTemplateSpec": {"spec": {"volumes": [{"name": "c", "configMap": {"name": "x"}}],
        "containers": [{"name": "mcp", "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}]}}});
    for namespace in ["team-caps", "team-restricted"] {
        let (_, out) = call(review_in(namespace, net_bind.clone()).to_string().into_bytes()).await;
        assert_eq!(out["response"]["allowed"], true, "{namespace}: {out}");
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
