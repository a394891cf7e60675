//! The reconciler against a mocked API server (kube's client over `tower-test`):
//! what it asks of the API for a new server, an unchanged one, an edit, a missing
//! reference and a deletion. Every request is answered as the API server would, and
//! recorded; each test asserts the requests made.

use std::sync::Arc;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::runtime::cache::Cache;

/// One request the reconciler made: method, path and query, JSON body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

impl Call {
    fn is(&self, method: &str, path_start: &str) -> bool {
        self.method == method && self.path.starts_with(path_start)
    }
}

/// A mocked API server: answers as the real one would (applies echo the object with a
/// uid and resourceVersion, lists are empty, status patches return the server) and
/// records every request.
fn mock_api(server: MCPServer) -> (Client, Arc<std::sync::Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let answer = answer(&method, &path, &body, &server);
            recorded.lock().unwrap().push(Call { method, path, body });
            send.send_response(Response::builder().status(200).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
        }
    });
    (Client::new(service, "default"), calls)
}

fn answer(method: &str, path: &str, body: &Value, server: &MCPServer) -> Value {
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
    match method {
        "GET" => list,
        "DELETE" => json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
        "PATCH" if path.contains("/mcpremoteproxies/") => {
            let mut stored = serde_json::to_value(remote_proxy(json!({"remoteUrl": "https://mcp.example.com/mcp"}))).unwrap();
            stored["status"] = body.get("status").cloned().unwrap_or(Value::Null);
            stored
        }
        "PATCH" if path.contains("/mcpservers/") => {
            let mut stored = serde_json::to_value(server).unwrap();
            if let Some(status) = body.get("status") {
                stored["status"] = status.clone();
            }
            if path.contains("/status") {
                stored
            } else {
                // The finalizer patch: a JSON patch; the object as it was is answer enough.
                stored
            }
        }
        _ => {
            let mut object = body.clone();
            object["metadata"]["uid"] = json!("child-uid");
            object["metadata"]["resourceVersion"] = json!("7");
            object["metadata"]["generation"] = json!(1);
            object
        }
    }
}

/// The caches: the given configuration, nothing else.
fn caches(client: &Client, tool_configs: Vec<crate::kinds::toolconfig::MCPToolConfig>) -> Arc<Caches> {
    let mut caches = Caches::listed(client, vec![], vec![]);
    caches.configs.tool = Cache::listed(tool_configs);
    Arc::new(caches)
}

/// The child caches: the given children (metadata, as the watches keep them).
fn child_caches(children: &[Value]) -> Arc<ChildCaches> {
    let of_kind = |kind: &str| -> Vec<Value> { children.iter().filter(|c| c["kind"] == kind).cloned().collect() };
    fn meta<K: serde::de::DeserializeOwned>(objects: Vec<Value>) -> Vec<K> {
        objects.into_iter().map(|o| serde_json::from_value(o).unwrap()).collect()
    }
    let deployments: Vec<k8s_openapi::api::apps::v1::Deployment> = meta(of_kind("Deployment"));
    Arc::new(ChildCaches {
        configmaps: Cache::listed(meta(of_kind("ConfigMap"))),
        service_accounts: Cache::listed(meta(of_kind("ServiceAccount"))),
        roles: Cache::listed(meta(of_kind("Role"))),
        role_bindings: Cache::listed(meta(of_kind("RoleBinding"))),
        services: Cache::listed(meta(of_kind("Service"))),
        deployments: Cache::listed(deployments.into_iter().map(|d| k8s_openapi::api::apps::v1::Deployment { spec: None, ..d })),
        pods: Cache::listed(vec![]),
        statefulsets: Cache::listed(vec![]),
    })
}

fn server(spec: Value) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "fetch", "namespace": "team", "uid": "server-uid", "generation": 1, "finalizers": [FINALIZER]},
        "spec": spec,
    }))
    .unwrap()
}

fn context(client: Client, caches: Arc<Caches>, children: Arc<ChildCaches>) -> Arc<Context> {
    let shared = Shared::new(client, Metrics::default(), resources::ProxySettings::new("runner:test"), "test".into(), 4);
    Arc::new(Context { shared: Arc::new(shared), caches, children })
}

