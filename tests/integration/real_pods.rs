//! Real pods, on a control plane of its own with a node (containerd, kubelet,
//! kube-proxy, CoreDNS): both charts installed as the guide says, the operator a
//! pod of the chart's Deployment (its image from the same static binary the
//! Dockerfile packages; its webhook reached through the chart's Service; its API
//! access the chart's RBAC, by its own ServiceAccount token), and Prometheus
//! scraping it through the chart's metrics Service. The operator deploys
//! ToolHive's real proxy runner
//! (thv-proxyrunner v0.44.0), the runner starts a real MCP server (the Go MCP SDK's
//! memory server) as a StatefulSet, and an MCP client calls its tools through the
//! proxy at `status.url`. Then: the runner works with exactly the Role the operator
//! grants it, a stdio server works too, OIDC tokens and Cedar policies (inline and
//! from a mounted ConfigMap) are enforced, sessions live in a Redis on the host and
//! a rate limit answers 429, a proxy's nodeSelector places it, the runner's StatefulSet
//! is adopted and made again when deleted, an MCPRemoteProxy in front of an in-cluster
//! MCP server passes on headers and a bearer token, the restarted-at annotation and a spec edit
//! roll the proxy, an image that cannot be pulled makes the MCPServer Failed with
//! the reason, and deleting the MCPServer removes what the runner created. Last, a
//! VirtualMCPServer (ToolHive's vMCP v0.44.0) serves the tools of a group's HTTP
//! server, stdio server and remote proxy through one endpoint (and, with OIDC, only to
//! a caller holding a service account token for it), and an EmbeddingServer
//! (an offline stand-in for the inference server's HTTP API) answers /embed.
//!
//! Needs root (the node does); one node per machine at a time.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Pod, Service},
    rbac::v1::{ClusterRoleBinding, RoleBinding},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use toolhive_operator::kinds::mcpserver::api::{MCPServer, Phase, RESTARTED_AT_ANNOTATION};

use super::common::{run, run_ok, tempdir, wait_until};
use super::guide::server;

