//! Pure functions that build the objects an MCPServer owns. No I/O here, so every
//! name, label and field is unit-tested directly.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{
    MCPServer, PermissionProfileType, ProxyMode, RESTARTED_AT_ANNOTATION, SessionAffinity, Transport,
};

pub const RUNCONFIG_SCHEMA_VERSION: &str = "v0.1.0";
pub const RUNCONFIG_KEY: &str = "runconfig.json";
pub const RUNCONFIG_MOUNT_PATH: &str = "/etc/runconfig";
pub const PROFILE_MOUNT_DIR: &str = "/etc/toolhive/profiles";
pub const PROXY_CONTAINER: &str = "toolhive";
/// Annotation on every child: hash of what the operator last applied, so a child that
/// already matches is never written again.
pub const SPEC_HASH_ANNOTATION: &str = "toolhive.stacklok.dev/applied-hash";
/// Pod-template annotation carrying the RunConfig hash: a RunConfig change rolls the proxy.
pub const RUNCONFIG_HASH_ANNOTATION: &str = "toolhive.stacklok.dev/runconfig-hash";

/// Names of the objects the operator creates for an MCPServer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNames {
    pub runconfig: String,
    pub proxy_runner: String,
    pub mcp_service_account: String,
    pub deployment: String,
    pub service: String,
}

impl ChildNames {
    pub fn for_server(name: &str) -> Self {
        Self {
            runconfig: format!("{name}-runconfig"),
            proxy_runner: format!("{name}-proxy-runner"),
            mcp_service_account: format!("{name}-sa"),
            deployment: name.to_string(),
            service: format!("mcp-{name}-proxy"),
        }
    }
}

impl ChildNames {
    /// Whether `child` is one of these names.
    pub fn owns(&self, child: &str) -> bool {
        [&self.runconfig, &self.proxy_runner, &self.mcp_service_account, &self.deployment, &self.service]
            .iter()
            .any(|n| n.as_str() == child)
    }
}

pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".into(), "mcpserver".into()),
        ("app.kubernetes.io/name".into(), "mcpserver".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("toolhive".into(), "true".into()),
        ("toolhive-name".into(), name.into()),
    ])
}

/// Selector for everything the operator owns (used by its child watches).
pub const MANAGED_SELECTOR: &str = "toolhive=true";

pub fn service_url(server: &MCPServer) -> String {
    let name = server.metadata.name.as_deref().unwrap_or_default();
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    let base = format!("http://mcp-{name}-proxy.{ns}.svc.cluster.local:{}", server.proxy_port());
    match effective_proxy_mode(server) {
        ProxyMode::StreamableHttp => format!("{base}/mcp"),
        ProxyMode::Sse => format!("{base}/sse#{name}"),
    }
}

/// The protocol clients see: the transport itself for HTTP transports, proxyMode for stdio.
pub fn effective_proxy_mode(server: &MCPServer) -> ProxyMode {
    match server.spec.transport {
        Transport::Stdio => server.spec.proxy_mode,
        Transport::StreamableHttp => ProxyMode::StreamableHttp,
        Transport::Sse => ProxyMode::Sse,
    }
}

/// The ServiceAccount the MCP server pod runs as.
pub fn mcp_service_account(server: &MCPServer) -> String {
    match &server.spec.service_account {
        Some(sa) if !sa.is_empty() => sa.clone(),
        _ => ChildNames::for_server(server.metadata.name.as_deref().unwrap_or_default()).mcp_service_account,
    }
}

/// The pod-template patch the runner applies to the MCP StatefulSet: the user's
/// podTemplateSpec plus the MCP ServiceAccount.
pub fn pod_template_patch(server: &MCPServer) -> Value {
    let mut patch = server.spec.pod_template_spec.clone().unwrap_or_else(|| json!({}));
    if !patch.is_object() {
        patch = json!({});
    }
    if patch.get("spec").map(|s| !s.is_object()).unwrap_or(true) {
        patch["spec"] = json!({});
    }
    patch["spec"]["serviceAccountName"] = json!(mcp_service_account(server));
    patch
}