/// Runs one reconcile and returns the requests it made.
async fn reconcile_with(ctx: &Arc<Context>, server: &MCPServer, calls: &Arc<std::sync::Mutex<Vec<Call>>>) -> Vec<Call> {
    calls.lock().unwrap().clear();
    reconcile(Arc::new(server.clone()), ctx.clone()).await.unwrap();
    calls.lock().unwrap().clone()
}

/// The children a reconcile applied, as the API server stored them.
fn applied_children(calls: &[Call]) -> Vec<Value> {
    let mut out: Vec<Value> = calls
        .iter()
        .filter(|c| c.method == "PATCH" && !c.path.contains("/mcpservers/") && !c.path.contains("/events"))
        .map(|c| answer(&c.method, &c.path, &c.body, &server(json!({"image": "i"}))))
        .collect();
    for o in &mut out {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "name": "fetch", "uid": "server-uid", "controller": true}]);
    }
    out
}

fn applies(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.contains("fieldManager=toolhive-operator") && !c.path.contains("/status"))
        .map(|c| c.path.split('?').next().unwrap().rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/"))
        .collect()
}

#[tokio::test]
async fn a_new_server_gets_its_children_applied_its_status_written_and_one_event() {
    let s = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(s.clone());
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&[]));
    let made = reconcile_with(&ctx, &s, &calls).await;
    assert_eq!(
        applies(&made),
        [
            "configmaps/fetch-runconfig",
            "serviceaccounts/fetch-proxy-runner",
            "roles/fetch-proxy-runner",
            "rolebindings/fetch-proxy-runner",
            "serviceaccounts/fetch-sa",
            "deployments/fetch",
            "services/mcp-fetch-proxy"
        ],
        "{made:#?}"
    );
    // Not in the child caches: each is looked up by name first (never take over a stranger's).
    let lookups = made.iter().filter(|c| c.is("GET", "/api") && c.path.contains("fieldSelector=metadata.name")).count();
    assert_eq!(lookups, 7, "{made:#?}");
    let status =
        made.iter().find(|c| c.is("PATCH", "/apis/toolhive.stacklok.dev/v1beta1/namespaces/team/mcpservers/fetch/status")).unwrap();
    assert_eq!(status.body["status"]["phase"], "Pending");
    assert!(made.iter().filter(|c| c.path.contains("/events")).count() == 1, "one Event for a new server: {made:#?}");
    let writes = made.iter().filter(|c| c.method != "GET").count();
    assert_eq!(writes, 9, "seven applies, a status, an Event: {made:#?}");
}

/// The watch cache lags the operator's own writes: under a burst, a reader that falls
/// behind is handed every server again, and a server whose finalizer was just added
/// is reconciled as it was before. That version is not patched twice (the API server
/// would refuse the second patch: its test of the finalizers fails).
#[tokio::test]
async fn a_finalizer_is_added_once_even_when_the_cache_still_shows_the_server_without_it() {
    let mut s = server(json!({"image": "ghcr.io/acme/fetch"}));
    s.metadata.finalizers = None;
    s.metadata.resource_version = Some("5".into());
    let (client, calls) = mock_api(s.clone());
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&[]));
    let patches = |made: &[Call]| {
        made.iter().filter(|c| c.is("PATCH", "/apis/toolhive.stacklok.dev/v1beta1/namespaces/team/mcpservers/fetch")).count()
    };
    let first = reconcile_with(&ctx, &s, &calls).await;
    assert_eq!((patches(&first), first.len()), (1, 1), "the finalizer alone: {first:#?}");
    assert_eq!(first[0].body[1]["path"], "/metadata/finalizers", "{first:#?}");
    let stale = reconcile_with(&ctx, &s, &calls).await;
    assert!(stale.is_empty(), "the same version again: wait for the watch: {stale:#?}");
    // The watch brings the server with its finalizer: the work goes on.
    s.metadata.finalizers = Some(vec![FINALIZER.into()]);
    s.metadata.resource_version = Some("6".into());
    let next = reconcile_with(&ctx, &s, &calls).await;
    assert_eq!(applies(&next).len(), 7, "{next:#?}");
    // Someone removes the finalizer by hand later: it is added again.
    s.metadata.finalizers = None;
    s.metadata.resource_version = Some("9".into());
    assert_eq!(patches(&reconcile_with(&ctx, &s, &calls).await), 1);
}