const RELEASE_NS: &str = "toolhive-system";
const MEMORY_IMAGE: &str = "localhost/toolhive-node/mcp-memory:v1.8.0";
/// A stdio server that writes nothing but JSON-RPC to stdout and nothing to stderr
/// (the runner reads both as one stream).
const HELLO_IMAGE: &str = "localhost/toolhive-node/mcp-hello:v1.8.0";
/// An MCP server whose tool answers with the headers of the request (tests/tools/mcp/echo).
const ECHO_IMAGE: &str = "localhost/toolhive-node/mcp-echo:v1";
/// The offline stand-in for a text-embeddings inference server (tests/tools/mcp/embed).
const EMBED_IMAGE: &str = "localhost/toolhive-node/embed:v1";
/// Pods start in seconds here, but a loaded 2-core CI machine runs the other
/// integration tests beside this one.
const POD_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn mcp_servers_run_in_real_pods_and_answer_tool_calls_through_the_proxy() {
    // Started on this thread, which outlives the children (they die with it).
    let cp = controlplane::ControlPlane::start(controlplane::Options { controller_manager: true, dir: None, node: true })
        .expect("control plane with a node (needs root and the packages scripts/node-packages.sh installs)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(scenario(&cp));
}

async fn scenario(cp: &controlplane::ControlPlane) {
    let admin = cp.client().await.unwrap();
    let kc = cp.kubeconfig.clone();
    let team = cp.namespace(&admin, "pods-team").await.unwrap();
    let work = tempdir("real-pods");
    let root = controlplane::repo_root();

    // The operator's image, as `make dev` builds it (make test builds it first and
    // passes it in; a lone `cargo test` builds it here).
    let image = match std::env::var("TOOLHIVE_OPERATOR_IMAGE") {
        Ok(tar) => std::path::PathBuf::from(tar),
        Err(_) => {
            let tar = work.join("operator-image.tar");
            let built = std::process::Command::new(root.join("scripts/operator-image.sh")).arg(&tar).status().unwrap();
            assert!(built.success(), "scripts/operator-image.sh failed");
            tar
        }
    };
    cp.import_image(&image).unwrap();

    // Both charts, as the guide installs them (namespace mode for the team).
    let crds = root.join("deploy/charts/toolhive-operator-crds");
    run_ok("helm", &kc, &["upgrade", "-i", "toolhive-operator-crds", crds.to_str().unwrap(), "--wait"]);
    let values = work.join("values.yaml");
    std::fs::write(
        &values,
        json!({
            "operator": {"rbac": {"scope": "namespace", "allowedNamespaces": [team]}},
            "tenancy": {"policy": {"contact": "#platform", "defaults": {"allowedRegistries": ["localhost/toolhive-node"]}}}
        })
        .to_string(),
    )
    .unwrap();
    let chart = root.join("deploy/charts/toolhive-operator");
    let (ok, _, err) = run(
        "helm",
        &kc,
        &[
            "upgrade",
            "-i",
            "toolhive-operator",
            chart.to_str().unwrap(),
            "-n",
            RELEASE_NS,
            "--create-namespace",
            "-f",
            values.to_str().unwrap(),
            "--wait",
            "--timeout=4m",
        ],
        None,
    );
    assert!(ok, "operator chart: {err}\n{}", pod_logs(&kc, &team));
    let operator = &OperatorPod { kubeconfig: kc.clone(), team: team.clone() };

    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), &team);
    let streamable =
        json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "args": ["-http", ":8080"], "mcpPort": 8080, "proxyPort": 8080});
    create(&servers, &server("memory", streamable)).await;

    // Ready with one ready replica, and the URL answers MCP: a tool changes the
    // server's state and another reads it back.
    ready(&servers, operator, "memory").await;
    let session = open_session(&admin, &team, "memory", operator).await;
    let tools: Vec<String> = session.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"create_entities".to_string()) && tools.contains(&"read_graph".to_string()), "{tools:?}");
    let created = session
        .call(
            "create_entities",
            json!({"entities": [{"name": "toolhive-operator", "entityType": "operator", "observations": ["in a real pod"]}]}),
        )
        .await
        .unwrap();
    assert_ne!(created.is_error, Some(true), "{}", controlplane::mcp::text(&created));
    let graph = controlplane::mcp::text(&session.call("read_graph", json!({})).await.unwrap());
    assert!(graph.contains("toolhive-operator") && graph.contains("in a real pod"), "{graph}");
    session.close().await.unwrap();

    // The runner did all that (a StatefulSet, two Services) as its own ServiceAccount,
    // bound to nothing but the Role the operator made for it.
    let runner_sa = "memory-proxy-runner";
    let runner_pod = runner_pods(&admin, &team, "memory").await.into_iter().next().expect("a runner pod");
    assert_eq!(runner_pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()), Some(runner_sa));
    let binds_runner = |subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects
            .into_iter()
            .flatten()
            .any(|s| s.kind == "ServiceAccount" && s.name == runner_sa && s.namespace.as_deref() == Some(team.as_str()))
    };
    let role_bindings = Api::<RoleBinding>::all(admin.clone()).list(&ListParams::default()).await.unwrap();
    let bound: Vec<String> =
        role_bindings.items.iter().filter(|b| binds_runner(b.subjects.as_ref())).map(|b| b.role_ref.name.clone()).collect();
    assert_eq!(bound, [runner_sa], "the runner's only binding is to the operator's Role");
    let cluster_bindings = Api::<ClusterRoleBinding>::all(admin.clone()).list(&ListParams::default()).await.unwrap();
    assert!(!cluster_bindings.items.iter().any(|b| binds_runner(b.subjects.as_ref())), "no cluster-wide grant to the runner");
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &team);
    let services: Api<Service> = Api::namespaced(admin.clone(), &team);
    assert!(services.get_opt("mcp-memory").await.unwrap().is_some() && services.get_opt("mcp-memory-headless").await.unwrap().is_some());
    // The runner's StatefulSet is adopted under the MCPServer (garbage collection
    // removes it, and the Services the runner hangs off it, with the server)...
    let memory_uid = servers.get("memory").await.unwrap().metadata.uid.unwrap();
    let adopted = operator
        .within("the runner's StatefulSet adopted", POD_LIMIT, || async {
            let sts = statefulsets.get_opt("memory").await.ok()??;
            let owners = sts.metadata.owner_references.clone().unwrap_or_default();
            owners.iter().any(|o| o.uid == memory_uid && o.controller == Some(true)).then_some(sts)
        })
        .await;
    // ...and made again when deleted: the proxy is rolled so its runner recreates it.
    statefulsets
        .delete(
            "memory",
            &DeleteParams::default().preconditions(kube::api::Preconditions { uid: adopted.metadata.uid.clone(), resource_version: None }),
        )
        .await
        .unwrap();
    operator
        .within("the deleted StatefulSet made again", POD_LIMIT, || async {
            let sts = statefulsets.get_opt("memory").await.ok()??;
            (sts.metadata.uid != adopted.metadata.uid).then_some(())
        })
        .await;
    ready(&servers, operator, "memory").await;
    let healed = open_session(&admin, &team, "memory", operator).await;
    let graph = controlplane::mcp::text(&healed.call("read_graph", json!({})).await.unwrap());
    assert!(!graph.contains("in a real pod"), "a new MCP server pod (its memory starts empty): {graph}");
    healed.close().await.unwrap();

    // A stdio server: the runner attaches to its container.
    create(&servers, &server("hello-stdio", json!({"image": HELLO_IMAGE, "transport": "stdio"}))).await;
    ready(&servers, operator, "hello-stdio").await;
    let stdio = open_session(&admin, &team, "hello-stdio", operator).await;
    let greeting = controlplane::mcp::text(&stdio.call("greet", json!({"name": "toolhive-operator"})).await.unwrap());
    assert!(greeting.contains("Hi toolhive-operator"), "the stdio server's own answer: {greeting}");
    stdio.close().await.unwrap();

    // A remote MCP server behind an MCPRemoteProxy, answering at the proxy's status.url.
    remote_proxy(&admin, &team, operator).await;

    // Placement: a proxy whose nodeSelector no node matches waits unscheduled; once
    // the node carries the label, it runs there and serves.
    let placed = json!({"image": HELLO_IMAGE, "transport": "stdio",
        "resourceOverrides": {"proxyDeployment": {"nodeSelector": {"toolhive.test/pool": "mcp"}}}});
    create(&servers, &server("placed", placed)).await;
    let unschedulable = operator
        .within("the placed proxy to wait for a matching node", POD_LIMIT, || async {
            let pod = runner_pods(&admin, &team, "placed").await.into_iter().next()?;
            let scheduled = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?.clone();
            (scheduled.status == "False").then_some(scheduled.reason.unwrap_or_default())
        })
        .await;
    assert_eq!(unschedulable, "Unschedulable");
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone()).list(&ListParams::default()).await.unwrap().items[0].name_any();
    run_ok("kubectl", &kc, &["label", "node", &node, "toolhive.test/pool=mcp"]);
    ready(&servers, operator, "placed").await;
    let on = runner_pods(&admin, &team, "placed").await.into_iter().find(pod_ready).and_then(|p| p.spec?.node_name);
    assert_eq!(on.as_deref(), Some(node.as_str()));
    let placed_session = open_session(&admin, &team, "placed", operator).await;
    assert!(controlplane::mcp::text(&placed_session.call("greet", json!({"name": "placed"})).await.unwrap()).contains("Hi placed"));
    placed_session.close().await.unwrap();
    run_ok("kubectl", &kc, &["label", "node", &node, "toolhive.test/pool-"]);
    servers.delete("placed", &DeleteParams::default()).await.unwrap();

    // Authentication: with an MCPOIDCConfig for the cluster's service account tokens,
    // the proxy turns away a client without a token or with one for another audience,
    // and serves one whose token names the server.
    let oidc: toolhive_operator::kinds::oidc::MCPOIDCConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPOIDCConfig", "metadata": {"name": "cluster-tokens"},
        "spec": {"type": "kubernetesServiceAccount",
            "kubernetesServiceAccount": {"issuer": "https://kubernetes.default.svc.cluster.local"}},
    }))
    .unwrap();
    Api::<toolhive_operator::kinds::oidc::MCPOIDCConfig>::namespaced(admin.clone(), &team)
        .create(&PostParams::default(), &oidc)
        .await
        .unwrap();
    // And a Cedar policy: the caller may read the graph, nothing else.
    let read_only = r#"permit(principal, action == Action::"call_tool", resource == Tool::"read_graph");"#;
    let guarded = json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "mcpPort": 8080, "args": ["-http", ":8080"],
        "oidcConfigRef": {"name": "cluster-tokens", "audience": "guarded-memory"},
        "authzConfig": {"type": "inline", "inline": {"policies": [read_only]}}});
    create(&servers, &server("guarded", guarded)).await;
    ready(&servers, operator, "guarded").await;
    let (url, address) = controlplane::mcp::proxy_endpoint(&admin, &team, "guarded").await.unwrap();
    let token_for = |audience: &'static str| {
        let admin = admin.clone();
        let team = team.clone();
        async move {
            let request: k8s_openapi::api::authentication::v1::TokenRequest =
                serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}})).unwrap();
            let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin, &team);
            accounts
                .create_token_request("default", &PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .unwrap()
                .token
                .expect("a token")
        }
    };
    let other_audience = token_for("someone-else").await;
    for (who, token) in [("no token", None), ("a token for another audience", Some(other_audience.as_str()))] {
        let refused = controlplane::mcp::Session::connect_as(&url, address, token).await.err().map(|e| format!("{e:#}"));
        let unauthorized = refused.as_deref().is_some_and(|e| e.contains("Auth required"));
        assert!(unauthorized, "{who}: the proxy must answer 401 (the client says \"Auth required\"), got {refused:?}");
    }
    let token = token_for("guarded-memory").await;
    let authenticated = open_session_as(&admin, &team, "guarded", operator, Some(&token)).await;
    let visible: Vec<String> = authenticated.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(visible, ["read_graph"], "the list shows only what the policy lets the caller call");
    assert!(authenticated.call("read_graph", json!({})).await.is_ok(), "permitted");
    let denied = authenticated.call("create_entities", json!({"entities": []})).await;
    assert!(denied.is_err(), "not permitted by the policy: {denied:?}");
    authenticated.close().await.unwrap();
    // The same policy from a ConfigMap: mounted, and read by the runner from the file.
    let policy = json!({"version": "1.0", "type": "cedarv1", "cedar": {"policies": [read_only], "entities_json": "[]"}});
    let policy_map: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "read-only"}, "data": {"authz.json": policy.to_string()}})).unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &team)
        .create(&PostParams::default(), &policy_map)
        .await
        .unwrap();
    let mounted = json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "mcpPort": 8080, "args": ["-http", ":8080"],
        "oidcConfigRef": {"name": "cluster-tokens", "audience": "mounted-memory"},
        "authzConfig": {"type": "configMap", "configMap": {"name": "read-only"}}});
    create(&servers, &server("mounted", mounted)).await;
    ready(&servers, operator, "mounted").await;
    let token = token_for("mounted-memory").await;
    let from_file = open_session_as(&admin, &team, "mounted", operator, Some(&token)).await;
    let visible: Vec<String> = from_file.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(visible, ["read_graph"], "the policies the runner read from the mounted ConfigMap");
    assert!(from_file.call("create_entities", json!({"entities": []})).await.is_err(), "not permitted by the mounted policy");
    from_file.close().await.unwrap();

    // The embedded authorization server: the runner itself is the OAuth 2.0 server its
    // clients log in to (federating to an upstream provider), with its signing and
    // HMAC keys mounted from a Secret. Ready proves the runner read them; its metadata,
    // keys, client registration and the redirect to the upstream prove the rest.
    let base = format!("http://mcp-login-proxy.{team}.svc.cluster.local:8080");
    let resource = format!("{base}/mcp");
    let signing = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let keys: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({"metadata": {"name": "login-keys"},
        "stringData": {"signing.pem": signing, "hmac": "h".repeat(48), "client-secret": "upstream-secret"}}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &team).create(&PostParams::default(), &keys).await.unwrap();
    for object in [
        json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPOIDCConfig", "metadata": {"name": "login-tokens"},
            "spec": {"type": "inline", "inline": {"issuer": base, "insecureAllowHTTP": true}}}),
        json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPExternalAuthConfig", "metadata": {"name": "login"},
            "spec": {"type": "embeddedAuthServer", "embeddedAuthServer": {"issuer": base, "insecureAllowHTTP": true,
                "signingKeySecretRefs": [{"name": "login-keys", "key": "signing.pem"}],
                "hmacSecretRefs": [{"name": "login-keys", "key": "hmac"}],
                "upstreamProviders": [{"name": "corp", "type": "oauth2", "oauth2Config": {
                    "authorizationEndpoint": "https://login.example.com/authorize", "tokenEndpoint": "https://login.example.com/token",
                    "clientId": "tools", "clientSecretRef": {"name": "login-keys", "key": "client-secret"}}}]}}}),
    ] {
        let (ok, _, err) = run("kubectl", &kc, &["apply", "-n", &team, "-f", "-"], Some(&object.to_string()));
        assert!(ok, "{err}");
    }
    let login = json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "mcpPort": 8080, "args": ["-http", ":8080"],
        "oidcConfigRef": {"name": "login-tokens", "audience": resource, "resourceUrl": resource},
        "authServerRef": {"kind": "MCPExternalAuthConfig", "name": "login"}});
    create(&servers, &server("login", login)).await;
    ready(&servers, operator, "login").await;
    let (login_url, login_address) = controlplane::mcp::proxy_endpoint(&admin, &team, "login").await.unwrap();
    let get = |path: String| async move { controlplane::mcp::http("GET", &path, login_address, None).await.unwrap() };
    let (status, _, body) = get(format!("{base}/.well-known/oauth-authorization-server")).await;
    let metadata: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!((status, metadata["issuer"].as_str()), (200, Some(base.as_str())), "{body}");
    let (_, _, jwks) = get(metadata["jwks_uri"].as_str().unwrap().to_string()).await;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap_or_default();
    assert_eq!(jwks["keys"][0]["kty"], "EC", "the mounted signing key is published: {jwks}");
    let refused = controlplane::mcp::Session::connect_as(&login_url, login_address, None).await.err().map(|e| format!("{e:#}"));
    assert!(refused.as_deref().is_some_and(|e| e.contains("Auth required")), "no token, no session: {refused:?}");
    // A client registers itself, and its login is sent on to the upstream provider.
    let registration = json!({"redirect_uris": ["http://127.0.0.1:33418/callback"], "client_name": "real-pods",
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"], "response_types": ["code"]});
    let registration_url = metadata["registration_endpoint"].as_str().unwrap();
    let (status, _, body) =
        controlplane::mcp::http("POST", registration_url, login_address, Some(&registration.to_string())).await.unwrap();
    let client: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert!((200..300).contains(&status) && client["client_id"].is_string(), "registration: {status} {body}");
    let authorize = format!(
        "{}?response_type=code&client_id={}&redirect_uri=http%3A%2F%2F127.0.0.1%3A33418%2Fcallback&state=real-pods-login-state\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&scope=openid",
        metadata["authorization_endpoint"].as_str().unwrap(),
        client["client_id"].as_str().unwrap()
    );
    let (status, location, body) = get(authorize).await;
    let location = location.unwrap_or_default();
    assert!(
        (300..400).contains(&status)
            && location.starts_with("https://login.example.com/authorize?")
            && location.contains("client_id=tools")
            && location.contains(&format!("redirect_uri={}", urlencode(&format!("{resource}/oauth/callback")))),
        "the login goes on to the upstream provider: {status} {location} {body}"
    );

    // Sessions in Redis, and rate limits counted there: a Redis on the node's host
    // (the pods reach it through the bridge), with a password the proxy reads from a
    // Secret. The runner cannot start without reaching it, so Ready proves the password.
    let redis = HostRedis::start(&work);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "redis"}, "stringData": {"password": redis.password}}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &team).create(&PostParams::default(), &secret).await.unwrap();
    let limited = json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "mcpPort": 8080, "args": ["-http", ":8080"],
        "sessionStorage": {"provider": "redis", "address": redis.address, "keyPrefix": "pods-team:limited:",
                           "passwordRef": {"name": "redis", "key": "password"}},
        "rateLimiting": {"tools": [{"name": "read_graph", "shared": {"maxTokens": 2, "refillPeriod": "1h"}}]}});
    create(&servers, &server("limited", limited)).await;
    ready(&servers, operator, "limited").await;
    let counted = open_session(&admin, &team, "limited", operator).await;
    let sessions = redis.keys("pods-team:limited:*");
    assert!(!sessions.is_empty(), "the proxy keeps its sessions in Redis under the key prefix");
    for call in 1..=2 {
        let answer = counted.call("read_graph", json!({})).await;
        assert!(answer.is_ok(), "call {call} of 2 allowed: {answer:?}");
    }
    let refused = counted.call("read_graph", json!({})).await.err().map(|e| format!("{e:#}"));
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("HTTP 429")),
        "the third read_graph within the hour is over the limit (429 Too Many Requests): {refused:?}"
    );
    assert!(counted.call("create_entities", json!({"entities": []})).await.is_ok(), "other tools are not limited");
    counted.close().await.unwrap();

    // The restarted-at annotation rolls the proxy: a new runner pod, ready again.
    let before = runner_pod.uid().unwrap();
    let restart = json!({"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: "2026-11-30T00:00:00Z"}}});
    servers.patch("memory", &PatchParams::default(), &Patch::Merge(&restart)).await.unwrap();
    operator
        .within("a new runner pod after the restarted-at annotation", POD_LIMIT, || async {
            let pods = runner_pods(&admin, &team, "memory").await;
            (pods.len() == 1 && pods[0].uid().as_deref() != Some(before.as_str()) && pod_ready(&pods[0])).then_some(())
        })
        .await;
    ready(&servers, operator, "memory").await;

    // Editing the spec rolls it too, and the runner carries the edit to the MCP server.
    let edit = json!({"spec": {"args": ["-http", ":8080", "-memory", "/tmp/graph.json"]}});
    servers.patch("memory", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    operator
        .within("the edited arguments reach the MCP server's StatefulSet", POD_LIMIT, || async {
            let sts = statefulsets.get_opt("memory").await.ok()??;
            let args = sts.spec?.template.spec?.containers.first()?.args.clone()?;
            args.contains(&"/tmp/graph.json".to_string()).then_some(())
        })
        .await;
    ready(&servers, operator, "memory").await;
    let session_after = open_session(&admin, &team, "memory", operator).await;
    assert!(!session_after.tools().await.unwrap().is_empty());
    session_after.close().await.unwrap();

    // An image that cannot be had: Failed, with the reason.
    create(&servers, &server("broken", json!({"image": "localhost/toolhive-node/missing:v1", "transport": "stdio"}))).await;
    let message = operator
        .within("the MCPServer Failed with the image's reason", POD_LIMIT, || async {
            let status = servers.get("broken").await.ok()?.status?;
            (status.phase == Some(Phase::Failed)).then_some(status.message)
        })
        .await;
    assert!(["ErrImagePull", "ImagePullBackOff"].iter().any(|r| message.contains(r)) && message.contains("missing"), "{message}");

    // Prometheus scrapes the operator through the chart's metrics Service: the
    // controller-runtime reconcile counter and the MCPServer gauge by phase.
    let port = cp.prometheus_port.expect("Prometheus runs with the node");
    let metrics_service = Api::<Service>::namespaced(admin.clone(), RELEASE_NS).get("toolhive-operator-metrics").await.unwrap();
    let service_ip = metrics_service.spec.and_then(|s| s.cluster_ip).unwrap();
    let targets = controlplane::node::scrape_targets(&format!("{service_ip}:8080"), "toolhive-operator-metrics");
    std::fs::write(cp.prometheus_targets(), targets).unwrap();
    let series = |query: &'static str| async move {
        let response = controlplane::http_get_plain(port, &format!("/api/v1/query?query={query}")).ok()?;
        let body: serde_json::Value = serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()?;
        let result = body["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    };
    let reconciles = operator
        .within("Prometheus has controller_runtime_reconcile_total", POD_LIMIT, || series("controller_runtime_reconcile_total"))
        .await;
    assert!(
        reconciles.iter().any(|s| s["metric"]["controller"] == "mcpserver" && s["metric"]["service"] == "toolhive-operator-metrics"),
        "{reconciles:?}"
    );
    let phases = operator
        .within("Prometheus sees the Failed server in toolhive_mcpservers", POD_LIMIT, || async {
            let all = series("toolhive_mcpservers").await?;
            all.iter().any(|s| s["metric"]["phase"] == "Failed" && s["value"][1] == "1").then_some(all)
        })
        .await;
    assert!(phases.iter().any(|s| s["metric"]["phase"] == "Ready" && s["value"][1] == "6"), "{phases:?}");

    // Deleting the MCPServer removes the runner's StatefulSet and Services, and
    // garbage collection the operator's children.
    servers.delete("memory", &DeleteParams::default()).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &team);
    operator
        .within("everything of the deleted server gone", POD_LIMIT, || async {
            let gone = statefulsets.get_opt("memory").await.ok()?.is_none()
                && services.get_opt("mcp-memory").await.ok()?.is_none()
                && services.get_opt("mcp-memory-headless").await.ok()?.is_none()
                && deployments.get_opt("memory").await.ok()?.is_none()
                && servers.get_opt("memory").await.ok()?.is_none();
            gone.then_some(())
        })
        .await;

    // One endpoint over a group of an HTTP server, a stdio server and a remote proxy.
    virtual_server(&admin, &team, operator).await;
    embedding_server(&admin, &team, operator).await;
}

/// An EmbeddingServer running the offline stand-in for a text-embeddings inference
/// server (tests/tools/mcp/embed): Ready once its pod is, and its `status.url` answers
/// /embed; a VirtualMCPServer naming it serves the optimizer's find_tool and
/// call_tool over the group `virtual_server` left; deleting it takes its StatefulSet
/// and Service.
async fn embedding_server(admin: &Client, team: &str, operator: &OperatorPod) {
    use toolhive_operator::kinds::embedding::api::{EmbeddingPhase, EmbeddingServer};
    let embeddings: Api<EmbeddingServer> = Api::namespaced(admin.clone(), team);
    let object = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "EmbeddingServer", "metadata": {"name": "embed"},
        "spec": {"model": "sentence-transformers/all-MiniLM-L6-v2", "image": EMBED_IMAGE, "env": [{"name": "RUST_LOG", "value": "info"}]}});
    embeddings.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap();
    operator
        .within("the EmbeddingServer Ready with one ready replica", POD_LIMIT, || async {
            let status = embeddings.get("embed").await.ok()?.status?;
            (status.phase == Some(EmbeddingPhase::Ready) && status.ready_replicas == 1).then_some(())
        })
        .await;
    let vectors = operator
        .within("/embed answering at the EmbeddingServer's status.url", POD_LIMIT, || async {
            match controlplane::mcp::embed(admin, team, "embed", &["tools for teams", "tools for teams", "weather"]).await {
                Ok(vectors) => Some(vectors),
                Err(e) => {
                    eprintln!("EmbeddingServer: {e:#}");
                    None
                }
            }
        })
        .await;
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384), "one 384-dimension vector per text");
    assert_eq!(vectors[0], vectors[1], "equal texts, equal vectors");
    assert_ne!(vectors[0], vectors[2]);

    // The optimizer: a VirtualMCPServer over the same group naming the EmbeddingServer
    // serves find_tool and call_tool in place of the backends' tools.
    use toolhive_operator::kinds::virtualmcp::api::{VirtualMCPServer, VirtualPhase};
    let virtuals: Api<VirtualMCPServer> = Api::namespaced(admin.clone(), team);
    let optimized = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "VirtualMCPServer", "metadata": {"name": "optimized"},
        "spec": {"groupRef": {"name": "team-tools"}, "incomingAuth": {"type": "anonymous"}, "embeddingServerRef": {"name": "embed"},
            "config": {"optimizer": {"maxToolsToReturn": 3}}}});
    virtuals.create(&PostParams::default(), &serde_json::from_value(optimized).unwrap()).await.unwrap();
    operator
        .within("the optimized VirtualMCPServer Ready with its EmbeddingServer", POD_LIMIT, || async {
            let status = virtuals.get("optimized").await.ok()?.status?;
            let embedding = status.conditions.iter().any(|c| c.type_ == "EmbeddingServerReady" && c.status == "True");
            (status.phase == Some(VirtualPhase::Ready) && embedding).then_some(())
        })
        .await;
    let session = virtual_session(admin, team, "optimized", operator, |tools| tools.iter().any(|t| t == "find_tool")).await;
    let tools: Vec<String> = session.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(
        tools.contains(&"call_tool".to_string()) && !tools.iter().any(|t| t.starts_with("vm-")),
        "only the optimizer's tools: {tools:?}"
    );
    let found = session
        .call("find_tool", json!({"tool_description": "read the whole knowledge graph", "tool_keywords": ["read_graph"]}))
        .await
        .unwrap();
    let found = controlplane::mcp::text(&found);
    assert!(found.contains("vm-memory_read_graph"), "find_tool finds the memory server's tool: {found}");
    let graph = session.call("call_tool", json!({"tool_name": "vm-memory_read_graph", "parameters": {}})).await.unwrap();
    let graph = controlplane::mcp::text(&graph);
    assert!(graph.contains("aggregated"), "call_tool reaches the backend: {graph}");
    session.close().await.unwrap();
    virtuals.delete("optimized", &DeleteParams::default()).await.unwrap();

    embeddings.delete("embed", &DeleteParams::default()).await.unwrap();
    let (statefulsets, services) = (Api::<StatefulSet>::namespaced(admin.clone(), team), Api::<Service>::namespaced(admin.clone(), team));
    operator
        .within("the EmbeddingServer's StatefulSet and Service gone", POD_LIMIT, || async {
            (statefulsets.get_opt("embed").await.ok()?.is_none() && services.get_opt("embed").await.ok()?.is_none()).then_some(())
        })
        .await;
}

