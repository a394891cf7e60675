//! What the operator keeps for a VirtualMCPServer, built by pure functions: the vMCP
//! configuration ConfigMap, its ServiceAccount, the Deployment running the vMCP image
//! and its Service. Names, labels, port, probes and default resources are the
//! reference's, so tooling written for ToolHive finds them. Unlike the reference's,
//! the vMCP pod gets no Role and no API token: the operator lists its backends in
//! its file, and is the one writer of its status.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec},
    core::v1::{
        ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, LocalObjectReference, PodSecurityContext,
        PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
        VolumeMount,
    },
};
use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    util::intstr::IntOrString,
};
use kube::Resource;

use crate::kinds::mcpserver::api::SessionAffinity;
use crate::kinds::mcpserver::resources::Child;
use crate::kinds::virtualmcp::api::VirtualMCPServer;

/// The port the vMCP serves MCP, health and readiness on.
pub const VMCP_PORT: i32 = 4483;
pub const CONFIG_KEY: &str = "config.yaml";
pub const CONFIG_MOUNT_PATH: &str = "/etc/vmcp-config";
pub const CONTAINER: &str = "vmcp";
/// The hash of the configuration file on the pod template: a change rolls the pods
/// (the vMCP reads its file once, at start).
pub const CONFIG_HASH_ANNOTATION: &str = "toolhive.stacklok.dev/vmcp-config-hash";
pub const CLIENT_SECRET_ENV: &str = "VMCP_OIDC_CLIENT_SECRET";

/// What the children are built from besides the object: the image, and what the
/// controller resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub image: String,
    /// The configuration file's text.
    pub config: String,
    /// Extra environment (the OIDC client secret, by reference).
    pub env: Vec<EnvVar>,
    /// Extra volumes and mounts (the OIDC CA bundle).
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// `--debug` (operational.logLevel debug: the vMCP sets its logging up before
    /// it reads its file).
    pub debug: bool,
    /// False when the server cannot run (a problem in its spec or references, or a
    /// group with no backend): its Deployment then runs no replica.
    pub runs: bool,
}

pub fn service_name(name: &str) -> String {
    format!("vmcp-{name}")
}

pub fn config_map_name(name: &str) -> String {
    format!("{name}-vmcp-config")
}

pub fn service_account_name(name: &str) -> String {
    format!("{name}-vmcp")
}

/// The endpoint clients use inside the cluster.
pub fn url(name: &str, ns: &str) -> String {
    format!("http://{}.{ns}.svc.cluster.local:{VMCP_PORT}", service_name(name))
}

fn labels(name: &str) -> BTreeMap<String, String> {
    [
        ("app", "virtualmcpserver"),
        ("app.kubernetes.io/name", "virtualmcpserver"),
        ("app.kubernetes.io/instance", name),
        ("toolhive", "true"),
        (crate::kinds::mcpserver::resources::NAME_LABEL, name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every child the server should have, in apply order; None before it is stored (no uid).
pub fn desired_children(vmcp: &VirtualMCPServer, resolved: &Resolved) -> Option<Vec<Child>> {
    let owner = OwnerReference { block_owner_deletion: Some(true), ..vmcp.controller_owner_ref(&())? };
    let name = vmcp.metadata.name.clone()?;
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: vmcp.metadata.namespace.clone(),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let account = vmcp.spec.service_account.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| service_account_name(&name));
    let pull_secrets = (!vmcp.spec.image_pull_secrets.is_empty()).then(|| vmcp.spec.image_pull_secrets.clone());
    let mut out = vec![Child::ConfigMap(ConfigMap {
        metadata: meta(config_map_name(&name)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), resolved.config.clone())])),
        ..Default::default()
    })];
    if vmcp.spec.service_account.as_deref().is_none_or(str::is_empty) {
        out.push(Child::ServiceAccount(ServiceAccount {
            metadata: meta(account.clone()),
            image_pull_secrets: pull_secrets.clone(),
            ..Default::default()
        }));
    }
    out.push(Child::Deployment(deployment(vmcp, &name, account, pull_secrets, resolved, meta(name.clone()))));
    out.push(Child::Service(service(vmcp, &name, meta(service_name(&name)))));
    Some(out.into_iter().map(Child::stamped).collect())
}

fn probe(path: &str, initial_delay: i32, period: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::String("http".into()), ..Default::default() }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn quantities(cpu: &str, memory: &str) -> Option<BTreeMap<String, Quantity>> {
    Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(memory.into()))]))
}

/// The vMCP container's requests and limits (the reference's; not settable yet:
/// podTemplateSpec is refused). The webhook holds them to the namespace's ceiling.
pub fn container_resources() -> ResourceRequirements {
    ResourceRequirements { requests: quantities("100m", "128Mi"), limits: quantities("500m", "512Mi"), ..Default::default() }
}

