//! Differential test against the reference: ToolHive's own operator (thv-operator
//! v0.44.0, built from the Go module proxy by `scripts/reference.sh`) and this one
//! run side by side, each on a control plane of its own with its own CRDs (the
//! reference's from its module source, this one's from the CRDs chart), and are fed
//! the same MCPServers (`tests/fixtures/parity/corpus.yaml`).
//! Every object each one creates in its namespace, and the RunConfig each writes, is
//! compared after normalising what is expected to differ between any two runs
//! (uids, resourceVersions, timestamps, managedFields, namespaces, this operator's
//! applied-hash annotation). A difference fails the test unless
//! `tests/fixtures/parity/known-differences.yaml` lists it with its reason; a listed
//! difference that no longer occurs fails it too, so the list stays true.

use std::{
    collections::BTreeMap,
    process::{Child, Command},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{ConfigMap, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};
use toolhive_operator::kinds::mcpserver::api::MCPServer;

use super::common::{Operator, eventually_within, run, run_ok, tempdir};

fn run_ok_with_stdin(kubeconfig: &std::path::Path, args: &[&str], stdin: &str) {
    let (ok, _, err) = run("kubectl", kubeconfig, args, Some(stdin));
    assert!(ok, "kubectl {args:?}: {err}");
}

const RUNNER_IMAGE: &str = "ghcr.io/stacklok/toolhive/proxyrunner:v0.44.0";
const VMCP_IMAGE: &str = "ghcr.io/stacklok/toolhive/vmcp:v0.44.0";
const APPLIED_HASH: &str = "toolhive.stacklok.dev/applied-hash";

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    /// MCPServer unless it says MCPRemoteProxy.
    #[serde(default = "mcpserver")]
    kind: String,
    spec: Value,
    /// This operator refuses the spec (its CRD rule): the message names this.
    #[serde(default)]
    refused_here: Option<String>,
    /// The reference cannot run the spec: its log says this (it then makes no objects).
    #[serde(default)]
    reference_fails: Option<String>,
    /// Companion objects (e.g. an MCPGroup) created first on both sides.
    #[serde(default)]
    companions: Vec<Value>,
}

fn mcpserver() -> String {
    "MCPServer".into()
}

impl Case {
    /// The API of the case's kind in `ns`.
    fn api(&self, client: &Client, ns: &str) -> Api<kube::api::DynamicObject> {
        let resource = match self.kind.as_str() {
            "MCPRemoteProxy" => kube::discovery::ApiResource::erase::<toolhive_operator::kinds::mcpserver::remote::MCPRemoteProxy>(&()),
            "VirtualMCPServer" => kube::discovery::ApiResource::erase::<toolhive_operator::kinds::virtualmcp::VirtualMCPServer>(&()),
            "EmbeddingServer" => kube::discovery::ApiResource::erase::<toolhive_operator::kinds::embedding::EmbeddingServer>(&()),
            _ => kube::discovery::ApiResource::erase::<MCPServer>(&()),
        };
        Api::namespaced_with(client.clone(), ns, &resource)
    }
}

#[derive(serde::Deserialize)]
struct Known {
    /// An object kind, `RunConfig`, or `*` for any.
    kind: String,
    /// `/`-separated path; `*` matches within one segment, `**` any rest.
    path: String,
    /// Servers of the corpus it applies to (all when empty).
    #[serde(default)]
    servers: Vec<String>,
    reason: String,
}

/// One difference: `kind` of the object (or `RunConfig`), the corpus server, the
/// path inside the object, and each side's value (absent: null).
#[derive(Debug, Clone, PartialEq)]
struct Difference {
    kind: String,
    server: String,
    path: String,
    ours: Value,
    reference: Value,
}

#[test]
fn every_child_object_and_runconfig_matches_the_reference_or_is_a_known_difference() {
    // Started on this thread, which outlives the children (they die with it).
    let start = || controlplane::ControlPlane::start(controlplane::Options { controller_manager: false, dir: None, node: false });
    let ours = start().expect("control plane for this operator");
    let reference = start().expect("control plane for the reference");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(scenario(&ours, &reference));
}