/// A VirtualMCPServer over a group holding an HTTP server, a stdio server and a remote
/// proxy (to the echo server `remote_proxy` started): Ready with 3 backends, its
/// `status.url` lists their tools under their prefixes and answers a call to each and
/// to a composite tool of two steps; a server leaving the group takes its tools with it.
async fn virtual_server(admin: &Client, team: &str, operator: &OperatorPod) {
    use toolhive_operator::kinds::group::MCPGroup;
    use toolhive_operator::kinds::mcpserver::remote::MCPRemoteProxy;
    use toolhive_operator::kinds::virtualmcp::api::{VirtualMCPServer, VirtualPhase};
    let post = PostParams::default();
    let object = |kind: &str, name: &str, spec: serde_json::Value| json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let group = json!({"name": "team-tools"});
    Api::<MCPGroup>::namespaced(admin.clone(), team)
        .create(&post, &serde_json::from_value(object("MCPGroup", "team-tools", json!({}))).unwrap())
        .await
        .unwrap();
    let servers: Api<MCPServer> = Api::namespaced(admin.clone(), team);
    let http =
        json!({"image": MEMORY_IMAGE, "transport": "streamable-http", "args": ["-http", ":8080"], "mcpPort": 8080, "groupRef": group});
    create(&servers, &serde_json::from_value(object("MCPServer", "vm-memory", http)).unwrap()).await;
    let stdio = json!({"image": HELLO_IMAGE, "transport": "stdio", "groupRef": group});
    create(&servers, &serde_json::from_value(object("MCPServer", "vm-hello", stdio)).unwrap()).await;
    let remote = json!({"remoteUrl": format!("http://echo-backend.{team}.svc.cluster.local:8080/mcp"), "allowPrivateEndpoint": true,
        "groupRef": group});
    Api::<MCPRemoteProxy>::namespaced(admin.clone(), team)
        .create(&post, &serde_json::from_value(object("MCPRemoteProxy", "vm-echo", remote)).unwrap())
        .await
        .unwrap();
    // And a remote server the vMCP calls directly (an entry), with a key it injects as
    // a header: the entry's own MCPExternalAuthConfig (discovered outgoing auth), its
    // value from the Secret the remote proxy above uses.
    use toolhive_operator::kinds::externalauth::MCPExternalAuthConfig;
    use toolhive_operator::kinds::serverentry::MCPServerEntry;
    let key = json!({"type": "headerInjection", "headerInjection": {"headerName": "X-Team-Key", "valueSecretRef": {"name": "saas-key", "key": "key"}}});
    Api::<MCPExternalAuthConfig>::namespaced(admin.clone(), team)
        .create(&post, &serde_json::from_value(object("MCPExternalAuthConfig", "vm-key", key)).unwrap())
        .await
        .unwrap();
    let direct = json!({"remoteUrl": format!("http://echo-backend.{team}.svc.cluster.local:8080/mcp"), "transport": "streamable-http",
        "allowPrivateEndpoint": true, "groupRef": group, "externalAuthConfigRef": {"name": "vm-key"}});
    Api::<MCPServerEntry>::namespaced(admin.clone(), team)
        .create(&post, &serde_json::from_value(object("MCPServerEntry", "vm-direct", direct)).unwrap())
        .await
        .unwrap();
    let virtuals: Api<VirtualMCPServer> = Api::namespaced(admin.clone(), team);
    // And one composite tool of two steps: store a fact (a parameter, templated into the
    // first call), then read the graph back (the tool's answer is the last step's).
    let remember = json!({"name": "remember", "description": "Stores a fact, then reads the graph back",
    "parameters": {"type": "object", "properties": {"fact": {"type": "string"}}, "required": ["fact"]},
    "steps": [
        {"id": "store", "tool": "vm-memory.create_entities",
         "arguments": {"entities": [{"name": "fact", "entityType": "note", "observations": ["{{.params.fact}}"]}]}},
        {"id": "recall", "tool": "vm-memory_read_graph", "dependsOn": ["store"]}
    ]});
    let spec = json!({"groupRef": {"name": "team-tools"}, "incomingAuth": {"type": "anonymous"}, "config": {"compositeTools": [remember]}});
    virtuals.create(&post, &serde_json::from_value(object("VirtualMCPServer", "team", spec)).unwrap()).await.unwrap();
    operator
        .within("the VirtualMCPServer Ready over 4 backends", POD_LIMIT, || async {
            let status = virtuals.get("team").await.ok()?.status?;
            (status.phase == Some(VirtualPhase::Ready) && status.backend_count == 4).then_some(())
        })
        .await;

    // Each backend's tools under its prefix, each answering through the one endpoint.
    // The vMCP checks each backend's health on its own schedule: a backend still
    // starting is left out of a session's tools, so wait for a session listing all.
    let expected = ["vm-memory_read_graph", "vm-hello_greet", "vm-echo_request_headers", "vm-direct_request_headers", "remember"];
    let session = virtual_session(admin, team, "team", operator, |tools| expected.iter().all(|e| tools.iter().any(|t| t == e))).await;
    let tools: Vec<String> = session.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    for tool in expected {
        assert!(tools.contains(&tool.to_string()), "{tool} in {tools:?}");
    }
    let greeting = controlplane::mcp::text(&session.call("vm-hello_greet", json!({"name": "vmcp"})).await.unwrap());
    assert!(greeting.contains("Hi vmcp"), "the stdio server's answer: {greeting}");
    let created = session
        .call(
            "vm-memory_create_entities",
            json!({"entities": [{"name": "vmcp", "entityType": "endpoint", "observations": ["aggregated"]}]}),
        )
        .await
        .unwrap();
    assert_ne!(created.is_error, Some(true), "{}", controlplane::mcp::text(&created));
    let graph = controlplane::mcp::text(&session.call("vm-memory_read_graph", json!({})).await.unwrap());
    assert!(graph.contains("aggregated"), "the HTTP server's answer: {graph}");
    let headers = controlplane::mcp::text(&session.call("vm-echo_request_headers", json!({})).await.unwrap());
    assert!(headers.starts_with('{'), "the remote server's answer, through its proxy: {headers}");
    // The echo's JSON is the first text (the vMCP may add structured content after it).
    let direct = session.call("vm-direct_request_headers", json!({})).await.unwrap();
    let first = direct.content.iter().find_map(|c| c.as_text().map(|t| t.text.clone())).unwrap_or_default();
    let direct: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {}", controlplane::mcp::text(&direct)));
    assert_eq!(direct.get("X-Team-Key").map(String::as_str), Some("k-123"), "the header the vMCP injects: {direct:?}");
    let recalled = controlplane::mcp::text(&session.call("remember", json!({"fact": "composed in a real pod"})).await.unwrap());
    assert!(recalled.contains("composed in a real pod"), "the composite tool's last step: {recalled}");
    session.close().await.unwrap();

    // The stdio server leaves (deleted): 2 backends, and its tools are gone.
    servers.delete("vm-hello", &DeleteParams::default()).await.unwrap();
    operator
        .within("the VirtualMCPServer down to 3 backends", POD_LIMIT, || async {
            let status = virtuals.get("team").await.ok()?.status?;
            (status.backend_count == 3 && status.discovered_backends.len() == 3).then_some(())
        })
        .await;
    let session = virtual_session(admin, team, "team", operator, |tools| !tools.iter().any(|t| t.starts_with("vm-hello_"))).await;
    let tools: Vec<String> = session.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"vm-memory_read_graph".to_string()) && tools.contains(&"vm-echo_request_headers".to_string()), "{tools:?}");
    session.close().await.unwrap();

    // Incoming OIDC with the cluster's service account tokens (the MCPOIDCConfig the
    // proxies used above). The vMCP reads the cluster's keys without an API token of
    // its own, so here the API server serves them to anonymous clients (the platform
    // team's choice: README, "Incoming OIDC").
    let discovery: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "anonymous-service-account-issuer-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}]}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&post, &discovery).await.unwrap();
    // And Cedar policies from a shared MCPAuthzConfig: callers may read the graph, nothing else.
    let read_only = json!({"type": "cedarv1", "config": {
        "policies": [r#"permit(principal, action == Action::"call_tool", resource == Tool::"vm-memory_read_graph");"#]}});
    Api::<toolhive_operator::kinds::authz::MCPAuthzConfig>::namespaced(admin.clone(), team)
        .create(&post, &serde_json::from_value(object("MCPAuthzConfig", "vmcp-read-only", read_only)).unwrap())
        .await
        .unwrap();
    let guarded = json!({"groupRef": {"name": "team-tools"},
        "incomingAuth": {"type": "oidc", "oidcConfigRef": {"name": "cluster-tokens", "audience": "team-vmcp"},
            "authzConfigRef": {"name": "vmcp-read-only"}}});
    virtuals.create(&post, &serde_json::from_value(object("VirtualMCPServer", "guarded-vmcp", guarded)).unwrap()).await.unwrap();
    operator
        .within("the OIDC VirtualMCPServer Ready", POD_LIMIT, || async {
            let status = virtuals.get("guarded-vmcp").await.ok()?.status?;
            (status.phase == Some(VirtualPhase::Ready)).then_some(())
        })
        .await;
    let (url, address) = controlplane::mcp::virtual_server_endpoint(admin, team, "guarded-vmcp").await.unwrap();
    let token_for = |audience: &'static str| async move {
        let request: k8s_openapi::api::authentication::v1::TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [audience], "expirationSeconds": 600}})).unwrap();
        let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), team);
        accounts.create_token_request("default", &PostParams::default(), &request).await.unwrap().status.unwrap().token.expect("a token")
    };
    let other = token_for("someone-else").await;
    let refused = operator
        .within("the OIDC VirtualMCPServer answering 401 without a token", POD_LIMIT, || async {
            let refused = controlplane::mcp::Session::connect_as(&url, address, None).await.err().map(|e| format!("{e:#}"))?;
            refused.contains("Auth required").then_some(refused)
        })
        .await;
    let wrong = controlplane::mcp::Session::connect_as(&url, address, Some(&other)).await.err().map(|e| format!("{e:#}"));
    assert!(wrong.as_deref().is_some_and(|e| e.contains("Auth required")), "another audience's token: {wrong:?} (no token: {refused})");
    let token = token_for("team-vmcp").await;
    let session = operator
        .within("an authenticated session with the OIDC VirtualMCPServer", POD_LIMIT, || async {
            match controlplane::mcp::Session::connect_as(&url, address, Some(&token)).await {
                Ok(session) => Some(session),
                Err(e) => {
                    eprintln!("OIDC VirtualMCPServer: {e:#}");
                    None
                }
            }
        })
        .await;
    let tools: Vec<String> = session.tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert!(tools.contains(&"vm-memory_read_graph".to_string()), "a token for the right audience gets the tools: {tools:?}");
    assert!(session.call("vm-memory_read_graph", json!({})).await.is_ok(), "permitted by the shared policy");
    let denied = session.call("vm-memory_create_entities", json!({"entities": []})).await;
    assert!(denied.as_ref().map_or(true, |r| r.is_error == Some(true)), "not permitted by the shared policy: {denied:?}");
    session.close().await.unwrap();
    virtuals.delete("guarded-vmcp", &DeleteParams::default()).await.unwrap();
}