#[tokio::test]
async fn an_unchanged_server_costs_no_request_and_an_edit_rewrites_only_what_changed() {
    let s = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(s.clone());
    let first = reconcile_with(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &s, &calls).await;
    // The watches now show what was applied, and the server its status.
    let children = applied_children(&first);
    let status: MCPServerStatus =
        serde_json::from_value(first.iter().find(|c| c.path.contains("/status")).unwrap().body["status"].clone()).unwrap();
    let stored = MCPServer { status: Some(status), ..s.clone() };
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&children));
    // A restarted operator applies each child once (it has no record of its applies).
    reconcile_with(&ctx, &stored, &calls).await;
    let again = reconcile_with(&ctx, &stored, &calls).await;
    assert!(again.is_empty(), "nothing changed, nothing asked: {again:#?}");

    let edited = MCPServer { spec: server(json!({"image": "ghcr.io/acme/fetch:2"})).spec, ..stored };
    let made = reconcile_with(&ctx, &edited, &calls).await;
    assert_eq!(
        applies(&made),
        ["configmaps/fetch-runconfig", "deployments/fetch"],
        "only the RunConfig and the Deployment carry the image: {made:#?}"
    );
}

#[tokio::test]
async fn a_missing_reference_fails_the_server_and_its_proxy_runs_no_replica() {
    let s = server(json!({"image": "ghcr.io/acme/fetch", "toolConfigRef": {"name": "filters"}}));
    let (client, calls) = mock_api(s.clone());
    let made = reconcile_with(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &s, &calls).await;
    let deployment = made.iter().find(|c| c.is("PATCH", "/apis/apps/v1/namespaces/team/deployments/fetch")).unwrap();
    assert_eq!(deployment.body["spec"]["replicas"], 0, "never serves tools it asked to filter");
    let status = &made.iter().find(|c| c.path.contains("/status")).unwrap().body["status"];
    assert_eq!(status["phase"], "Failed");
    assert!(status["message"].as_str().unwrap().contains("spec.toolConfigRef: MCPToolConfig filters not found"), "{status}");
    let event = made.iter().find(|c| c.path.contains("/events")).unwrap();
    assert_eq!((event.body["type"].as_str(), event.body["reason"].as_str()), (Some("Warning"), Some("Failed")));
}

#[tokio::test]
async fn deletion_reports_terminating_removes_what_the_runner_made_and_releases_the_finalizer() {
    let mut s = server(json!({"image": "ghcr.io/acme/fetch"}));
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    let (client, calls) = mock_api(s.clone());
    let made = reconcile_with(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &s, &calls).await;
    let status = made.iter().find(|c| c.path.contains("/status")).unwrap();
    assert_eq!(status.body["status"]["phase"], "Terminating");
    let runner_lookups: Vec<&str> = made
        .iter()
        .filter(|c| c.method == "GET" && c.path.contains("labelSelector=toolhive-name%3Dfetch"))
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(runner_lookups.len(), 3, "the runner's StatefulSet and two Services, by its label: {made:#?}");
    let last = made.iter().rfind(|c| c.path.starts_with("/apis/toolhive.stacklok.dev/v1beta1/namespaces/team/mcpservers/fetch")).unwrap();
    assert_eq!(last.method, "PATCH");
    assert!(last.body.to_string().contains("finalizers"), "the finalizer goes last: {last:?}");
    assert!(!made.iter().any(|c| c.is("PATCH", "/apis/apps/v1")), "nothing applied while deleting: {made:#?}");
}