/// The reference operator as a child process, killed with the test.
struct Reference(Child);

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scenario(cp: &controlplane::ControlPlane, reference_cp: &controlplane::ControlPlane) {
    let admin = cp.client().await.unwrap();
    let reference_admin = reference_cp.client().await.unwrap();
    let kc = cp.kubeconfig.clone();
    let reference_kc = reference_cp.kubeconfig.clone();
    let work = tempdir("parity");
    let root = controlplane::repo_root();
    let (reference_bin, reference_crds) = controlplane::reference_build();

    let crds = root.join("deploy/charts/toolhive-operator-crds");
    run_ok("helm", &kc, &["upgrade", "-i", "toolhive-operator-crds", crds.to_str().unwrap(), "--wait"]);
    run_ok("kubectl", &reference_kc, &["apply", "--server-side", "-f", reference_crds.to_str().unwrap()]);
    run_ok("kubectl", &reference_kc, &["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    let ours_ns = cp.namespace(&admin, "parity-ours").await.unwrap();
    let system_ns = cp.namespace(&admin, "parity-system").await.unwrap();
    let reference_ns = reference_cp.namespace(&reference_admin, "parity-reference").await.unwrap();
    let reference_system_ns = reference_cp.namespace(&reference_admin, "parity-system").await.unwrap();

    let log = std::fs::File::create(work.join("reference.log")).unwrap();
    let mut command = Command::new(&reference_bin);
    command
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", controlplane::free_port().unwrap()))
        .arg(format!("--health-probe-bind-address=127.0.0.1:{}", controlplane::free_port().unwrap()))
        .env("KUBECONFIG", &reference_kc)
        .env("WATCH_NAMESPACE", &reference_ns)
        .env("POD_NAMESPACE", &reference_system_ns)
        .env("TOOLHIVE_RUNNER_IMAGE", RUNNER_IMAGE)
        .env("VMCP_IMAGE", VMCP_IMAGE)
        // Its usage-metrics middleware depends on its environment (off in CI, on
        // elsewhere); this operator never adds it. Off, as the reference's own switch says.
        .env("TOOLHIVE_USAGE_METRICS_ENABLED", "false")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    controlplane::die_with_spawning_thread(&mut command);
    let _reference = Reference(command.spawn().unwrap());
    let ours = Operator::spawn(
        &kc,
        &work,
        "ours",
        &["--webhook-bind-address=".into()],
        &[
            ("WATCH_NAMESPACE", &ours_ns),
            ("POD_NAMESPACE", &system_ns),
            ("TOOLHIVE_RUNNER_IMAGE", RUNNER_IMAGE),
            ("VMCP_IMAGE", VMCP_IMAGE),
        ],
    );

    let corpus = std::fs::read_to_string(root.join("tests/fixtures/parity/corpus.yaml")).unwrap();
    let cases: Vec<Case> =
        serde_yaml_ng::Deserializer::from_str(&corpus).map(|doc| serde::Deserialize::deserialize(doc).expect("corpus document")).collect();
    let sides = [(&admin, &ours_ns), (&reference_admin, &reference_ns)];
    for case in &cases {
        for (kc, ns) in [(&kc, &ours_ns), (&reference_kc, &reference_ns)] {
            for companion in &case.companions {
                run_ok_with_stdin(kc, &["apply", "-n", ns, "-f", "-"], &companion.to_string());
            }
        }
        for (client, ns) in sides {
            // Through the typed kind, as users' clients of this API send it.
            let written = json!({
                "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": case.kind, "metadata": {"name": case.name}, "spec": case.spec
            });
            let typed = match case.kind.as_str() {
                "MCPRemoteProxy" => serde_json::to_value(
                    serde_json::from_value::<toolhive_operator::kinds::mcpserver::remote::MCPRemoteProxy>(written).unwrap(),
                ),
                "VirtualMCPServer" => {
                    serde_json::to_value(serde_json::from_value::<toolhive_operator::kinds::virtualmcp::VirtualMCPServer>(written).unwrap())
                }
                "EmbeddingServer" => {
                    serde_json::to_value(serde_json::from_value::<toolhive_operator::kinds::embedding::EmbeddingServer>(written).unwrap())
                }
                _ => serde_json::to_value(serde_json::from_value::<MCPServer>(written).unwrap()),
            };
            let object: kube::api::DynamicObject = serde_json::from_value(typed.unwrap()).unwrap();
            let created = case.api(client, ns).create(&PostParams::default(), &object).await;
            match (&case.refused_here, created) {
                (Some(field), Err(e)) if ns == &ours_ns => assert!(e.to_string().contains(field.as_str()), "{}: {e}", case.name),
                (Some(_), Ok(_)) if ns == &ours_ns => panic!("{} was accepted here; the corpus says it is refused", case.name),
                (_, created) => {
                    created.unwrap_or_else(|e| panic!("{} in {ns}: {e}", case.name));
                }
            }
        }
    }
    // Each operator has made a server's objects when its Deployment exists (an
    // EmbeddingServer's: its Service); the reference writes it last.
    let reference_log = work.join("reference.log");
    for case in &cases {
        let skip = usize::from(case.refused_here.is_some());
        let take = if case.reference_fails.is_some() { 1 } else { sides.len() };
        for (client, ns) in sides.iter().take(take).skip(skip) {
            let what = format!("the children of {} in {ns} (reference log: {})", case.name, reference_log.display());
            let (deployments, services) =
                (Api::<Deployment>::namespaced((*client).clone(), ns), Api::<Service>::namespaced((*client).clone(), ns));
            eventually_within(&what, &ours, Duration::from_secs(90), || async {
                match case.kind.as_str() {
                    "EmbeddingServer" => services.get_opt(&case.name).await.ok()?.map(|_| ()),
                    _ => deployments.get_opt(&case.name).await.ok()?.map(|_| ()),
                }
            })
            .await;
        }
        if let Some(failure) = &case.reference_fails {
            let what = format!("the reference to fail on {} with {failure:?} (log: {})", case.name, reference_log.display());
            eventually_within(&what, &ours, Duration::from_secs(90), || async {
                let log = std::fs::read_to_string(&reference_log).ok()?;
                log.lines().any(|l| l.contains(&format!("{}.name={}", case.kind, case.name)) && l.contains(failure.as_str())).then_some(())
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let ours_objects = objects(&admin, &ours_ns, &names).await;
    let reference_objects = objects(&reference_admin, &reference_ns, &names).await;
    let mut differences = Vec::new();
    for key in ours_objects.keys().chain(reference_objects.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (kind, server, _) = key;
        let ours_value = ours_objects.get(key).map(|v| normalise(v.clone(), &ours_ns)).unwrap_or(Value::Null);
        let reference_value = reference_objects.get(key).map(|v| normalise(v.clone(), &reference_ns)).unwrap_or(Value::Null);
        diff(kind, server, "", &ours_value, &reference_value, &mut differences);
    }

    let known: Vec<Known> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root.join("tests/fixtures/parity/known-differences.yaml")).unwrap()).unwrap();
    let patterns: Vec<(regex::Regex, regex::Regex)> = known.iter().map(|k| (pattern(&k.kind), pattern(&k.path))).collect();
    let mut used = vec![false; known.len()];
    let mut unexplained = Vec::new();
    // Per server: how many differences, and which known entries explain them.
    let mut table: BTreeMap<&str, (usize, std::collections::BTreeSet<usize>)> =
        cases.iter().map(|c| (c.name.as_str(), Default::default())).collect();
    for d in &differences {
        let matched = known.iter().enumerate().find(|(i, k)| {
            let (kind, path) = &patterns[*i];
            kind.is_match(&d.kind) && (k.servers.is_empty() || k.servers.contains(&d.server)) && path.is_match(&d.path)
        });
        match matched {
            Some((i, _)) => {
                used[i] = true;
                if let Some(row) = table.get_mut(d.server.as_str()) {
                    row.0 += 1;
                    row.1.insert(i + 1);
                }
            }
            None => unexplained.push(format!("{} of {} at {}: ours {} / reference {}", d.kind, d.server, d.path, d.ours, d.reference)),
        }
    }
    println!("| server | differences | known-differences.yaml entries (1-based) |\n|---|---|---|");
    for (server, (count, entries)) in &table {
        let list: Vec<String> = entries.iter().map(usize::to_string).collect();
        println!("| {server} | {count} | {} |", if list.is_empty() { "identical".to_string() } else { list.join(", ") });
    }
    let stale: Vec<String> =
        known.iter().zip(&used).filter(|(_, used)| !**used).map(|(k, _)| format!("{} {} ({})", k.kind, k.path, k.reason)).collect();
    println!(
        "parity: {} servers, {} objects here, {} in the reference, {} differences, all explained by {} entries",
        cases.len(),
        ours_objects.len(),
        reference_objects.len(),
        differences.len(),
        known.len()
    );
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "differences not in known-differences.yaml ({}):\n{}\n\nentries that match nothing any more ({}):\n{}\n\nreference log: {}",
        unexplained.len(),
        unexplained.join("\n"),
        stale.len(),
        stale.join("\n"),
        std::fs::read_to_string(&reference_log).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().join("\n"),
    );
}

/// Every object of the compared kinds in `ns`, keyed by (kind, corpus server, name
/// with the server's name replaced by `<name>`); the RunConfig of each server too.
async fn objects(client: &Client, ns: &str, servers: &[&str]) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    let mut add = |kind: &str, name: &str, value: Value| {
        // The longest server name that this object's name contains is its server.
        let server = servers.iter().filter(|s| name.contains(*s)).max_by_key(|s| s.len()).copied().unwrap_or("(none)");
        out.insert((kind.to_string(), server.to_string(), name.replacen(server, "<name>", 1)), value);
    };
    macro_rules! collect {
        ($kind:ty) => {
            for object in Api::<$kind>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items {
                let name = object.meta().name.clone().unwrap_or_default();
                if name == "default" || name == "kube-root-ca.crt" {
                    continue;
                }
                let kind = <$kind as Resource>::kind(&()).to_string();
                let value = serde_json::to_value(&object).unwrap();
                if let Some(runconfig) = value.pointer("/data/runconfig.json").and_then(Value::as_str) {
                    add("RunConfig", &name, serde_json::from_str(runconfig).unwrap_or(Value::String(runconfig.into())));
                }
                if let Some(config) = value.pointer("/data/config.yaml").and_then(Value::as_str) {
                    add("VmcpConfig", &name, serde_yaml_ng::from_str(config).unwrap_or(Value::String(config.into())));
                }
                add(&kind, &name, value);
            }
        };
    }
    // Companion kinds, as the API serves them (either operator's schema), and the
    // VirtualMCPServers and EmbeddingServers (not their status).
    let companions = [
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::virtualmcp::VirtualMCPServer>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::embedding::EmbeddingServer>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::group::MCPGroup>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::toolconfig::MCPToolConfig>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::telemetry::MCPTelemetryConfig>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::oidc::MCPOIDCConfig>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::authz::MCPAuthzConfig>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::webhookconfig::MCPWebhookConfig>(&()),
        kube::discovery::ApiResource::erase::<toolhive_operator::kinds::externalauth::MCPExternalAuthConfig>(&()),
    ];
    for resource in &companions {
        let api = Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, resource);
        for object in api.list(&ListParams::default()).await.unwrap().items {
            let name = object.metadata.name.clone().unwrap_or_default();
            add(&resource.kind, &name, serde_json::to_value(&object).unwrap());
        }
    }
    collect!(ConfigMap);
    collect!(ServiceAccount);
    collect!(Role);
    collect!(RoleBinding);
    collect!(Deployment);
    collect!(Service);
    collect!(StatefulSet);
    out
}

/// Removes what differs between any two runs and puts `NAMESPACE` for the namespace.
fn normalise(mut value: Value, ns: &str) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace", "selfLink"] {
            meta.remove(field);
        }
        if let Some(owners) = meta.get_mut("ownerReferences").and_then(Value::as_array_mut) {
            for owner in owners {
                owner.as_object_mut().map(|o| o.remove("uid"));
            }
        }
    }
    for annotations in ["/metadata/annotations", "/spec/template/metadata/annotations"] {
        if let Some(map) = value.pointer_mut(annotations).and_then(Value::as_object_mut) {
            map.remove(APPLIED_HASH);
            if map.is_empty() {
                let parent = annotations.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
                value.pointer_mut(parent).and_then(Value::as_object_mut).map(|m| m.remove("annotations"));
            }
        }
    }
    // The runner's pod patch flag: compared as JSON, not as text.
    if let Some(args) = value.pointer_mut("/spec/template/spec/containers/0/args").and_then(Value::as_array_mut) {
        for arg in args {
            let parsed = arg.as_str().and_then(|a| a.strip_prefix("--k8s-pod-patch=")).and_then(|p| serde_json::from_str::<Value>(p).ok());
            if let Some(patch) = parsed {
                *arg = json!({"--k8s-pod-patch": patch});
            }
        }
    }
    // Addresses the API server allocates.
    if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    // RBAC verbs are a set.
    if let Some(rules) = value.get_mut("rules").and_then(Value::as_array_mut) {
        for rule in rules {
            if let Some(verbs) = rule.get_mut("verbs").and_then(Value::as_array_mut) {
                verbs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    // A companion kind's status is what its controller computes: compared, less the
    // condition's transition time.
    let keeps_status = value.get("kind").and_then(Value::as_str).is_some_and(|kind| kind.starts_with("MCP") && kind != "MCPServer");
    if let Some(conditions) = value.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            condition.as_object_mut().map(|c| c.remove("lastTransitionTime"));
        }
    }
    if let Some(object) = value.as_object_mut() {
        if !keeps_status {
            object.remove("status");
        }
        // The RunConfig and the vMCP's file travel parsed, as kinds of their own.
        object.get_mut("data").and_then(Value::as_object_mut).map(|d| {
            d.remove("runconfig.json");
            d.remove("config.yaml")
        });
        if object.get("data").and_then(Value::as_object).is_some_and(|d| d.is_empty()) {
            object.remove("data");
        }
    }
    replace_namespace(value, ns)
}