/// An MCP session with the VirtualMCPServer `name` at its `status.url` whose tool
/// names satisfy `wanted` (a rolled vMCP pod may still be behind the Service).
async fn virtual_session(
    admin: &Client,
    ns: &str,
    name: &str,
    operator: &OperatorPod,
    wanted: impl Fn(&[String]) -> bool,
) -> controlplane::mcp::Session {
    let wanted = &wanted;
    operator
        .within("an MCP session with the VirtualMCPServer at its status.url", POD_LIMIT, || async move {
            let (url, address) = controlplane::mcp::virtual_server_endpoint(admin, ns, name).await.ok()?;
            let attempt = async {
                let session = controlplane::mcp::Session::connect(&url, address).await?;
                let tools: Vec<String> = session.tools().await?.into_iter().map(|t| t.name.to_string()).collect();
                Ok::<_, Box<dyn std::error::Error>>((session, tools))
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok((session, tools))) if wanted(&tools) => Some(session),
                Ok(Ok((session, tools))) => {
                    eprintln!("VirtualMCPServer at {url}: tools {tools:?}");
                    let _ = session.close().await;
                    None
                }
                Ok(Err(e)) => {
                    eprintln!("VirtualMCPServer at {url}: {e}");
                    None
                }
                Err(_) => None,
            }
        })
        .await
}

