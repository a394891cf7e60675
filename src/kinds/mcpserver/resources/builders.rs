//! The builders of each child object.

use super::runconfig::{profile_key, redis_password_env};
use super::*;

impl Base<'_> {
    /// Name, namespace, labels (+ extra), annotations and owner of a child.
    fn metadata(&self, name: &str, extra_labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> ObjectMeta {
        let mut all_labels = workload_labels(self.server);
        all_labels.extend(extra_labels.clone());
        ObjectMeta {
            name: Some(name.into()),
            namespace: self.server.metadata.namespace.clone(),
            labels: Some(all_labels),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    fn plain_metadata(&self, name: &str) -> ObjectMeta {
        self.metadata(name, &BTreeMap::new(), &BTreeMap::new())
    }

    pub(super) fn runconfig_configmap(&self) -> ConfigMap {
        let text = serde_json::to_string_pretty(&self.runconfig).unwrap_or_default();
        // The reference's RunConfig labels too, for whoever selects by them.
        let extra = BTreeMap::from([
            ("toolhive.stacklok.io/component".to_string(), "run-config".to_string()),
            ("toolhive.stacklok.io/managed-by".to_string(), "toolhive-operator".to_string()),
            (
                if self.server.spec.remote.is_some() { "toolhive.stacklok.io/mcp-remote-proxy" } else { "toolhive.stacklok.io/mcp-server" }
                    .to_string(),
                server_name(self.server).to_string(),
            ),
        ]);
        ConfigMap {
            metadata: self.metadata(&names(self.server).runconfig, &extra, &BTreeMap::new()),
            data: Some(BTreeMap::from([(RUNCONFIG_KEY.to_string(), text)])),
            ..Default::default()
        }
    }

    /// The server's own pull secrets, then the platform's defaults it does not name.
    pub(super) fn image_pull_secrets(&self) -> Option<Vec<LocalObjectReference>> {
        let overrides = self.server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_deployment.as_ref());
        let own = overrides.into_iter().flat_map(|o| o.image_pull_secrets.iter().map(|s| s.name.as_str()));
        let mut names: Vec<&str> = Vec::new();
        for name in own.chain(self.settings.default_image_pull_secrets.iter().map(String::as_str)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        (!names.is_empty()).then(|| names.into_iter().map(|name| LocalObjectReference { name: name.into() }).collect())
    }

    pub(super) fn proxy_service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.plain_metadata(&names(self.server).proxy_runner),
            image_pull_secrets: self.image_pull_secrets(),
            ..Default::default()
        }
    }

    pub(super) fn mcp_service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.plain_metadata(&names(self.server).mcp_service_account),
            image_pull_secrets: self.image_pull_secrets(),
            ..Default::default()
        }
    }

    pub(super) fn proxy_role(&self) -> Role {
        let rules = match self.server.spec.remote {
            Some(_) => remote_proxy_role_rules(),
            None => proxy_role_rules(self.server.spec.transport),
        };
        Role { metadata: self.plain_metadata(&names(self.server).proxy_runner), rules: Some(rules) }
    }

    pub(super) fn proxy_role_binding(&self) -> RoleBinding {
        let name = names(self.server).proxy_runner;
        RoleBinding {
            metadata: self.plain_metadata(&name),
            role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name: name.clone() },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name,
                namespace: self.server.metadata.namespace.clone(),
                ..Default::default()
            }]),
        }
    }

    pub(super) fn proxy_deployment(&self) -> Deployment {
        let server = self.server;
        let names = names(server);
        let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_deployment.as_ref());
        let (dep_labels, dep_annotations) = overrides.map(|d| (d.labels.clone(), d.annotations.clone())).unwrap_or_default();
        let pod_meta = overrides.and_then(|d| d.pod_template_metadata_overrides.clone()).unwrap_or_default();

        let mut pod_annotations = pod_meta.annotations.clone();
        pod_annotations.insert(RUNCONFIG_HASH_ANNOTATION.into(), crate::shared::meta::hash_of(&self.runconfig));
        // The runner learns which MCPServer generation it runs from its own pod (a
        // remote proxy's runner runs no MCPServer).
        if let Some(generation) = server.metadata.generation.filter(|_| server.spec.remote.is_none()) {
            pod_annotations.insert(GENERATION_ANNOTATION.into(), generation.to_string());
        }
        if let Some(versions) = &self.resolved.configmap_versions {
            pod_annotations.insert(crate::kinds::mcpserver::configmaps::VERSIONS_ANNOTATION.into(), versions.clone());
        }
        if let Some(at) = server.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT_ANNOTATION)) {
            pod_annotations.insert(RESTARTED_AT_ANNOTATION.into(), at.clone());
        }
        let mut pod_labels = workload_labels(server);
        pod_labels.extend(pod_meta.labels.clone());

        // A remote proxy's runner reads everything from its RunConfig; the image
        // argument it still wants names nothing.
        let args = match server.spec.remote {
            Some(_) => ["run", "--foreground=true", "placeholder-for-remote-proxy"].map(String::from).to_vec(),
            None => {
                vec!["run".to_string(), format!("--k8s-pod-patch={}", self.runconfig.k8s_pod_template_patch), server.spec.image.clone()]
            }
        };

        // Telemetry's first, where the reference puts them.
        let telemetry = self.resolved.telemetry.as_ref();
        let mut env_vars = telemetry
            .map(|t| {
                crate::kinds::telemetry::proxy_env(
                    &telemetry_service_name(server),
                    server.metadata.namespace.as_deref().unwrap_or_default(),
                    t,
                )
            })
            .unwrap_or_default();
        env_vars.extend([
            env("XDG_CONFIG_HOME", "/tmp"),
            env("HOME", "/tmp"),
            env("TOOLHIVE_RUNTIME", "kubernetes"),
            env("UNSTRUCTURED_LOGS", "false"),
        ]);
        env_vars.extend(self.resolved.oidc.as_ref().and_then(crate::kinds::oidc::proxy_env));
        env_vars.extend(self.resolved.external_auth.as_ref().and_then(crate::kinds::externalauth::proxy_env));
        env_vars.extend(self.resolved.auth_server.iter().flat_map(crate::kinds::externalauth::authserver::proxy_env));
        env_vars.extend(server.spec.remote.is_none().then(|| EnvVar {
            name: "THV_MCPSERVER_GENERATION".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{GENERATION_ANNOTATION}']"),
                    api_version: Some("v1".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }));
        env_vars.extend(self.runconfig.remote_secret_env.iter().cloned());
        env_vars.extend(overrides.into_iter().flat_map(|d| d.env.iter()).map(|e| env(&e.name, &e.value)));
        // After the overrides, and in their place: the password comes from its Secret.
        if let Some(password) = redis_password_env(&server.spec, self.settings) {
            env_vars.retain(|e| e.name != password.name);
            env_vars.push(password);
        }

        let mut volumes = vec![Volume {
            name: "runconfig".into(),
            config_map: Some(ConfigMapVolumeSource { name: names.runconfig.clone(), ..Default::default() }),
            ..Default::default()
        }];
        let mut mounts = vec![VolumeMount {
            name: "runconfig".into(),
            mount_path: RUNCONFIG_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        }];
        if let Some(profile) = &server.spec.permission_profile
            && profile.profile_type == PermissionProfileType::ConfigMap
        {
            let key = profile_key(profile);
            volumes.push(Volume {
                name: "permission-profile".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: profile.name.clone(),
                    items: Some(vec![KeyToPath { key: key.clone(), path: key, ..Default::default() }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "permission-profile".into(),
                mount_path: PROFILE_MOUNT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let oidc_bundle = self.resolved.oidc.as_ref().and_then(crate::kinds::oidc::ca_bundle_volume);
        let webhook_secrets = self.resolved.webhooks.iter().flat_map(crate::kinds::webhookconfig::secret_volumes);
        let policies = crate::kinds::mcpserver::configmaps::policy_configmap(server).map(crate::kinds::authz::policy_volume);
        let auth_server_keys = self.resolved.auth_server.iter().flat_map(crate::kinds::externalauth::authserver::secret_volumes);
        let extra = oidc_bundle
            .into_iter()
            .chain(telemetry.and_then(crate::kinds::telemetry::ca_bundle_volume))
            .chain(webhook_secrets)
            .chain(policies)
            .chain(auth_server_keys);
        for (volume, mount) in extra {
            volumes.push(volume);
            mounts.push(mount);
        }

        // A slow first start (the runner creates the MCP server's StatefulSet and waits
        // for it) gets 90 s from the startup probe before liveness counts.
        let health =
            |initial_delay_seconds: Option<i32>, period_seconds: i32, timeout_seconds: i32, failure_threshold: Option<i32>| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".into()),
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                initial_delay_seconds,
                period_seconds: Some(period_seconds),
                timeout_seconds: Some(timeout_seconds),
                failure_threshold,
                ..Default::default()
            };
        let resources = &server.spec.resources;
        let container = Container {
            name: PROXY_CONTAINER.into(),
            image: Some(self.settings.runner_image.clone()),
            args: Some(args),
            env: Some(env_vars),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: server.proxy_port(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            volume_mounts: Some(mounts),
            startup_probe: Some(health(None, 5, 3, Some(18))),
            // A remote proxy is ready once its remote server answers: given longer.
            readiness_probe: Some(health(Some(if server.spec.remote.is_some() { 15 } else { 5 }), 5, 3, None)),
            liveness_probe: Some(health(Some(30), 10, 5, None)),
            security_context: Some(restricted_container()),
            resources: resources.requirements(),
            ..Default::default()
        };
        let selector = proxy_selector(server);
        Deployment {
            metadata: self.metadata(&names.deployment, &dep_labels, &dep_annotations),
            spec: Some(DeploymentSpec {
                replicas: proxy_replicas(server, self.resolved.unresolved),
                selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..Default::default() }),
                    spec: Some(PodSpec {
                        service_account_name: Some(names.proxy_runner.clone()),
                        containers: vec![container],
                        volumes: Some(volumes),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                            // The authorization server's keys are mounted owner-read-only;
                            // the runner, whatever user its image runs as, reads them as a
                            // member of this group (kubelet gives the group read access).
                            fs_group: self.resolved.auth_server.as_ref().map(|_| crate::kinds::externalauth::authserver::KEYS_GROUP),
                            ..Default::default()
                        }),
                        image_pull_secrets: self.image_pull_secrets(),
                        node_selector: overrides.and_then(|o| non_empty(o.node_selector.clone())),
                        tolerations: overrides.and_then(|o| (!o.tolerations.is_empty()).then(|| o.tolerations.clone())),
                        affinity: overrides.and_then(|o| o.affinity.clone()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn proxy_service(&self) -> Service {
        let server = self.server;
        let overrides = server.spec.resource_overrides.as_ref().and_then(|o| o.proxy_service.clone()).unwrap_or_default();
        let affinity = match server.spec.session_affinity {
            SessionAffinity::ClientIP => "ClientIP",
            SessionAffinity::None => "None",
        };
        let selector = proxy_selector(server);
        Service {
            metadata: self.metadata(&names(server).service, &overrides.labels, &overrides.annotations),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: non_empty(selector),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: server.proxy_port(),
                    target_port: Some(IntOrString::Int(server.proxy_port())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                session_affinity: Some(affinity.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The labels that pick one server's (or remote proxy's) proxy pods: the Deployment's
/// selector and its Service's.
fn proxy_selector(server: &MCPServer) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), app_name(server).to_string()),
        ("app.kubernetes.io/instance".to_string(), server_name(server).to_string()),
    ])
}

/// A container's security context under the restricted Pod Security Standard, read-only
/// root filesystem included: the proxy's and the vMCP's.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}