/// The RunConfig JSON the ToolHive proxy runner reads from `/etc/runconfig/runconfig.json`.
pub fn runconfig(server: &MCPServer) -> Value {
    let name = server.metadata.name.as_deref().unwrap_or_default();
    let ns = server.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &server.spec;
    let mut rc = json!({
        "schema_version": RUNCONFIG_SCHEMA_VERSION,
        "name": name,
        "image": spec.image,
        "transport": spec.transport.as_str(),
        "host": "0.0.0.0",
        "port": server.proxy_port(),
        "proxy_mode": effective_proxy_mode(server).as_str(),
        "container_labels": labels(name),
        "k8s_pod_template_patch": pod_template_patch(server).to_string(),
    });
    if let Some(generation) = server.metadata.generation {
        rc["mcpserver_generation"] = json!(generation);
    }
    if spec.transport != Transport::Stdio {
        rc["target_port"] = json!(server.mcp_port());
    }
    if !spec.args.is_empty() {
        rc["cmd_args"] = json!(spec.args);
    }
    if !spec.env.is_empty() {
        let env: BTreeMap<&str, &str> = spec.env.iter().map(|e| (e.name.as_str(), e.value.as_str())).collect();
        rc["env_vars"] = json!(env);
    }
    if !spec.volumes.is_empty() {
        let vols: Vec<String> = spec
            .volumes
            .iter()
            .map(|v| {
                let ro = if v.read_only { ":ro" } else { "" };
                format!("{}:{}{ro}", v.host_path, v.mount_path)
            })
            .collect();
        rc["volumes"] = json!(vols);
    }
    if !spec.secrets.is_empty() {
        let secrets: Vec<String> = spec
            .secrets
            .iter()
            .map(|s| {
                let target = if s.target_env_name.is_empty() { &s.key } else { &s.target_env_name };
                format!("{},target={target}", s.name)
            })
            .collect();
        rc["secrets"] = json!(secrets);
    }
    if let Some(profile) = &spec.permission_profile {
        rc["permission_profile_name_or_path"] = json!(match profile.profile_type {
            PermissionProfileType::Builtin => profile.name.clone(),
            PermissionProfileType::ConfigMap => format!("{PROFILE_MOUNT_DIR}/{}", profile_key(profile)),
        });
    }
    if spec.trust_proxy_headers {
        rc["trust_proxy_headers"] = json!(true);
    }
    if !spec.endpoint_prefix.is_empty() {
        rc["endpoint_prefix"] = json!(spec.endpoint_prefix);
    }
    if let Some(group) = &spec.group_ref {
        rc["group"] = json!(group.name);
    }
    if spec.audit.as_ref().is_some_and(|a| a.enabled) {
        rc["audit_config"] = json!({"component": name});
    }
    if let Some(rate) = &spec.rate_limiting {
        rc["rate_limit_config"] = rate.clone();
        rc["rate_limit_namespace"] = json!(ns);
    }
    if let Some(backend) = spec.backend_replicas {
        rc["scaling_config"] = json!({"backend_replicas": backend});
    }
    rc
}

fn profile_key(profile: &crate::api::PermissionProfileRef) -> String {
    if profile.key.is_empty() { "permissions.json".into() } else { profile.key.clone() }
}

pub fn hash_of(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn owner_reference(server: &MCPServer) -> OwnerReference {
    server.controller_owner_ref(&()).expect("MCPServer from the API server has a uid")
}

/// Common metadata for a child: name, namespace, labels (+ extra), owner, applied hash.
fn metadata(server: &MCPServer, name: &str, extra_labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> Value {
    let mut l = labels(server.metadata.name.as_deref().unwrap_or_default());
    l.extend(extra_labels.clone());
    json!({
        "name": name,
        "namespace": server.metadata.namespace,
        "labels": l,
        "annotations": annotations,
        "ownerReferences": [owner_reference(server)],
    })
}

/// A child object as server-side-apply JSON, stamped with the hash of its content.
fn stamped(mut obj: Value) -> Value {
    let hash = hash_of(&obj);
    obj["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = json!(hash);
    obj
}

/// Drops what the operator's caches never read, so a thousand servers cost little
/// memory: managedFields (often larger than the rest of the metadata) and every
/// annotation not in `keep`.
pub fn slim_metadata(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, keep: &[&str]) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| keep.contains(&k.as_str()));
    }
}