/// Creates an MCPServer. Right after the chart is installed, kube-proxy may not yet
/// route the webhook Service to the operator pod, and the API server's call is
/// refused: that is retried, nothing else.
async fn create(servers: &Api<MCPServer>, object: &MCPServer) {
    for _ in 0..120 {
        match servers.create(&PostParams::default(), object).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 500 && e.message.contains("failed calling webhook") => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("create {}: {e}", object.name_any()),
        }
    }
    panic!("create {}: the webhook stayed unreachable", object.name_any());
}

/// Waits for phase Ready with one ready replica.
async fn ready(servers: &Api<MCPServer>, operator: &OperatorPod, name: &str) {
    operator
        .within(&format!("{name} Ready with one ready replica"), POD_LIMIT, || async {
            let status = servers.get(name).await.ok()?.status?;
            (status.phase == Some(Phase::Ready) && status.ready_replicas == Some(1)).then_some(())
        })
        .await;
}

/// An MCP session through the proxy at the server's `status.url`. Right after a
/// roll the old proxy pod may still be behind the Service: retried.
async fn open_session(admin: &Client, ns: &str, name: &str, operator: &OperatorPod) -> controlplane::mcp::Session {
    open_session_as(admin, ns, name, operator, None).await
}

/// As [`open_session`], with a bearer token.
async fn open_session_as(admin: &Client, ns: &str, name: &str, operator: &OperatorPod, token: Option<&str>) -> controlplane::mcp::Session {
    operator
        .within(&format!("an MCP session with {name} at its status.url"), POD_LIMIT, || async {
            let (url, address) = controlplane::mcp::proxy_endpoint(admin, ns, name).await.ok()?;
            // A proxy that accepts and never answers (one going away) must not hold
            // the attempt: each is bounded, the next one tries again.
            let attempt = async {
                let session = controlplane::mcp::Session::connect_as(&url, address, token).await?;
                session.tools().await?;
                Ok::<_, Box<dyn std::error::Error>>(session)
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok(session)) => Some(session),
                Ok(Err(e)) => {
                    eprintln!("MCP session with {name} at {url}: {e}");
                    None
                }
                Err(_) => {
                    eprintln!("MCP session with {name} at {url}: no answer in 20 s");
                    None
                }
            }
        })
        .await
}