#[tokio::test]
async fn naming_its_own_service_account_deletes_the_one_made_for_it() {
    let s = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(s.clone());
    let first = reconcile_with(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &s, &calls).await;
    let children = applied_children(&first);
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&children));
    let named = MCPServer { spec: server(json!({"image": "ghcr.io/acme/fetch", "serviceAccount": "tool-runner"})).spec, ..s };
    let made = reconcile_with(&ctx, &named, &calls).await;
    let deleted: Vec<&Call> = made.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(deleted.len(), 1, "{made:#?}");
    assert!(deleted[0].path.starts_with("/api/v1/namespaces/team/serviceaccounts/fetch-sa"));
    assert_eq!(deleted[0].body["preconditions"]["uid"], "child-uid", "only that very object");
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(50), Duration::from_secs(300));
}

#[tokio::test]
async fn configmaps_are_watched_only_in_a_namespace_where_a_server_names_one() {
    let plain = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(plain.clone());
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&[]));
    let made = reconcile_with(&ctx, &plain, &calls).await;
    let lists_configmaps =
        |made: &[Call]| made.iter().any(|c| c.is("GET", "/api/v1/namespaces/team/configmaps?") && !c.path.contains("fieldSelector"));
    assert!(!lists_configmaps(&made) && !ctx.caches.named_configmaps.watched("team"), "{made:#?}");

    let profile = json!({"image": "ghcr.io/acme/fetch", "permissionProfile": {"type": "configmap", "name": "profile", "key": "p.json"}});
    let naming = MCPServer { spec: server(profile).spec, ..plain.clone() };
    let made = reconcile_with(&ctx, &naming, &calls).await;
    assert!(lists_configmaps(&made), "the namespace's ConfigMaps are listed before the server is resolved: {made:#?}");
    assert!(ctx.caches.named_configmaps.watched("team"));
    let status = &made.iter().find(|c| c.path.contains("/status")).unwrap().body["status"];
    assert!(status["message"].as_str().unwrap().contains("spec.permissionProfile: ConfigMap profile not found"), "{status}");

    // The server names none any more, and none other there does: the watch stops.
    reconcile_with(&ctx, &plain, &calls).await;
    assert!(!ctx.caches.named_configmaps.watched("team"));
}