pub fn applied_hash(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.annotations.as_ref()?.get(SPEC_HASH_ANNOTATION).map(String::as_str)
}

pub fn desired_hash(obj: &Value) -> &str {
    obj["metadata"]["annotations"][SPEC_HASH_ANNOTATION].as_str().unwrap_or_default()
}

/// Every child the MCPServer should have, in apply order.
pub fn desired_children(server: &MCPServer, runner_image: &str) -> Vec<Child> {
    let mut out = vec![
        Child::new::<ConfigMap>(runconfig_configmap(server)),
        Child::new::<ServiceAccount>(proxy_service_account(server)),
        Child::new::<Role>(proxy_role(server)),
        Child::new::<RoleBinding>(proxy_role_binding(server)),
    ];
    if server.spec.service_account.as_deref().is_none_or(str::is_empty) {
        out.push(Child::new::<ServiceAccount>(mcp_sa(server)));
    }
    out.push(Child::new::<Deployment>(proxy_deployment(server, runner_image)));
    out.push(Child::new::<Service>(proxy_service(server)));
    out
}

/// The API resource of a child kind (as in [`Child::kind`]), for dynamic API calls.
pub fn child_api_resource(kind: &str) -> kube::core::ApiResource {
    use kube::core::ApiResource;
    match kind {
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        other => unreachable!("no child of kind {other}"),
    }
}

/// One desired child: its kind and the apply body.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub kind: &'static str,
    pub name: String,
    pub body: Value,
}

impl Child {
    fn new<K: Resource<DynamicType = ()>>(body: Value) -> Self {
        let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let kind: &'static str = match K::kind(&()) {
            std::borrow::Cow::Borrowed(k) => k,
            std::borrow::Cow::Owned(_) => "Unknown",
        };
        let mut body = body;
        body["apiVersion"] = json!(K::api_version(&()));
        body["kind"] = json!(kind);
        Self { kind, name, body: stamped(body) }
    }
}

fn server_name(server: &MCPServer) -> &str {
    server.metadata.name.as_deref().unwrap_or_default()
}

fn no_extra() -> BTreeMap<String, String> {
    BTreeMap::new()
}

pub fn runconfig_configmap(server: &MCPServer) -> Value {
    let names = ChildNames::for_server(server_name(server));
    let rc = serde_json::to_string_pretty(&runconfig(server)).expect("runconfig serializes");
    json!({
        "metadata": metadata(server, &names.runconfig, &no_extra(), &no_extra()),
        "data": {RUNCONFIG_KEY: rc},
    })
}

fn image_pull_secrets(server: &MCPServer) -> Vec<Value> {
    server
        .spec
        .resource_overrides
        .as_ref()
        .and_then(|o| o.proxy_deployment.as_ref())
        .map(|d| d.image_pull_secrets.iter().map(|s| json!({"name": s.name})).collect())
        .unwrap_or_default()
}

pub fn proxy_service_account(server: &MCPServer) -> Value {
    let names = ChildNames::for_server(server_name(server));
    let mut sa = json!({"metadata": metadata(server, &names.proxy_runner, &no_extra(), &no_extra())});
    let secrets = image_pull_secrets(server);
    if !secrets.is_empty() {
        sa["imagePullSecrets"] = json!(secrets);
    }
    sa
}

pub fn mcp_sa(server: &MCPServer) -> Value {
    let names = ChildNames::for_server(server_name(server));
    json!({"metadata": metadata(server, &names.mcp_service_account, &no_extra(), &no_extra())})
}