fn deployment(
    vmcp: &VirtualMCPServer,
    name: &str,
    account: String,
    pull_secrets: Option<Vec<LocalObjectReference>>,
    resolved: &Resolved,
    metadata: ObjectMeta,
) -> Deployment {
    // VMCP_NAMESPACE names the vMCP's sessions; no VMCP_NAME: with both the vMCP
    // writes its own view into the status, which the operator alone writes here.
    let namespace = vmcp.metadata.namespace.clone().unwrap_or_default();
    let plain = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), ..Default::default() };
    // As the reference's: a writable home for anything the vMCP keeps (the image's
    // own /tmp), JSON logs, and the Kubernetes runtime named (as in any pod).
    let mut env = vec![
        plain("HOME", "/tmp".into()),
        plain("XDG_CONFIG_HOME", "/tmp".into()),
        plain("TOOLHIVE_RUNTIME", "kubernetes".into()),
        plain("UNSTRUCTURED_LOGS", "false".into()),
        plain("VMCP_NAMESPACE", namespace),
    ];
    env.extend(resolved.env.iter().cloned());
    let mut volumes = vec![Volume {
        name: "vmcp-config".into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map_name(name), ..Default::default() }),
        ..Default::default()
    }];
    let mut mounts =
        vec![VolumeMount { name: "vmcp-config".into(), mount_path: CONFIG_MOUNT_PATH.into(), read_only: Some(true), ..Default::default() }];
    for (volume, mount) in &resolved.volumes {
        volumes.push(volume.clone());
        mounts.push(mount.clone());
    }
    let mut args = vec![
        "serve".to_string(),
        format!("--config={CONFIG_MOUNT_PATH}/{CONFIG_KEY}"),
        "--host=0.0.0.0".into(),
        format!("--port={VMCP_PORT}"),
    ];
    if resolved.debug {
        args.push("--debug".into());
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(resolved.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: VMCP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        liveness_probe: Some(probe("/health", 30, 10, 5)),
        readiness_probe: Some(probe("/readyz", 15, 5, 3)),
        security_context: Some(crate::kinds::mcpserver::resources::restricted_container()),
        resources: Some(ResourceRequirements {
            requests: quantities("100m", "128Mi"),
            limits: quantities("500m", "512Mi"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), crate::shared::meta::hash_of(&resolved.config))]);
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(name)), annotations: Some(pod_annotations), ..Default::default() }),
        spec: Some(PodSpec {
            service_account_name: Some(account.clone()),
            // The vMCP calls no Kubernetes API: its backends are in its file.
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(30),
            image_pull_secrets: pull_secrets,
            containers: vec![container],
            volumes: Some(volumes),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    // The user's podTemplateSpec over it (held to the namespace's pod policy at
    // admission); the ServiceAccount, its token and the selector's labels stay the
    // operator's.
    if let Some(overlaid) = vmcp.spec.pod_template_spec.as_ref().and_then(|o| crate::shared::podtemplate::overlaid(&template, o)) {
        template = overlaid;
        if let Some(pod) = template.spec.as_mut() {
            pod.service_account_name = Some(account);
            pod.automount_service_account_token = Some(false);
        }
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels.get_or_insert_with(Default::default).extend(labels(name));
    }
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: if resolved.runs { vmcp.spec.replicas } else { Some(0) },
            selector: LabelSelector { match_labels: Some(labels(name)), ..Default::default() },
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(vmcp: &VirtualMCPServer, name: &str, metadata: ObjectMeta) -> Service {
    let affinity = match vmcp.spec.session_affinity {
        SessionAffinity::ClientIP => "ClientIP",
        SessionAffinity::None => "None",
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(vmcp.spec.service_type.as_str().into()),
            selector: Some(labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: VMCP_PORT,
                target_port: Some(IntOrString::Int(VMCP_PORT)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            session_affinity: Some(affinity.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmcp(spec: serde_json::Value) -> VirtualMCPServer {
        serde_json::from_value(json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "VirtualMCPServer",
            "metadata": {"name": "team", "namespace": "a", "uid": "u-1", "generation": 1}, "spec": spec}))
        .unwrap()
    }

    fn resolved(runs: bool) -> Resolved {
        Resolved { image: "vmcp:test".into(), config: "name: team\n".into(), env: vec![], volumes: vec![], debug: false, runs }
    }

    fn spec() -> serde_json::Value {
        json!({"groupRef": {"name": "g"}, "incomingAuth": {"type": "anonymous"}})
    }

    #[test]
    fn the_children_are_named_and_labelled_as_the_reference_s() {
        let children = desired_children(&vmcp(spec()), &resolved(true)).unwrap();
        let names: Vec<(&str, &str)> = children.iter().map(|c| (c.kind(), c.name())).collect();
        assert_eq!(
            names,
            [("ConfigMap", "team-vmcp-config"), ("ServiceAccount", "team-vmcp"), ("Deployment", "team"), ("Service", "vmcp-team")]
        );
        for child in &children {
            let meta = child.meta();
            assert_eq!(meta.labels.as_ref().unwrap()["toolhive-name"], "team");
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "u-1");
            assert!(!child.hash().is_empty());
        }
        let Child::Deployment(dep) = &children[2] else { panic!() };
        let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.args.as_ref().unwrap()[1], "--config=/etc/vmcp-config/config.yaml");
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 4483);
        assert_eq!(pod.service_account_name.as_deref(), Some("team-vmcp"));
        assert_eq!(dep.spec.as_ref().unwrap().replicas, None);
        let Child::Service(svc) = &children[3] else { panic!() };
        assert_eq!(svc.spec.as_ref().unwrap().session_affinity.as_deref(), Some("ClientIP"));
        assert_eq!(url("team", "a"), "http://vmcp-team.a.svc.cluster.local:4483");
    }

    /// v0.66.0's production example: resources, environment and affinity for the vMCP
    /// pod; what the operator decides (account, token, selector labels) stays its own.
    #[test]
    fn a_pod_template_is_laid_over_the_vmcp_pod_and_cannot_take_its_account_or_labels() {
        let mut s = spec();
        s["podTemplateSpec"] = json!({"metadata": {"labels": {"toolhive-name": "other", "team": "a"}},
            "spec": {"serviceAccountName": "admin", "automountServiceAccountToken": true,
                "containers": [{"name": "vmcp", "resources": {"limits": {"memory": "1Gi"}}, "env": [{"name": "VMCP_LOG_LEVEL", "value": "info"}]}],
                "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "preference": {"matchExpressions": [{"key": "workload-type", "operator": "In", "values": ["production"]}]}}]}}}});
        let children = desired_children(&vmcp(s), &resolved(true)).unwrap();
        let Some(Child::Deployment(dep)) = children.iter().find(|c| c.kind() == "Deployment") else { panic!() };
        let template = &dep.spec.as_ref().unwrap().template;
        let pod = template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let limits = container.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!((limits["memory"].0.as_str(), limits["cpu"].0.as_str()), ("1Gi", "500m"));
        let env: Vec<&str> = container.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"VMCP_LOG_LEVEL") && env.contains(&"VMCP_NAMESPACE"), "{env:?}");
        assert!(container.image.is_some() && container.args.is_some(), "what the template leaves alone stays");
        assert!(pod.affinity.is_some());
        assert_eq!((pod.service_account_name.as_deref(), pod.automount_service_account_token), (Some("team-vmcp"), Some(false)));
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!((labels["toolhive-name"].as_str(), labels["team"].as_str()), ("team", "a"));
    }

    #[test]
    fn the_pod_holds_no_api_token_and_the_server_no_role() {
        let children = desired_children(&vmcp(spec()), &resolved(true)).unwrap();
        assert!(!children.iter().any(|c| c.kind() == "Role" || c.kind() == "RoleBinding"));
        let Some(Child::Deployment(dep)) = children.iter().find(|c| c.kind() == "Deployment") else { panic!() };
        let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let env: Vec<&str> = pod.containers[0].env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"VMCP_NAMESPACE") && !env.contains(&"VMCP_NAME"), "no VMCP_NAME: the vMCP does not write the status");
    }

    #[test]
    fn a_server_that_cannot_run_runs_no_replica_and_a_config_change_rolls_the_pods() {
        let v = vmcp(spec());
        let replicas = |r: &Resolved| match &desired_children(&v, r).unwrap()[2] {
            Child::Deployment(d) => {
                (d.spec.as_ref().unwrap().replicas, d.spec.as_ref().unwrap().template.metadata.clone().unwrap().annotations)
            }
            _ => panic!(),
        };
        assert_eq!(replicas(&resolved(false)).0, Some(0));
        let changed = Resolved { config: "name: other\n".into(), ..resolved(true) };
        assert_ne!(replicas(&resolved(true)).1, replicas(&changed).1);
    }

    #[test]
    fn a_named_service_account_is_used_and_none_is_made() {
        let mut s = spec();
        s["serviceAccount"] = json!("own");
        let children = desired_children(&vmcp(s), &resolved(true)).unwrap();
        assert!(!children.iter().any(|c| c.kind() == "ServiceAccount"));
        let Some(Child::Deployment(dep)) = children.iter().find(|c| c.kind() == "Deployment") else { panic!() };
        assert_eq!(dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap().service_account_name.as_deref(), Some("own"));
    }
}