fn remote_proxy(spec: Value) -> crate::kinds::mcpserver::remote::MCPRemoteProxy {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPRemoteProxy",
        "metadata": {"name": "saas", "namespace": "team", "uid": "proxy-uid", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

async fn reconcile_proxy(
    ctx: &Arc<Context>,
    proxy: &crate::kinds::mcpserver::remote::MCPRemoteProxy,
    calls: &Arc<std::sync::Mutex<Vec<Call>>>,
) -> Vec<Call> {
    calls.lock().unwrap().clear();
    remote::reconcile(Arc::new(proxy.clone()), ctx.clone()).await.unwrap();
    calls.lock().unwrap().clone()
}

#[tokio::test]
async fn a_remote_proxy_gets_a_runner_that_forwards_to_its_url_and_reads_no_secret() {
    let p = remote_proxy(json!({"remoteUrl": "https://mcp.example.com/mcp", "headerForward": {
        "addPlaintextHeaders": {"X-Tenant": "team"},
        "addHeadersFromSecret": [{"headerName": "X-API-Key", "valueSecretRef": {"name": "saas-key", "key": "token"}}]}}));
    let (client, calls) = mock_api(server(json!({"image": "unused"})));
    let ctx = context(client.clone(), caches(&client, vec![]), child_caches(&[]));
    let made = reconcile_proxy(&ctx, &p, &calls).await;
    assert_eq!(
        applies(&made),
        [
            "configmaps/saas-runconfig",
            "serviceaccounts/saas-remote-proxy-runner",
            "roles/saas-remote-proxy-runner",
            "rolebindings/saas-remote-proxy-runner",
            "deployments/saas",
            "services/mcp-saas-remote-proxy"
        ],
        "{made:#?}"
    );
    let body = |path: &str| made.iter().find(|c| c.method == "PATCH" && c.path.contains(path)).unwrap().body.clone();
    let owner = &body("/configmaps/saas-runconfig")["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("MCPRemoteProxy"), Some("proxy-uid")));
    let runconfig: Value = serde_json::from_str(body("/configmaps/saas-runconfig")["data"]["runconfig.json"].as_str().unwrap()).unwrap();
    assert_eq!(runconfig["remote_url"], "https://mcp.example.com/mcp");
    assert_eq!(runconfig["header_forward"]["add_plaintext_headers"]["X-Tenant"], "team");
    assert_eq!(runconfig["header_forward"]["add_headers_from_secret"]["X-API-Key"], "HEADER_FORWARD_X_API_KEY_SAAS");
    assert_eq!(runconfig["image"], "", "no MCP server to run");
    assert_eq!(runconfig["env_vars"], json!({"MCP_TRANSPORT": "streamable-http"}), "the transport alone: {runconfig}");
    assert!(runconfig.get("target_port").is_none() && runconfig.get("mcpserver_generation").is_none(), "{runconfig}");
    assert_eq!(
        body("/roles/saas-remote-proxy-runner")["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}])
    );
    let container = &body("/deployments/saas")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["run", "--foreground=true", "placeholder-for-remote-proxy"]));
    let env = container["env"].as_array().unwrap();
    let key = env.iter().find(|e| e["name"] == "TOOLHIVE_SECRET_HEADER_FORWARD_X_API_KEY_SAAS").unwrap();
    assert_eq!(key["valueFrom"]["secretKeyRef"], json!({"name": "saas-key", "key": "token"}), "set by the kubelet, not read by anyone");
    assert!(env.iter().any(|e| e["name"] == "TOOLHIVE_SECRETS_PROVIDER" && e["value"] == "environment"));
    assert_eq!(body("/services/mcp-saas-remote-proxy")["spec"]["selector"]["app"], "mcpremoteproxy");
    let status = body("/mcpremoteproxies/saas/status");
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(status["status"]["url"], "http://mcp-saas-remote-proxy.team.svc.cluster.local:8080");
    assert_eq!(made.iter().filter(|c| c.path.contains("/events")).count(), 1, "{made:#?}");
}

#[tokio::test]
async fn a_remote_proxy_to_a_metadata_endpoint_fails_and_runs_no_replica() {
    let p = remote_proxy(json!({"remoteUrl": "http://169.254.169.254/latest"}));
    let (client, calls) = mock_api(server(json!({"image": "unused"})));
    let made = reconcile_proxy(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &p, &calls).await;
    let deployment = made.iter().find(|c| c.is("PATCH", "/apis/apps/v1/namespaces/team/deployments/saas")).unwrap();
    assert_eq!(deployment.body["spec"]["replicas"], 0);
    let status = &made.iter().find(|c| c.path.contains("/mcpremoteproxies/saas/status")).unwrap().body["status"];
    assert_eq!(status["phase"], "Failed");
    assert!(status["message"].as_str().unwrap().contains("spec.remoteUrl"), "{status}");
}

/// The child caches after a first reconcile, the proxy Deployment showing
/// `available` replicas and the StatefulSets `statefulsets` (JSON, metadata).
fn with_workload(children: &[Value], available: i32, statefulsets: Vec<Value>) -> Arc<ChildCaches> {
    let mut children = children.to_vec();
    for c in children.iter_mut().filter(|c| c["kind"] == "Deployment") {
        c["status"] = json!({"availableReplicas": available, "readyReplicas": available});
    }
    let base = child_caches(&children);
    let parsed = statefulsets.into_iter().map(|s| serde_json::from_value(s).unwrap());
    Arc::new(ChildCaches {
        configmaps: base.configmaps.clone(),
        service_accounts: base.service_accounts.clone(),
        roles: base.roles.clone(),
        role_bindings: base.role_bindings.clone(),
        services: base.services.clone(),
        deployments: base.deployments.clone(),
        pods: base.pods.clone(),
        statefulsets: Cache::listed(parsed),
    })
}

#[tokio::test]
async fn a_missing_statefulset_under_a_running_proxy_rolls_it_once_and_a_found_one_is_adopted() {
    let s = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(s.clone());
    let first = reconcile_with(&context(client.clone(), caches(&client, vec![]), child_caches(&[])), &s, &calls).await;
    let children = applied_children(&first);

    let ctx = context(client.clone(), caches(&client, vec![]), with_workload(&children, 1, vec![]));
    let made = reconcile_with(&ctx, &s, &calls).await;
    let roll =
        made.iter().find(|c| c.path.contains("/deployments/fetch") && c.path.contains("fieldManager=toolhive-operator-heal")).unwrap();
    assert!(roll.body["spec"]["template"]["metadata"]["annotations"][workload::HEALED_AT_ANNOTATION].is_string(), "{roll:?}");
    assert!(made.iter().any(|c| c.path.contains("/events") && c.body["reason"] == "WorkloadMissing"), "{made:#?}");
    let again = reconcile_with(&ctx, &s, &calls).await;
    assert!(!again.iter().any(|c| c.path.contains("toolhive-operator-heal")), "not again within the cooldown: {again:#?}");

    let made_by_runner = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "fetch", "namespace": "team", "labels": {"toolhive": "true", "toolhive-name": "fetch"}}});
    let ctx = context(client.clone(), caches(&client, vec![]), with_workload(&children, 1, vec![made_by_runner]));
    let made = reconcile_with(&ctx, &s, &calls).await;
    let adopt = made.iter().find(|c| c.is("PATCH", "/apis/apps/v1/namespaces/team/statefulsets/fetch")).unwrap();
    let owner = &adopt.body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].as_str(), owner["controller"].as_bool()),
        (Some("MCPServer"), Some("server-uid"), Some(true))
    );
    assert!(!made.iter().any(|c| c.path.contains("toolhive-operator-heal")));
}