/// What the proxy runner needs to run the MCP server: its StatefulSet and Services,
/// to watch its pods, attach to stdio and read logs, and read its RunConfig.
pub fn proxy_role_rules() -> Value {
    json!([
        {"apiGroups": ["apps"], "resources": ["statefulsets"],
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
        {"apiGroups": [""], "resources": ["services"],
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
    ])
}

pub fn proxy_role(server: &MCPServer) -> Value {
    let names = ChildNames::for_server(server_name(server));
    json!({
        "metadata": metadata(server, &names.proxy_runner, &no_extra(), &no_extra()),
        "rules": proxy_role_rules(),
    })
}

pub fn proxy_role_binding(server: &MCPServer) -> Value {
    let names = ChildNames::for_server(server_name(server));
    json!({
        "metadata": metadata(server, &names.proxy_runner, &no_extra(), &no_extra()),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.proxy_runner},
        "subjects": [{"kind": "ServiceAccount", "name": names.proxy_runner, "namespace": server.metadata.namespace}],
    })
}

fn quantity_map(list: &crate::api::ResourceList) -> Value {
    let mut m = serde_json::Map::new();
    if !list.cpu.is_empty() {
        m.insert("cpu".into(), json!(list.cpu));
    }
    if !list.memory.is_empty() {
        m.insert("memory".into(), json!(list.memory));
    }
    Value::Object(m)
}

pub fn proxy_deployment(server: &MCPServer, runner_image: &str) -> Value {
    let name = server_name(server);
    let names = ChildNames::for_server(name);
    let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_deployment.as_ref());
    let (dep_labels, dep_annotations) = overrides
        .map(|d| (d.labels.clone(), d.annotations.clone()))
        .unwrap_or_default();
    let pod_meta = overrides.and_then(|d| d.pod_template_metadata_overrides.clone()).unwrap_or_default();

    let rc_hash = hash_of(&runconfig(server));
    let mut pod_annotations = pod_meta.annotations.clone();
    pod_annotations.insert(RUNCONFIG_HASH_ANNOTATION.into(), rc_hash);
    if let Some(at) = server.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT_ANNOTATION)) {
        pod_annotations.insert(RESTARTED_AT_ANNOTATION.into(), at.clone());
    }
    let mut pod_labels = labels(name);
    pod_labels.extend(pod_meta.labels.clone());

    let mut args = vec!["run".to_string()];
    if let Some(pts) = &server.spec.pod_template_spec {
        args.push(format!("--k8s-pod-patch={pts}"));
    }
    args.push(server.spec.image.clone());

    let mut env = vec![json!({"name": "XDG_CONFIG_HOME", "value": "/tmp"}), json!({"name": "HOME", "value": "/tmp"})];
    if let Some(d) = overrides {
        env.extend(d.env.iter().map(|e| json!({"name": e.name, "value": e.value})));
    }

    let mut volumes = vec![json!({"name": "runconfig", "configMap": {"name": names.runconfig}})];
    let mut mounts = vec![json!({"name": "runconfig", "mountPath": RUNCONFIG_MOUNT_PATH, "readOnly": true})];
    if let Some(profile) = &server.spec.permission_profile
        && profile.profile_type == PermissionProfileType::ConfigMap
    {
        let key = profile_key(profile);
        volumes.push(json!({"name": "permission-profile", "configMap": {"name": profile.name, "items": [{"key": key, "path": key}]}}));
        mounts.push(json!({"name": "permission-profile", "mountPath": PROFILE_MOUNT_DIR, "readOnly": true}));
    }

    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": runner_image,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": server.proxy_port(), "protocol": "TCP"}],
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 5, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 30, "periodSeconds": 10},
        "securityContext": {
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    let res = &server.spec.resources;
    if !res.is_empty() {
        let mut r = json!({});
        if !res.limits.is_empty() {
            r["limits"] = quantity_map(&res.limits);
        }
        if !res.requests.is_empty() {
            r["requests"] = quantity_map(&res.requests);
        }
        container["resources"] = r;
    }

    let mut pod_spec = json!({
        "serviceAccountName": names.proxy_runner,
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
    });
    let pull = image_pull_secrets(server);
    if !pull.is_empty() {
        pod_spec["imagePullSecrets"] = json!(pull);
    }

    let mut spec = json!({
        "selector": {"matchLabels": {"app": "mcpserver", "app.kubernetes.io/instance": name}},
        "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
    });
    if let Some(replicas) = server.spec.replicas {
        spec["replicas"] = json!(replicas);
    }
    json!({
        "metadata": metadata(server, &names.deployment, &dep_labels, &dep_annotations),
        "spec": spec,
    })
}