async fn runner_pods(admin: &Client, ns: &str, name: &str) -> Vec<Pod> {
    let selector = format!("app=mcpserver,app.kubernetes.io/instance={name}");
    let pods = Api::<Pod>::namespaced(admin.clone(), ns).list(&ListParams::default().labels(&selector)).await.unwrap();
    pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The operator as the chart's pod: waits that fail show its log, and the logs of
/// the team's pods (the proxy runners and the MCP servers they started).
struct OperatorPod {
    kubeconfig: std::path::PathBuf,
    team: String,
}

impl OperatorPod {
    async fn within<T, F, Fut>(&self, what: &str, limit: Duration, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        wait_until(what, limit, f, || pod_logs(&self.kubeconfig, &self.team)).await
    }
}

fn pod_logs(kubeconfig: &std::path::Path, team: &str) -> String {
    let (_, pods, _) = run("kubectl", kubeconfig, &["get", "pods", "-A", "-o", "wide"], None);
    // Why pods ended or wait: the pod's own reason (Evicted, ...) and the node's
    // pressure conditions and taints, which `get pods` hides.
    let (_, reasons, _) = run(
        "kubectl",
        kubeconfig,
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "custom-columns=NAME:.metadata.name,PHASE:.status.phase,REASON:.status.reason,MESSAGE:.status.message",
        ],
        None,
    );
    let (_, node, _) = run(
        "kubectl",
        kubeconfig,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} taints={.spec.taints}{\"\\n\"}{range .status.conditions[*]}  {.type}={.status} {.message}{\"\\n\"}{end}{end}",
        ],
        None,
    );
    let (_, log, err) = run("kubectl", kubeconfig, &["-n", RELEASE_NS, "logs", "deploy/toolhive-operator", "--tail=40"], None);
    let mut out = format!("{pods}\n{reasons}\n{node}\n{log}{err}");
    let (_, names, _) = run("kubectl", kubeconfig, &["-n", team, "get", "pods", "-o", "name"], None);
    for pod in names.lines() {
        let (_, log, err) = run("kubectl", kubeconfig, &["-n", team, "logs", pod, "--all-containers", "--tail=30"], None);
        out.push_str(&format!("\n--- {team}/{pod}\n{log}{err}"));
    }
    out
}