fn replace_namespace(value: Value, ns: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace(ns, "NAMESPACE")),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| replace_namespace(v, ns)).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, replace_namespace(v, ns))).collect()),
        other => other,
    }
}

/// Records where `ours` and `reference` differ. Lists whose items all have a `name`
/// are matched by name (`[name=x]`), others by index.
fn diff(kind: &str, server: &str, path: &str, ours: &Value, reference: &Value, out: &mut Vec<Difference>) {
    let record = |out: &mut Vec<Difference>| {
        out.push(Difference {
            kind: kind.to_string(),
            server: server.to_string(),
            path: if path.is_empty() { "/".into() } else { path.to_string() },
            ours: ours.clone(),
            reference: reference.clone(),
        })
    };
    match (ours, reference) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
                let child = format!("{path}/{}", key.replace('/', "~1"));
                diff(kind, server, &child, a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let named = |items: &Vec<Value>| -> Option<BTreeMap<String, Value>> {
                items.iter().map(|item| Some((item.get("name")?.as_str()?.to_string(), item.clone()))).collect()
            };
            match (named(a), named(b)) {
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
                    for key in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
                        let child = format!("{path}/[name={key}]");
                        diff(kind, server, &child, a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), out);
                    }
                }
                _ => {
                    for i in 0..a.len().max(b.len()) {
                        diff(kind, server, &format!("{path}/{i}"), a.get(i).unwrap_or(&Value::Null), b.get(i).unwrap_or(&Value::Null), out);
                    }
                }
            }
        }
        (a, b) if a == b => {}
        _ => record(out),
    }
}

fn pattern(path: &str) -> regex::Regex {
    let escaped = regex::escape(path).replace(r"\*\*", ".*").replace(r"\*", "[^/]*");
    regex::Regex::new(&format!("^{escaped}$")).unwrap()
}
