//! The admission router driven in-process (tower `oneshot`): every rule and every
//! malformed input gets a well-formed answer that echoes the request uid.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use toolhive_operator::runtime::metrics::Metrics;
use toolhive_operator::shared::config::Scope;
use toolhive_operator::webhook::{self, MUTATE_PATH, VALIDATE_PATH, policy::TenancyPolicy};
use tower::ServiceExt;

const POLICY: &str = r##"
allowedNamespaces: [team-a, team-b]
contact: "#platform"
defaults:
  allowedRegistries: [ghcr.io/acme, docker.io/library]
  allowedTransports: [stdio, streamable-http]
  maxMCPServers: 2
  proxyResources:
    defaults: {requests: {cpu: 50m, memory: 64Mi}}
    max: {cpu: "1", memory: 512Mi}
  mcpResources:
    defaults: {limits: {memory: 256Mi}}
    max: {memory: 1Gi}
namespaces:
  team-b:
    team: backend
    allowedTransports: [sse]
    podSecurity: {allowRunAsRoot: true}
"##;

fn app(scope: Scope) -> axum::Router {
    app_with_metrics(scope, Metrics::default())
}

fn app_with_metrics(scope: Scope, metrics: Metrics) -> axum::Router {
    let policy = TenancyPolicy::from_text(POLICY).unwrap();
    webhook::router(webhook::WebhookState::new(policy, scope, Arc::new(|ns: &str| if ns == "team-b" { 2 } else { 0 }), metrics))
}

fn review(op: &str, ns: &str, object: Value, old: Option<Value>, version: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "uid-123", "operation": op, "namespace": ns, "userInfo": {"username": "alice"},
            "kind": {"group": "toolhive.stacklok.dev", "version": version, "kind": "MCPServer"},
            "resource": {"group": "toolhive.stacklok.dev", "version": version, "resource": "mcpservers"},
            "object": object, "oldObject": old,
        }
    })
}

fn server(spec: Value) -> Value {
    json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "metadata": {"name": "s"}, "spec": spec})
}