#[tokio::test]
async fn an_idle_install_runs_no_controller_of_groups_entries_or_configurations_and_subscribes_to_nothing_unread() {
    let s = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(s);
    let scope = caches(&client, vec![]);
    let shared = Arc::new(Shared::new(client, Metrics::default(), resources::ProxySettings::new("runner:test"), "test".into(), 4));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(run(shared, scope.clone(), shutdown));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Only the waits for a first MCPServer and a first MCPRemoteProxy read changes; a
    // group controller's stream of its members' changes, made before a group exists
    // and never read, would hold every MCPServer change sent meanwhile.
    let c = &scope.configs;
    let subscribed = [
        scope.servers.subscribers(),
        scope.proxies.subscribers(),
        scope.groups.subscribers(),
        scope.entries.subscribers(),
        c.tool.subscribers() + c.telemetry.subscribers() + c.oidc.subscribers(),
        c.authz.subscribers() + c.webhook.subscribers() + c.external_auth.subscribers(),
    ];
    assert_eq!(subscribed, [1, 1, 1, 1, 3, 3], "each waits for its first object, nothing more");
    scope
        .groups
        .touched(Arc::new(serde_json::from_value(json!({"metadata": {"name": "tools", "namespace": "team"}, "spec": {}})).unwrap()));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(scope.servers.subscribers() >= 2, "a group controller, once started, reads its members' changes");
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), running).await.unwrap().unwrap();
    assert!(calls.lock().unwrap().iter().all(|c| c.method == "GET" || c.path.contains("mcpgroups")), "idle: no writes but the group's");
}

#[tokio::test]
async fn a_configmap_watch_a_remote_proxy_needs_outlives_a_server_that_names_none() {
    let plain = server(json!({"image": "ghcr.io/acme/fetch"}));
    let (client, calls) = mock_api(plain.clone());
    let proxy = remote_proxy(json!({"remoteUrl": "https://mcp.example.com/mcp",
        "authzConfig": {"type": "configMap", "configMap": {"name": "policies", "key": "authz.json"}}}));
    let mut scope = Caches::listed(&client, vec![], vec![]);
    scope.proxies = Cache::listed(vec![proxy.clone()]);
    let scope = Arc::new(scope);
    let ctx = context(client.clone(), scope, child_caches(&[]));
    reconcile_proxy(&ctx, &proxy, &calls).await;
    assert!(ctx.caches.named_configmaps.watched("team"), "the proxy's policies are watched");
    reconcile_with(&ctx, &plain, &calls).await;
    assert!(ctx.caches.named_configmaps.watched("team"), "still needed by the proxy");
}
