//! What an EmbeddingServer runs, as pure functions: its StatefulSet (named as the
//! server, with a `model-cache` volume claim per replica when the cache is on) and
//! its Service (also named as the server), both owned by it.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetSpec},
    core::v1::{
        Container, ContainerPort, EnvVar, HTTPGetAction, LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
        PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
    },
};
use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    util::intstr::IntOrString,
};
use kube::{Resource, ResourceExt};

use crate::kinds::embedding::api::EmbeddingServer;
use crate::kinds::mcpserver::resources::{Child, MANAGED_SELECTOR};

pub const CONTAINER: &str = "embedding";
/// Where the model cache volume is mounted (`HF_HOME`).
pub const MODEL_CACHE_PATH: &str = "/data";
pub const MODEL_CACHE_VOLUME: &str = "model-cache";

/// The labels that select the server's pods (the reference's).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "embeddingserver"),
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/component", "embedding-server"),
        ("app.kubernetes.io/managed-by", "toolhive-operator"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The metadata of a child named as `server`, owned by it: the selector labels, the
/// label the operator's child watches select, and the overrides' labels and annotations.
fn child_meta(server: &EmbeddingServer, owner: OwnerReference, extra: Option<&Labels>, annotations: Option<&Labels>) -> ObjectMeta {
    let name = server.name_any();
    let mut labels = selector_labels(&name);
    let (key, value) = MANAGED_SELECTOR.split_once('=').unwrap_or((MANAGED_SELECTOR, ""));
    labels.insert(key.into(), value.into());
    labels.extend(extra.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    ObjectMeta {
        name: Some(name),
        namespace: server.namespace(),
        labels: Some(labels),
        annotations: annotations.and_then(|a| non_empty(a.clone())),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

type Labels = BTreeMap<String, String>;

fn non_empty<V>(map: BTreeMap<String, V>) -> Option<BTreeMap<String, V>> {
    (!map.is_empty()).then_some(map)
}

/// The server's URL inside the cluster.
pub fn url(server: &EmbeddingServer) -> String {
    format!("http://{}.{}.svc.cluster.local:{}", server.name_any(), server.namespace().unwrap_or_default(), server.spec.port)
}

/// The StatefulSet and the Service, stamped, in apply order; None before the server
/// is stored (no uid to own them). `pull_secrets`: the chart's defaults.
pub fn desired_children(server: &EmbeddingServer, pull_secrets: &[String]) -> Option<Vec<Child>> {
    let owner = OwnerReference { block_owner_deletion: Some(true), ..server.controller_owner_ref(&())? };
    Some(
        vec![Child::StatefulSet(stateful_set(server, owner.clone(), pull_secrets)), Child::Service(service(server, owner))]
            .into_iter()
            .map(Child::stamped)
            .collect(),
    )
}

fn health(port: i32, initial: i32, period: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some("/health".into()), port: IntOrString::Int(port), ..Default::default() }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn container(server: &EmbeddingServer) -> Container {
    let spec = &server.spec;
    let mut args = vec!["--model-id".to_string(), spec.model.clone(), "--port".to_string(), spec.port.to_string()];
    args.extend(spec.args.iter().cloned());
    let plain = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() };
    let mut env = vec![plain("MODEL_ID", &spec.model)];
    if let Some(token) = &spec.hf_token_secret_ref {
        env.push(crate::shared::refs::secret_env("HF_TOKEN", token));
    }
    env.extend(spec.env.iter().map(|e| plain(&e.name, &e.value)));
    let cache = spec.model_cache.as_ref().is_some_and(|c| c.enabled);
    if cache {
        env.push(plain("HF_HOME", MODEL_CACHE_PATH));
    }
    Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // The model loads before /health answers: the reference's generous delays.
        liveness_probe: Some(health(spec.port, 60, 30, 10)),
        readiness_probe: Some(health(spec.port, 30, 10, 5)),
        resources: spec.resources.requirements(),
        volume_mounts: cache
            .then(|| vec![VolumeMount { name: MODEL_CACHE_VOLUME.into(), mount_path: MODEL_CACHE_PATH.into(), ..Default::default() }]),
        ..Default::default()
    }
}

fn stateful_set(server: &EmbeddingServer, owner: OwnerReference, pull_secrets: &[String]) -> StatefulSet {
    let name = server.name_any();
    let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.stateful_set.as_ref());
    let pod_overrides = overrides.and_then(|o| o.pod_template_metadata_overrides.as_ref());
    let mut pod_labels = selector_labels(&name);
    pod_labels.extend(pod_overrides.into_iter().flat_map(|o| o.labels.clone()));
    let claims = server.spec.model_cache.as_ref().filter(|c| c.enabled).map(|cache| {
        let claim_overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.persistent_volume_claim.as_ref());
        let mut labels = selector_labels(&name);
        labels.extend(claim_overrides.into_iter().flat_map(|o| o.labels.clone()));
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(MODEL_CACHE_VOLUME.into()),
                labels: Some(labels),
                annotations: claim_overrides.and_then(|o| non_empty(o.annotations.clone())),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![cache.access_mode.as_str().into()]),
                storage_class_name: cache.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), Quantity(cache.size.clone()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: pod_overrides.and_then(|o| non_empty(o.annotations.clone())),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(server)],
            image_pull_secrets: (!pull_secrets.is_empty())
                .then(|| pull_secrets.iter().map(|s| LocalObjectReference { name: s.clone() }).collect()),
            ..Default::default()
        }),
    };
    // The user's podTemplateSpec over it (held to the namespace's pod policy at
    // admission); the pod runs as the namespace's default ServiceAccount, never one
    // the tenant names here, and keeps the selector's labels.
    if let Some(overlaid) = server.spec.pod_template_spec.as_ref().and_then(|o| crate::shared::podtemplate::overlaid(&template, o)) {
        template = overlaid;
        if let Some(pod) = template.spec.as_mut() {
            pod.service_account_name = None;
            pod.service_account = None;
        }
        template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(Default::default).extend(selector_labels(&name));
    }
    StatefulSet {
        metadata: child_meta(server, owner, overrides.map(|o| &o.labels), overrides.map(|o| &o.annotations)),
        spec: Some(StatefulSetSpec {
            replicas: server.spec.replicas.or(Some(1)),
            service_name: Some(name.clone()),
            selector: LabelSelector { match_labels: Some(selector_labels(&name)), ..Default::default() },
            template,
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(server: &EmbeddingServer, owner: OwnerReference) -> Service {
    let name = server.name_any();
    let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.service.as_ref());
    Service {
        metadata: child_meta(server, owner, overrides.map(|o| &o.labels), overrides.map(|o| &o.annotations)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: server.spec.port,
                target_port: Some(IntOrString::Int(server.spec.port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn server(spec: Value) -> EmbeddingServer {
        serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "EmbeddingServer",
            "metadata": {"name": "embed", "namespace": "team", "uid": "u-1"}, "spec": spec}))
        .unwrap()
    }

    fn children(spec: Value) -> (Value, Value) {
        let out = desired_children(&server(spec), &["pull".into()]).unwrap();
        let [Child::StatefulSet(set), Child::Service(service)] = out.as_slice() else { panic!("{out:?}") };
        (serde_json::to_value(set).unwrap(), serde_json::to_value(service).unwrap())
    }

    #[test]
    fn a_plain_server_gets_the_reference_s_statefulset_and_service() {
        let (set, service) = children(json!({"model": "sentence-transformers/all-MiniLM-L6-v2"}));
        let c = &set["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "embedding");
        assert_eq!(c["image"], "ghcr.io/huggingface/text-embeddings-inference:cpu-latest");
        assert_eq!(c["args"], json!(["--model-id", "sentence-transformers/all-MiniLM-L6-v2", "--port", "8080"]));
        assert_eq!(c["env"], json!([{"name": "MODEL_ID", "value": "sentence-transformers/all-MiniLM-L6-v2"}]));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 60);
        assert!(c.get("volumeMounts").is_none() && set["spec"].get("volumeClaimTemplates").is_none());
        assert_eq!(set["spec"]["replicas"], 1);
        assert_eq!(set["spec"]["serviceName"], "embed");
        assert_eq!(set["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"], "embed");
        assert_eq!(set["metadata"]["labels"]["toolhive"], "true", "seen by the operator's StatefulSet watch");
        assert!(set["spec"]["selector"]["matchLabels"].get("toolhive").is_none(), "the selector is the reference's");
        assert_eq!(set["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(set["spec"]["template"]["spec"]["imagePullSecrets"], json!([{"name": "pull"}]));
        assert_eq!(service["metadata"]["name"], "embed");
        assert_eq!(service["spec"]["ports"], json!([{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]));
        assert_eq!(url(&server(json!({}))), "http://embed.team.svc.cluster.local:8080");
    }

    #[test]
    fn cache_token_env_resources_and_overrides_reach_the_objects() {
        let (set, service) = children(json!({
            "port": 9000, "replicas": 2, "args": ["--max-batch-tokens", "1024"],
            "hfTokenSecretRef": {"name": "hf", "key": "token"}, "env": [{"name": "RUST_LOG", "value": "info"}],
            "resources": {"limits": {"memory": "2Gi"}},
            "modelCache": {"size": "20Gi", "storageClassName": "fast"},
            "resourceOverrides": {"statefulSet": {"annotations": {"a": "1"}, "podTemplateMetadataOverrides": {"labels": {"team": "x"}}},
                "service": {"annotations": {"lb": "nlb"}}, "persistentVolumeClaim": {"labels": {"tier": "ssd"}}}
        }));
        let c = &set["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["--model-id", "BAAI/bge-small-en-v1.5", "--port", "9000", "--max-batch-tokens", "1024"]));
        let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(env, ["MODEL_ID", "HF_TOKEN", "RUST_LOG", "HF_HOME"]);
        assert_eq!(c["env"][1]["valueFrom"]["secretKeyRef"], json!({"name": "hf", "key": "token"}));
        assert_eq!(c["resources"]["limits"]["memory"], "2Gi");
        assert_eq!(c["volumeMounts"], json!([{"name": "model-cache", "mountPath": "/data"}]));
        let claim = &set["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        assert_eq!(claim["metadata"]["labels"]["tier"], "ssd");
        assert_eq!(set["spec"]["replicas"], 2);
        assert_eq!(set["metadata"]["annotations"]["a"], "1");
        assert_eq!(set["spec"]["template"]["metadata"]["labels"]["team"], "x");
        assert_eq!(service["metadata"]["annotations"]["lb"], "nlb");
        assert_eq!(service["spec"]["ports"][0]["port"], 9000);
    }
    #[test]
    fn a_pod_template_is_laid_over_the_statefulset_s_and_cannot_name_an_account() {
        let server: EmbeddingServer = serde_json::from_value(json!({"metadata": {"name": "e", "namespace": "a", "uid": "u"},
            "spec": {"podTemplateSpec": {"metadata": {"labels": {"app.kubernetes.io/instance": "x", "team": "t"}},
                "spec": {"serviceAccountName": "admin", "nodeSelector": {"gpu": "true"},
                    "containers": [{"name": "embedding", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}))
        .unwrap();
        let children = desired_children(&server, &[]).unwrap();
        let set = children.iter().find_map(|c| if let Child::StatefulSet(s) = c { Some(s.clone()) } else { None }).unwrap();
        let template = set.spec.unwrap().template;
        let pod = template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["gpu"], "true");
        assert_eq!(pod.service_account_name, None, "the namespace's default account, never one named here");
        let container = &pod.containers[0];
        assert!(container.image.is_some() && container.resources.as_ref().unwrap().limits.as_ref().unwrap().contains_key("nvidia.com/gpu"));
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["team"], "t");
        assert_ne!(labels["app.kubernetes.io/instance"], "x", "the selector's labels stay");
    }
}