/// A Redis on the host, listening on the node's bridge address only, with a
/// password; stopped when dropped.
struct HostRedis {
    child: std::process::Child,
    address: String,
    password: String,
}

impl HostRedis {
    fn start(work: &std::path::Path) -> Self {
        let gateway = controlplane::node::GATEWAY;
        let port = std::net::TcpListener::bind((gateway, 0)).unwrap().local_addr().unwrap().port();
        let password = format!("pw-{}", std::process::id());
        let child = std::process::Command::new("redis-server")
            .args(["--bind", &gateway.to_string(), "--port", &port.to_string(), "--requirepass", &password])
            .args(["--save", "", "--appendonly", "no", "--dir", work.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/node-packages.sh installs it)");
        let redis = Self { child, address: format!("{gateway}:{port}"), password };
        for _ in 0..100 {
            if std::net::TcpStream::connect((gateway, port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not listen on {}", redis.address);
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        let (host, port) = self.address.split_once(':').unwrap();
        let out = std::process::Command::new("redis-cli")
            .args(["-h", host, "-p", port, "--no-auth-warning", "-a", &self.password, "--raw", "keys", pattern])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
    }
}

impl Drop for HostRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` percent-encoded as a query value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An MCP server the team runs itself (a Deployment and a Service, no MCPServer),
/// reached through an MCPRemoteProxy that adds a plaintext header, a header from a
/// Secret and a bearer token from a Secret (an MCPExternalAuthConfig of type
/// bearerToken): the backend sees all three, and the proxy's runner reads no Secret
/// (its Role grants none). A proxy to a metadata address is refused at admission.
async fn remote_proxy(admin: &Client, team: &str, operator: &OperatorPod) {
    use k8s_openapi::api::core::v1::Secret;
    use toolhive_operator::kinds::externalauth::MCPExternalAuthConfig;
    use toolhive_operator::kinds::mcpserver::remote::MCPRemoteProxy;
    let post = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), team);
    for (name, key, value) in [("saas-key", "key", "k-123"), ("saas-bearer", "token", "b-456")] {
        let secret = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {key: value}})).unwrap();
        secrets.create(&post, &secret).await.unwrap();
    }
    let labels = json!({"app": "echo-backend"});
    let backend: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "echo-backend"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "echo", "image": ECHO_IMAGE, "args": ["-http", ":8080"], "ports": [{"containerPort": 8080}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(admin.clone(), team).create(&post, &backend).await.unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo-backend"}, "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), team).create(&post, &service).await.unwrap();
    let bearer: MCPExternalAuthConfig = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPExternalAuthConfig", "metadata": {"name": "saas-bearer"},
        "spec": {"type": "bearerToken", "bearerToken": {"tokenSecretRef": {"name": "saas-bearer", "key": "token"}}}
    }))
    .unwrap();
    Api::<MCPExternalAuthConfig>::namespaced(admin.clone(), team).create(&post, &bearer).await.unwrap();

    let proxies: Api<MCPRemoteProxy> = Api::namespaced(admin.clone(), team);
    let proxy = |name: &str, url: String| -> MCPRemoteProxy {
        serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPRemoteProxy", "metadata": {"name": name},
            "spec": {"remoteUrl": url, "allowPrivateEndpoint": true, "externalAuthConfigRef": {"name": "saas-bearer"},
                "headerForward": {"addPlaintextHeaders": {"X-Tenant": team},
                    "addHeadersFromSecret": [{"headerName": "X-API-Key", "valueSecretRef": {"name": "saas-key", "key": "key"}}]}}
        }))
        .unwrap()
    };
    let refused = proxies.create(&post, &proxy("metadata", "http://169.254.169.254/latest".into())).await.unwrap_err();
    assert!(refused.to_string().contains("spec.remoteUrl: Invalid value: remote URL host 169.254.169.254 is never allowed"), "{refused}");
    proxies.create(&post, &proxy("saas", format!("http://echo-backend.{team}.svc.cluster.local:8080/mcp"))).await.unwrap();
    operator
        .within("the MCPRemoteProxy Ready", POD_LIMIT, || async {
            let status = proxies.get("saas").await.ok()?.status?;
            (status.phase == Some(Phase::Ready)).then_some(())
        })
        .await;
    let session = operator
        .within("an MCP session through the remote proxy", POD_LIMIT, || async {
            let (url, address) = controlplane::mcp::remote_proxy_endpoint(admin, team, "saas").await.ok()?;
            let attempt = async {
                let session = controlplane::mcp::Session::connect(&url, address).await?;
                session.tools().await?;
                Ok::<_, Box<dyn std::error::Error>>(session)
            };
            match tokio::time::timeout(Duration::from_secs(20), attempt).await {
                Ok(Ok(session)) => Some(session),
                Ok(Err(e)) => {
                    eprintln!("MCP session through the remote proxy at {url}: {e}");
                    None
                }
                Err(_) => None,
            }
        })
        .await;
    let seen = controlplane::mcp::text(&session.call("request_headers", json!({})).await.unwrap());
    let seen: std::collections::BTreeMap<String, String> = serde_json::from_str(&seen).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(seen.get("X-Tenant").map(String::as_str), Some(team), "{seen:?}");
    assert_eq!(seen.get("X-Api-Key").map(String::as_str), Some("k-123"), "{seen:?}");
    assert_eq!(seen.get("Authorization").map(String::as_str), Some("Bearer b-456"), "{seen:?}");
    session.close().await.unwrap();
}