pub fn proxy_service(server: &MCPServer) -> Value {
    let name = server_name(server);
    let names = ChildNames::for_server(name);
    let svc = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_service.clone()).unwrap_or_default();
    let affinity = match server.spec.session_affinity {
        SessionAffinity::ClientIP => "ClientIP",
        SessionAffinity::None => "None",
    };
    json!({
        "metadata": metadata(server, &names.service, &svc.labels, &svc.annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": "mcpserver", "app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": server.proxy_port(), "targetPort": server.proxy_port(), "protocol": "TCP"}],
            "sessionAffinity": affinity,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MCPServerSpec;

    pub(crate) fn server(spec: Value) -> MCPServer {
        let mut s: MCPServer = serde_json::from_value(json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": "osv", "namespace": "team-a", "uid": "uid-1", "generation": 3},
            "spec": spec,
        }))
        .unwrap();
        s.status = None;
        s
    }

    fn osv() -> MCPServer {
        server(json!({"image": "ghcr.io/stackloklabs/osv-mcp/server", "transport": "streamable-http",
                      "mcpPort": 8080, "proxyPort": 8080}))
    }

    #[test]
    fn child_names_follow_the_compat_table() {
        let n = ChildNames::for_server("osv");
        assert_eq!(n.runconfig, "osv-runconfig");
        assert_eq!(n.proxy_runner, "osv-proxy-runner");
        assert_eq!(n.mcp_service_account, "osv-sa");
        assert_eq!(n.deployment, "osv");
        assert_eq!(n.service, "mcp-osv-proxy");
    }

    #[test]
    fn url_depends_on_transport_and_port() {
        assert_eq!(service_url(&osv()), "http://mcp-osv-proxy.team-a.svc.cluster.local:8080/mcp");
        let sse = server(json!({"image": "x", "transport": "sse", "proxyPort": 9000}));
        assert_eq!(service_url(&sse), "http://mcp-osv-proxy.team-a.svc.cluster.local:9000/sse#osv");
        let stdio = server(json!({"image": "x", "proxyMode": "sse"}));
        assert_eq!(service_url(&stdio), "http://mcp-osv-proxy.team-a.svc.cluster.local:8080/sse#osv");
    }

    #[test]
    fn runconfig_carries_what_the_runner_reads() {
        let s = server(json!({"image": "img", "transport": "streamable-http", "proxyPort": 8081, "mcpPort": 9090,
            "args": ["--a"], "env": [{"name": "K", "value": "V"}],
            "secrets": [{"name": "s", "key": "token"}, {"name": "s2", "key": "k", "targetEnvName": "T"}],
            "permissionProfile": {"type": "builtin", "name": "network"}}));
        let rc = runconfig(&s);
        assert_eq!(rc["schema_version"], "v0.1.0");
        assert_eq!(rc["name"], "osv");
        assert_eq!(rc["image"], "img");
        assert_eq!(rc["transport"], "streamable-http");
        assert_eq!(rc["port"], 8081);
        assert_eq!(rc["target_port"], 9090);
        assert_eq!(rc["cmd_args"], json!(["--a"]));
        assert_eq!(rc["env_vars"], json!({"K": "V"}));
        assert_eq!(rc["secrets"], json!(["s,target=token", "s2,target=T"]));
        assert_eq!(rc["permission_profile_name_or_path"], "network");
        assert_eq!(rc["proxy_mode"], "streamable-http");
        assert_eq!(rc["mcpserver_generation"], 3);
        let patch: Value = serde_json::from_str(rc["k8s_pod_template_patch"].as_str().unwrap()).unwrap();
        assert_eq!(patch["spec"]["serviceAccountName"], "osv-sa");
    }

    #[test]
    fn stdio_has_no_target_port_and_uses_custom_service_account() {
        let s = server(json!({"image": "img", "serviceAccount": "mine"}));
        let rc = runconfig(&s);
        assert!(rc.get("target_port").is_none());
        assert_eq!(rc["proxy_mode"], "streamable-http");
        let kinds: Vec<_> = desired_children(&s, "runner").iter().map(|c| (c.kind, c.name.clone())).collect();
        assert!(!kinds.contains(&("ServiceAccount", "osv-sa".to_string())));
        let patch: Value = serde_json::from_str(rc["k8s_pod_template_patch"].as_str().unwrap()).unwrap();
        assert_eq!(patch["spec"]["serviceAccountName"], "mine");
    }

    #[test]
    fn children_have_labels_owner_and_hash() {
        let children = desired_children(&osv(), "ghcr.io/stacklok/toolhive:latest");
        let kinds: Vec<_> = children.iter().map(|c| (c.kind, c.name.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                ("ConfigMap", "osv-runconfig"),
                ("ServiceAccount", "osv-proxy-runner"),
                ("Role", "osv-proxy-runner"),
                ("RoleBinding", "osv-proxy-runner"),
                ("ServiceAccount", "osv-sa"),
                ("Deployment", "osv"),
                ("Service", "mcp-osv-proxy"),
            ]
        );
        for c in &children {
            let meta = &c.body["metadata"];
            assert_eq!(meta["labels"]["toolhive-name"], "osv");
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "osv");
            assert_eq!(meta["ownerReferences"][0]["kind"], "MCPServer");
            assert_eq!(meta["ownerReferences"][0]["controller"], true);
            assert_eq!(desired_hash(&c.body).len(), 16);
        }
    }

    #[test]
    fn deployment_runs_the_runner_with_the_image_and_restart_annotation() {
        let mut s = osv();
        s.metadata.annotations = Some(BTreeMap::from([(RESTARTED_AT_ANNOTATION.into(), "2026-01-01T00:00:00Z".into())]));
        let d = proxy_deployment(&s, "runner:1");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "toolhive");
        assert_eq!(c["image"], "runner:1");
        assert_eq!(c["args"], json!(["run", "ghcr.io/stackloklabs/osv-mcp/server"]));
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/runconfig");
        assert_eq!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION], "2026-01-01T00:00:00Z");
        assert!(d["spec"].get("replicas").is_none(), "unset replicas leave scaling to others");
    }

    #[test]
    fn slim_metadata_keeps_only_what_is_read() {
        let mut meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta = serde_json::from_value(json!({
            "name": "osv",
            "annotations": {SPEC_HASH_ANNOTATION: "abc", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "MCPServer", "name": "osv", "uid": "u"}]
        }))
        .unwrap();
        slim_metadata(&mut meta, &[SPEC_HASH_ANNOTATION]);
        assert!(meta.managed_fields.is_none());
        assert_eq!(meta.annotations.unwrap().into_keys().collect::<Vec<_>>(), vec![SPEC_HASH_ANNOTATION.to_string()]);
        assert_eq!(meta.owner_references.unwrap().len(), 1, "owner references drive reconciles");
    }

    #[test]
    fn hash_changes_with_spec() {
        let a = desired_children(&osv(), "r");
        let mut other = osv();
        other.spec = MCPServerSpec { proxy_port: 9999, ..other.spec };
        let b = desired_children(&other, "r");
        assert_ne!(desired_hash(&a[0].body), desired_hash(&b[0].body));
        assert_eq!(desired_hash(&a[0].body), desired_hash(&desired_children(&osv(), "r")[0].body));
    }

    #[test]
    fn pod_template_patch_is_passed_to_the_runner() {
        let s = server(json!({"image": "img", "podTemplateSpec": {"spec": {"containers": [{"name": "mcp"}]}}}));
        let d = proxy_deployment(&s, "r");
        let args = d["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap().clone();
        assert_eq!(args.len(), 3);
        assert!(args[1].as_str().unwrap().starts_with("--k8s-pod-patch="));
    }
}