async fn call(app: axum::Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(path).header("content-type", "application/json").body(body.into()).unwrap();
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn validate(ns: &str, spec: Value) -> Value {
    let (code, out) = call(app(Scope::Cluster), VALIDATE_PATH, review("CREATE", ns, server(spec), None, "v1beta1").to_string()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(out["response"]["uid"], "uid-123");
    out["response"].clone()
}

fn message(r: &Value) -> String {
    r["status"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn allows_a_good_server() {
    let r = validate("team-a", json!({"image": "ghcr.io/acme/tool:1"})).await;
    assert_eq!(r["allowed"], true, "{r}");
}

#[tokio::test]
async fn namespace_rule_lists_allowed_and_contact() {
    let r = validate("team-z", json!({"image": "ghcr.io/acme/tool"})).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(
        message(&r),
        r##"metadata.namespace: Forbidden: namespace "team-z" may not hold MCPServers (allowed: team-a, team-b); ask #platform to allow it"##
    );
    let (_, out) = call(
        app(Scope::Namespaces(vec!["team-a".into()])),
        VALIDATE_PATH,
        review("CREATE", "team-b", server(json!({"image": "ghcr.io/acme/x"})), None, "v1beta1").to_string(),
    )
    .await;
    assert!(message(&out["response"]).contains("(allowed: team-a)"), "namespace mode narrows to the watched list: {out}");
}

#[tokio::test]
async fn registry_is_matched_on_the_parsed_reference() {
    let r = validate("team-a", json!({"image": "ghcr.io.evil.com/acme/tool"})).await;
    assert_eq!(
        message(&r),
        r#"spec.image: Forbidden: registry "ghcr.io.evil.com" is not allowed in namespace "team-a" (allowed: ghcr.io/acme, docker.io/library)"#
    );
    assert_eq!(validate("team-a", json!({"image": format!("redis@sha256:{}", "ab12".repeat(16))})).await["allowed"], true);
    assert_eq!(validate("team-a", json!({"image": "ghcr.io/acmecorp/tool"})).await["allowed"], false);
    let r = validate("team-a", json!({"image": "Not A Ref"})).await;
    assert!(message(&r).starts_with("spec.image: Invalid value:"), "{r}");
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let r = validate(
        "team-a",
        json!({
            "image": "quay.io/x/y", "transport": "sse", "port": 80, "targetPort": 81,
            "volumes": [{"name": "v", "hostPath": "/", "mountPath": "/h"}],
            "resources": {"limits": {"cpu": "4", "memory": "1Gi"}},
            "podTemplateSpec": {"spec": {
                "hostNetwork": true,
                "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                "securityContext": {"runAsUser": 0},
                "containers": [{"name": "mcp", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]}},
                                "resources": {"limits": {"memory": "2Gi"}}}]
            }}
        }),
    )
    .await;
    let m = message(&r);
    for expected in [
        "spec.port: Forbidden: this field was removed; use spec.proxyPort",
        "spec.targetPort: Forbidden: this field was removed; use spec.mcpPort",
        r#"spec.image: Forbidden: registry "quay.io""#,
        r#"spec.transport: Forbidden: transport "sse" is not allowed in namespace "team-a" (allowed: stdio, streamable-http)"#,
        "spec.volumes: Forbidden: spec.volumes (host path mounts) is not supported by this operator release",
        "spec.resources.limits.cpu: Forbidden: 4 exceeds the namespace maximum of 1",
        "spec.resources.limits.memory: Forbidden: 1Gi exceeds the namespace maximum of 512Mi",
        "spec.podTemplateSpec.spec.hostNetwork: Forbidden",
        "spec.podTemplateSpec.spec.volumes[0].hostPath: Forbidden",
        "spec.podTemplateSpec.spec.securityContext.runAsUser: Forbidden",
        "spec.podTemplateSpec.spec.containers[0].securityContext.privileged: Forbidden",
        "spec.podTemplateSpec.spec.containers[0].securityContext.capabilities.add: Forbidden",
        "spec.podTemplateSpec.spec.containers[0].resources.limits.memory: Forbidden: 2Gi exceeds the namespace maximum of 1Gi",
    ] {
        assert!(m.contains(expected), "missing {expected:?} in {m}");
    }
    assert!(m.starts_with("13 problems: "), "{m}");
}

#[tokio::test]
async fn per_namespace_rules_and_quota() {
    // team-b allows only sse and root, and already holds its maximum of 2.
    let r = validate(
        "team-b",
        json!({"image": "ghcr.io/acme/x", "transport": "sse",
        "podTemplateSpec": {"spec": {"securityContext": {"runAsUser": 0}}}}),
    )
    .await;
    assert_eq!(message(&r), r#"metadata.namespace: Forbidden: namespace "team-b" already has 2 MCPServers, the most it may hold is 2"#);
}

#[tokio::test]
async fn updates_that_leave_spec_alone_are_never_blocked() {
    let bad = server(json!({"image": "quay.io/not/allowed"}));
    let mut with_finalizer = bad.clone();
    with_finalizer["metadata"]["finalizers"] = json!([]);
    let (_, out) =
        call(app(Scope::Cluster), VALIDATE_PATH, review("UPDATE", "team-a", with_finalizer, Some(bad.clone()), "v1beta1").to_string())
            .await;
    assert_eq!(out["response"]["allowed"], true);
    // A spec change on UPDATE is validated as strictly as CREATE.
    let mut changed = bad.clone();
    changed["spec"]["args"] = json!(["x"]);
    let (_, out) = call(app(Scope::Cluster), VALIDATE_PATH, review("UPDATE", "team-a", changed, Some(bad), "v1beta1").to_string()).await;
    assert_eq!(out["response"]["allowed"], false);
}

#[tokio::test]
async fn mutation_fills_defaults_without_touching_user_fields() {
    // As the API server sends it: the CRD's defaults (proxyPort, proxyMode) already applied.
    let obj = server(json!({"image": "ghcr.io/acme/x", "transport": "streamable-http", "proxyPort": 8080, "proxyMode": "streamable-http",
        "resources": {"requests": {"cpu": "10m"}}}));
    let (_, out) = call(app(Scope::Cluster), MUTATE_PATH, review("CREATE", "team-b", obj.clone(), None, "v1beta1").to_string()).await;
    let r = &out["response"];
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch: json_patch::Patch =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap()).unwrap();
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let s = &patched["spec"];
    assert_eq!(s["proxyPort"], 8080);
    assert_eq!(s["mcpPort"], 8080);
    assert_eq!(s["proxyMode"], "streamable-http");
    assert_eq!(s["transport"], "streamable-http", "user value kept");
    assert_eq!(s["resources"]["requests"]["cpu"], "10m", "user value kept");
    assert_eq!(s["resources"]["requests"]["memory"], "64Mi", "policy default added");
    assert_eq!(s["podTemplateSpec"]["spec"]["containers"][0]["name"], "mcp");
    assert_eq!(s["podTemplateSpec"]["spec"]["containers"][0]["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(patched["metadata"]["labels"]["toolhive.stacklok.dev/team"], "backend");
    // Idempotent: mutating the result again changes nothing.
    let (_, again) = call(app(Scope::Cluster), MUTATE_PATH, review("CREATE", "team-b", patched, None, "v1beta1").to_string()).await;
    assert!(again["response"].get("patch").is_none(), "{again}");
}

#[tokio::test]
async fn a_byte_order_mark_is_not_malformed() {
    let body = [
        &b"\xEF\xBB\xBF"[..],
        review("CREATE", "team-a", server(json!({"image": "ghcr.io/acme/x"})), None, "v1beta1").to_string().as_bytes(),
    ]
    .concat();
    let (code, out) = call(app(Scope::Cluster), VALIDATE_PATH, body).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(out["response"]["allowed"], true, "{out}");
}

#[tokio::test]
async fn quantities_in_every_form_the_api_server_accepts_are_compared_exactly() {
    for (cpu, allowed) in [("100n", true), ("250u", true), ("1e3m", true), ("+1", true), ("0.0001", true), ("1001m", false), ("1e1", false)]
    {
        let r = validate("team-a", json!({"image": "ghcr.io/acme/x", "resources": {"limits": {"cpu": cpu}}})).await;
        assert_eq!(r["allowed"], allowed, "cpu {cpu}: {r}");
    }
    let r = validate("team-a", json!({"image": "ghcr.io/acme/x", "resources": {"limits": {"memory": "1Ei"}}})).await;
    assert_eq!(message(&r), "spec.resources.limits.memory: Forbidden: 1Ei exceeds the namespace maximum of 512Mi");
}

#[tokio::test]
async fn a_spec_of_the_wrong_shape_is_named_by_its_path() {
    let r = validate("team-a", json!({"image": 5})).await;
    assert!(message(&r).starts_with("spec.image: Invalid value: invalid type: integer `5`, expected a string"), "{r}");
    let r = validate("team-a", json!({"image": "ghcr.io/acme/x", "podTemplateSpec": {"spec": {"hostNetwork": "yes"}}})).await;
    assert!(message(&r).starts_with("spec.podTemplateSpec.spec.hostNetwork: Invalid value: invalid type: string"), "{r}");
}

#[tokio::test]
async fn malformed_inputs_get_well_formed_answers() {
    let (code, out) = call(app(Scope::Cluster), VALIDATE_PATH, "{not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(out["response"]["allowed"], false);
    assert!(message(&out["response"]).contains("not valid JSON"));

    let (code, out) = call(app(Scope::Cluster), VALIDATE_PATH, json!({"kind": "AdmissionReview"}).to_string()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(message(&out["response"]).contains("no request"));

    let mut wrong_kind = review("CREATE", "team-a", server(json!({"image": "x"})), None, "v1beta1");
    wrong_kind["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let (code, out) = call(app(Scope::Cluster), VALIDATE_PATH, wrong_kind.to_string()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(out["response"]["uid"], "uid-123");
    assert!(message(&out["response"]).contains("MCPServers only"));

    let mut no_object = review("CREATE", "team-a", Value::Null, None, "v1beta1");
    no_object["request"].as_object_mut().unwrap().remove("object");
    let (_, out) = call(app(Scope::Cluster), MUTATE_PATH, no_object.to_string()).await;
    assert_eq!(out["response"]["uid"], "uid-123");
    assert_eq!(out["response"]["allowed"], false);

    let (_, out) =
        call(app(Scope::Cluster), VALIDATE_PATH, review("CREATE", "team-a", server(json!("text")), None, "v1beta1").to_string()).await;
    assert!(message(&out["response"]).contains("spec must be an object"));

    let (_, out) = call(
        app(Scope::Cluster),
        VALIDATE_PATH,
        review("CREATE", "team-a", server(json!({"image": "ghcr.io/acme/x", "resources": {"limits": {"cpu": "lots"}}})), None, "v1beta1")
            .to_string(),
    )
    .await;
    assert!(message(&out["response"]).contains("spec.resources.limits.cpu: Invalid value"), "{out}");

    // Over the body limit: refused by the server, never buffered whole.
    // Counted in the request metric like any other answer.
    let huge = vec![b' '; webhook::MAX_BODY_BYTES + 10];
    let metrics = Metrics::default();
    let (code, _) = call(app_with_metrics(Scope::Cluster, metrics.clone()), VALIDATE_PATH, huge).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let text = metrics.render();
    assert!(text.contains(r#"controller_runtime_webhook_requests_total{code="413",webhook="validate-mcpserver"} 1"#), "{text}");
}

#[tokio::test]
async fn reviews_beyond_the_memory_budget_are_answered_without_their_bodies() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// A body that never yields a byte, and records whether it was read at all.
    fn never_arriving(read: Arc<AtomicBool>) -> Body {
        Body::from_stream(futures::stream::poll_fn(move |_| {
            read.store(true, Ordering::SeqCst);
            std::task::Poll::<Option<Result<axum::body::Bytes, std::io::Error>>>::Pending
        }))
    }
    let app = app(Scope::Cluster);
    let declared = webhook::MAX_BODY_BYTES.to_string();
    // Reviews declaring the largest body (counted twice: the body and its parsed
    // strings), which never arrives: they hold their share,
    // as many as the budget has room for.
    let room = webhook::budget::BUDGET_KIB as usize * 1024 / (2 * webhook::MAX_BODY_BYTES);
    let mut held = Vec::new();
    for _ in 0..room {
        let read = Arc::new(AtomicBool::new(false));
        let holding = Request::post(VALIDATE_PATH).header("content-length", &declared).body(never_arriving(read.clone())).unwrap();
        held.push(tokio::spawn(app.clone().oneshot(holding)));
        while !read.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    }

    // Another of that size finds no room: 503 after a short wait, its body never read.
    let second_read = Arc::new(AtomicBool::new(false));
    let second = Request::post(VALIDATE_PATH).header("content-length", &declared).body(never_arriving(second_read.clone())).unwrap();
    let res = app.clone().oneshot(second).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!second_read.load(Ordering::SeqCst), "the body of a review beyond the budget was read");

    // A review of the usual size still fits beside them.
    let small = review("CREATE", "team-a", server(json!({"image": "ghcr.io/acme/x"})), None, "v1beta1").to_string();
    let (code, out) = call(app, VALIDATE_PATH, small).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(out["response"]["allowed"], true, "{out}");
    held.iter().for_each(|h| h.abort());
}

#[tokio::test]
async fn rules_in_warn_or_audit_mode_admit_with_a_warning_or_an_audit_note() {
    let policy = TenancyPolicy::from_text(
        r#"
defaults:
  allowedRegistries: [ghcr.io/acme]
  allowedTransports: [stdio]
  maxMCPServers: 1
  enforcement: {registry: warn, transport: audit, quota: warn}
namespaces:
  strict: {enforcement: {registry: enforce}}
"#,
    )
    .unwrap();
    let metrics = Metrics::default();
    let app = webhook::router(webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(|_: &str| 1), metrics.clone()));
    let spec = json!({"image": "docker.io/x/y", "transport": "sse"});
    let (code, out) = call(app.clone(), VALIDATE_PATH, review("CREATE", "team-a", server(spec.clone()), None, "v1beta1").to_string()).await;
    assert_eq!(code, StatusCode::OK);
    let response = &out["response"];
    assert_eq!(response["allowed"], true, "{out}");
    let warnings: Vec<&str> = response["warnings"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("spec.image: Forbidden: registry \"docker.io\" is not allowed")
            && warnings[0].ends_with("(policy rule \"registry\" in warn mode)"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("already has 1 MCPServers, the most it may hold is 1"), "quota in warn mode: {warnings:?}");
    assert!(response["auditAnnotations"]["policy-audit"].as_str().unwrap().starts_with("spec.transport: "), "{out}");

    // Where the namespace enforces the registry rule, the same server is refused, and
    // the rules still in warn mode are warned about beside the denial.
    let (_, out) = call(app, VALIDATE_PATH, review("CREATE", "strict", server(spec), None, "v1beta1").to_string()).await;
    assert_eq!(out["response"]["allowed"], false);
    assert!(message(&out["response"]).starts_with("spec.image: Forbidden: registry"), "{out}");
    assert!(!message(&out["response"]).contains("transport"), "audit-mode rules are not in the denial: {out}");
    let text = metrics.render();
    assert!(text.contains(r#"decision="warned""#), "{text}");
}

#[tokio::test]
async fn tenants_picked_by_namespace_label_get_their_rules_and_a_quota_across_their_namespaces() {
    let policy = TenancyPolicy::from_text(
        r#"
defaults:
  allowedRegistries: [ghcr.io/acme]
tenants:
  - name: payments
    namespaceSelector: {matchLabels: {team: payments}}
    rules: {allowedRegistries: [ghcr.io/payments]}
    maxMCPServers: 3
namespaces:
  pay-2: {maxMCPServers: 10}
"#,
    )
    .unwrap();
    let namespaces = Arc::new(webhook::namespaces::NamespaceLevels::default());
    let team = |t: &str| std::collections::BTreeMap::from([("team".to_string(), t.to_string())]);
    namespaces.set("pay-1", Some(&team("payments")));
    namespaces.set("pay-2", Some(&team("payments")));
    namespaces.set("other", Some(&team("search")));
    let held = |ns: &str| match ns {
        "pay-1" => 2,
        "pay-2" => 1,
        _ => 0,
    };
    let state = webhook::WebhookState::new(policy, Scope::Cluster, Arc::new(held), Metrics::default()).with_namespace_levels(namespaces);
    let app = webhook::router(state);
    let create = |ns: &str, image: &str| review("CREATE", ns, server(json!({"image": image})), None, "v1beta1").to_string();

    // The tenant's registries in its namespaces, the defaults elsewhere.
    let (_, out) = call(app.clone(), VALIDATE_PATH, create("other", "ghcr.io/payments/x")).await;
    assert!(
        message(&out["response"]).contains("registry \"ghcr.io\" is not allowed") || message(&out["response"]).contains("is not allowed"),
        "{out}"
    );
    // Three servers across pay-1 and pay-2: the tenant is full, whichever namespace asks
    // (pay-2's own ceiling of 10 still leaves room).
    let (_, out) = call(app.clone(), VALIDATE_PATH, create("pay-2", "ghcr.io/payments/x")).await;
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(
        message(&out["response"]),
        "metadata.namespace: Forbidden: tenant \"payments\" already has 3 MCPServers across its namespaces (pay-1, pay-2), the most it may hold is 3"
    );
    let (_, out) = call(app, VALIDATE_PATH, create("other", "ghcr.io/acme/x")).await;
    assert_eq!(out["response"]["allowed"], true, "another tenant's namespace is not counted: {out}");
}
