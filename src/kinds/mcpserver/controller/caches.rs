//! What the controllers read: one store per kind for the whole install, fed by one
//! watch per scope (the cluster, or each allowed namespace), each started once
//! something in its scope needs it and then kept for the life of the process;
//! shared by every controller and the webhook's quota. A namespace's relist
//! replaces its own objects only (`runtime::cache`).

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod, PodStatus, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    api::{ObjectMeta, PartialObjectMeta},
    runtime::{reflector::ObjectRef, watcher},
};

use crate::kinds::authz::MCPAuthzConfig;
use crate::kinds::externalauth::MCPExternalAuthConfig;
use crate::kinds::group::MCPGroup;
use crate::kinds::mcpserver::api::{MCPServer, RESTARTED_AT_ANNOTATION};
use crate::kinds::mcpserver::references::Referenced;
use crate::kinds::mcpserver::resources::{self, Child, MANAGED_SELECTOR, SPEC_HASH_ANNOTATION};
use crate::kinds::oidc::MCPOIDCConfig;
use crate::kinds::serverentry::MCPServerEntry;
use crate::kinds::telemetry::MCPTelemetryConfig;
use crate::kinds::toolconfig::MCPToolConfig;
use crate::kinds::webhookconfig::MCPWebhookConfig;
use crate::runtime::cache::{BUSY, Cache, Cached, RARE, Scopes};
use crate::runtime::metrics::Metrics;
use crate::runtime::ondemand::OnDemand;
use crate::shared::meta::slim_metadata;

/// The configuration kinds MCPServers name. A kind is watched in a namespace once
/// something there names an object of that kind (`ConfigCaches::named_by`,
/// `Cache::watched_in`): most namespaces name few of the six kinds, and an unwatched
/// kind costs a namespace nothing. A configuration object gets its status once its
/// kind is watched in its namespace.
#[derive(Clone)]
pub struct ConfigCaches {
    pub tool: Cache<MCPToolConfig>,
    pub telemetry: Cache<MCPTelemetryConfig>,
    pub oidc: Cache<MCPOIDCConfig>,
    pub authz: Cache<MCPAuthzConfig>,
    pub webhook: Cache<MCPWebhookConfig>,
    pub external_auth: Cache<MCPExternalAuthConfig>,
}

impl ConfigCaches {
    /// The six kinds' caches, watched nowhere yet.
    fn new(scopes: &Arc<Scopes>, metrics: &Metrics) -> Self {
        let all = watcher::Config::default;
        Self {
            tool: slimmed(scopes, all(), &[], metrics, RARE),
            telemetry: slimmed(scopes, all(), &[], metrics, RARE),
            oidc: slimmed(scopes, all(), &[], metrics, RARE),
            authz: slimmed(scopes, all(), &[], metrics, RARE),
            webhook: slimmed(scopes, all(), &[], metrics, RARE),
            external_auth: slimmed(scopes, all(), &[], metrics, RARE),
        }
    }

    /// Starts watching, in its namespace, the kinds `server` (or a remote proxy, as a
    /// server) names, if they were not; resolves once they have listed there.
    pub async fn named_by(&self, server: &MCPServer) {
        async fn named<K: Referenced>(cache: &Cache<K>, server: &MCPServer) {
            if K::referenced_by(server).is_some() || K::also_referenced_by(server).is_some() {
                cache.watched_in(server.metadata.namespace.as_deref().unwrap_or_default()).await;
            }
        }
        futures::join!(
            named(&self.tool, server),
            named(&self.telemetry, server),
            named(&self.oidc, server),
            named(&self.authz, server),
            named(&self.webhook, server),
            named(&self.external_auth, server),
        );
    }
}

/// The caches of the install. The kinds users write are watched in every scope from
/// the start; what the operator makes for servers (`ChildCaches`) is watched in a
/// namespace once a server there is reconciled, so an idle namespace costs the
/// former alone.
pub struct Caches {
    pub scopes: Arc<Scopes>,
    pub servers: Cache<MCPServer>,
    pub groups: Cache<MCPGroup>,
    /// Remote servers registered into groups (no proxy here): their status, and the
    /// groups' lists of them.
    pub entries: Cache<MCPServerEntry>,
    /// Remote servers proxied here: each gets a proxy as an MCPServer does.
    pub proxies: Cache<crate::kinds::mcpserver::remote::MCPRemoteProxy>,
    pub configs: ConfigCaches,
    /// The ConfigMaps servers name for their proxies (policies, permission
    /// profiles), metadata only (their existence and version is all the operator
    /// learns of them): watched only in the namespaces where a server names one.
    pub named_configmaps: Arc<OnDemand<PartialObjectMeta<ConfigMap>>>,
    /// What the operator makes for servers, VirtualMCPServers and EmbeddingServers.
    pub children: Arc<ChildCaches>,
}

/// The caches of what the operator makes, each labelled `toolhive=true`, metadata
/// only, watched in a namespace once something there is reconciled
/// (`ChildCaches::watched_in`).
pub struct ChildCaches {
    /// The proxies' RunConfigs.
    pub configmaps: Cache<PartialObjectMeta<ConfigMap>>,
    pub service_accounts: Cache<PartialObjectMeta<ServiceAccount>>,
    pub roles: Cache<PartialObjectMeta<Role>>,
    pub role_bindings: Cache<PartialObjectMeta<RoleBinding>>,
    pub services: Cache<PartialObjectMeta<Service>>,
    /// The proxy Deployments without their spec: ready replicas and rollout conditions.
    pub deployments: Cache<Deployment>,
    /// The pods of the proxies and MCP servers, only their containers' waiting
    /// states: a container that cannot start fails the server.
    pub pods: Cache<Pod>,
    /// The StatefulSets the proxy runners make for their MCP servers (metadata):
    /// adopted, and healed when one goes missing (`workload`); and EmbeddingServers'.
    pub statefulsets: Cache<PartialObjectMeta<k8s_openapi::api::apps::v1::StatefulSet>>,
}

/// A namespaced kind cached without managedFields and annotations but `keep`, its
/// watches not started yet (`Cache::started`, `Cache::watch_in`).
pub fn slimmed<K: Cached>(
    scopes: &Arc<Scopes>,
    config: watcher::Config,
    keep: &'static [&'static str],
    metrics: &Metrics,
    buffer: usize,
) -> Cache<K> {
    Cache::new(scopes, config, move |o: &mut K| slim_metadata(o.meta_mut(), keep), &K::plural(&()), metrics, buffer)
}

/// A child the operator owns, cached as what deciding whether to apply it reads:
/// its hash annotation, version and owner references. Its labels go too (a
/// thousand servers' children carry some 7,000 label maps; what is found by label,
/// pods and StatefulSets, keeps them).
fn owned_child<K: Cached>(scopes: &Arc<Scopes>, metrics: &Metrics) -> Cache<K> {
    Cache::new(scopes, managed(), |o: &mut K| slim_owned(o.meta_mut()), &K::plural(&()), metrics, BUSY)
}

fn slim_owned(meta: &mut ObjectMeta) {
    slim_metadata(meta, HASH);
    meta.labels = None;
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(MANAGED_SELECTOR)
}

const HASH: &[&str] = &[SPEC_HASH_ANNOTATION];

impl Caches {
    /// The install's caches, the kinds users write watched in every scope at once.
    pub fn start(scopes: Arc<Scopes>, metrics: &Metrics) -> Arc<Self> {
        let all = watcher::Config::default;
        let s = &scopes;
        Arc::new(Self {
            servers: slimmed(s, all(), &[RESTARTED_AT_ANNOTATION], metrics, BUSY).started(),
            groups: slimmed(s, all(), &[], metrics, RARE).started(),
            entries: slimmed(s, all(), &[], metrics, RARE).started(),
            proxies: slimmed(s, all(), &[], metrics, RARE).started(),
            configs: ConfigCaches::new(s, metrics),
            named_configmaps: Arc::new(OnDemand::new(s.clone(), all(), |c| slim_metadata(&mut c.metadata, &[]), metrics)),
            children: Arc::new(ChildCaches::new(s, metrics)),
            scopes,
        })
    }

    /// Resolves once every kind users write has listed in every scope.
    pub async fn ready(&self) {
        futures::join!(self.servers.ready(), self.groups.ready(), self.entries.ready(), self.proxies.ready());
    }

    /// Caches holding `servers` and `groups` as listed watches would, every other
    /// kind empty (tests of controllers that read them; no watch).
    #[cfg(test)]
    pub fn listed(client: &kube::Client, servers: Vec<MCPServer>, groups: Vec<MCPGroup>) -> Self {
        Self {
            scopes: Scopes::none(),
            servers: Cache::listed(servers),
            groups: Cache::listed(groups),
            entries: Cache::listed(vec![]),
            proxies: Cache::listed(vec![]),
            configs: ConfigCaches {
                tool: Cache::listed(vec![]),
                telemetry: Cache::listed(vec![]),
                oidc: Cache::listed(vec![]),
                authz: Cache::listed(vec![]),
                webhook: Cache::listed(vec![]),
                external_auth: Cache::listed(vec![]),
            },
            named_configmaps: Arc::new(OnDemand::new(
                Scopes::new(vec![None], crate::runtime::watch_client::WatchConnections::single(client.clone())),
                watcher::Config::default(),
                |_| {},
                &Metrics::default(),
            )),
            children: Arc::new(ChildCaches::listed(&[])),
        }
    }

    /// How many watches each scope keeps open, idle (reported in the log): servers,
    /// groups, entries, remote proxies, and the VirtualMCPServers and EmbeddingServers
    /// the binary watches beside them. The
    /// configuration kinds (once something names one: `ConfigCaches::named_by`), the
    /// children and the ConfigMaps servers name are watched in a namespace once it
    /// holds work that needs them.
    pub const WATCHES: usize = 6;
}

impl ChildCaches {
    /// The child caches, watched nowhere yet.
    fn new(scopes: &Arc<Scopes>, metrics: &Metrics) -> Self {
        Self {
            configmaps: owned_child(scopes, metrics),
            service_accounts: owned_child(scopes, metrics),
            roles: owned_child(scopes, metrics),
            role_bindings: owned_child(scopes, metrics),
            services: owned_child(scopes, metrics),
            deployments: Cache::new(
                scopes,
                managed(),
                |d: &mut Deployment| {
                    d.spec = None;
                    slim_owned(&mut d.metadata);
                },
                "deployments",
                metrics,
                BUSY,
            ),
            pods: Cache::new(scopes, managed(), slim_pod, "pods", metrics, BUSY),
            statefulsets: slimmed(scopes, managed(), HASH, metrics, BUSY),
        }
    }

    /// Starts the child watches of `ns`'s scope, if not started, and resolves once
    /// they have listed (or `FIRST_LIST_WAIT` has passed): what a reconcile in `ns`
    /// reads before deciding what to write.
    pub async fn watched_in(&self, ns: &str) {
        futures::join!(
            self.configmaps.watched_in(ns),
            self.service_accounts.watched_in(ns),
            self.roles.watched_in(ns),
            self.role_bindings.watched_in(ns),
            self.services.watched_in(ns),
            self.deployments.watched_in(ns),
            self.pods.watched_in(ns),
            self.statefulsets.watched_in(ns),
        );
    }

    /// The child caches holding `objects` (JSON, any of the child kinds) as listed
    /// watches would (tests of controllers that read them; no watch).
    #[cfg(test)]
    pub fn listed(objects: &[serde_json::Value]) -> Self {
        fn of<K: serde::de::DeserializeOwned>(objects: &[serde_json::Value], kind: &str) -> Vec<K> {
            objects.iter().filter(|o| o["kind"] == kind).map(|o| serde_json::from_value(o.clone()).unwrap()).collect()
        }
        Self {
            configmaps: Cache::listed(of(objects, "ConfigMap")),
            service_accounts: Cache::listed(of(objects, "ServiceAccount")),
            roles: Cache::listed(of(objects, "Role")),
            role_bindings: Cache::listed(of(objects, "RoleBinding")),
            services: Cache::listed(of(objects, "Service")),
            deployments: Cache::listed(of(objects, "Deployment")),
            pods: Cache::listed(of(objects, "Pod")),
            statefulsets: Cache::listed(of(objects, "StatefulSet")),
        }
    }

    /// The cached metadata of the object `child` describes, if the operator sees one.
    pub fn child_meta(&self, child: &Child, ns: &str) -> Option<ObjectMeta> {
        fn get<K: Cached>(c: &Cache<K>, ns: &str, name: &str) -> Option<ObjectMeta> {
            c.store().get(&ObjectRef::new(name).within(ns)).map(|o| o.meta().clone())
        }
        let name = child.name();
        match child {
            Child::ConfigMap(_) => get(&self.configmaps, ns, name),
            Child::ServiceAccount(_) => get(&self.service_accounts, ns, name),
            Child::Role(_) => get(&self.roles, ns, name),
            Child::RoleBinding(_) => get(&self.role_bindings, ns, name),
            Child::Deployment(_) => get(&self.deployments, ns, name),
            Child::Service(_) => get(&self.services, ns, name),
            Child::StatefulSet(_) => get(&self.statefulsets, ns, name),
        }
    }

    /// The cached pods of the MCPServer `name` in `ns` (its proxy's and its MCP server's).
    pub fn server_pods(&self, ns: &str, name: &str) -> Vec<Pod> {
        let of_server = |p: &&Arc<Pod>| {
            p.metadata.namespace.as_deref() == Some(ns)
                && p.metadata.labels.as_ref().and_then(|l| l.get(resources::NAME_LABEL)).map(String::as_str) == Some(name)
        };
        self.pods.store().state().iter().filter(of_server).map(|p| p.as_ref().clone()).collect()
    }

    /// How many watches the children of a scope's servers keep open.
    pub const WATCHES: usize = 8;
}

/// A pod as the controller reads it: name, namespace and labels, and the waiting
/// state of each container. The rest of a pod (spec, conditions, IPs) is dropped.
fn slim_pod(pod: &mut Pod) {
    pod.spec = None;
    slim_metadata(&mut pod.metadata, &[]);
    pod.metadata.owner_references = None;
    pod.status = pod.status.take().map(|s| {
        let waiting_only = |statuses: Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            statuses.map(|list| {
                list.into_iter()
                    .map(|c| k8s_openapi::api::core::v1::ContainerStatus {
                        name: c.name,
                        state: c.state.map(|st| k8s_openapi::api::core::v1::ContainerState { waiting: st.waiting, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect()
            })
        };
        PodStatus {
            container_statuses: waiting_only(s.container_statuses),
            init_container_statuses: waiting_only(s.init_container_statuses),
            ..Default::default()
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_child_keeps_what_deciding_to_apply_it_reads() {
        let mut meta: ObjectMeta = serde_json::from_value(json!({"name": "s", "namespace": "a", "uid": "u", "resourceVersion": "7",
            "generation": 2, "labels": {"toolhive": "true", "toolhive-name": "s", "app.kubernetes.io/instance": "s"},
            "annotations": {SPEC_HASH_ANNOTATION: "abc", "other": "x"}, "managedFields": [{"manager": "m"}],
            "ownerReferences": [{"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "name": "s", "uid": "o", "controller": true}]}))
        .unwrap();
        slim_owned(&mut meta);
        assert!(meta.labels.is_none() && meta.managed_fields.is_none());
        assert_eq!(resources::applied_hash(&meta), Some("abc"));
        assert_eq!(meta.annotations.as_ref().unwrap().len(), 1);
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "o");
        assert_eq!((meta.resource_version.as_deref(), meta.generation), (Some("7"), Some(2)));
    }

    #[tokio::test]
    async fn a_configuration_kind_is_watched_once_something_names_one() {
        let (client, calls) = crate::runtime::mock::mock_api(json!({}));
        let scopes =
            Scopes::new(vec![Some("team".into()), Some("other".into())], crate::runtime::watch_client::WatchConnections::single(client));
        let configs = ConfigCaches::new(&scopes, &Metrics::default());
        // The kinds asked for, by plural (a watch lists, then watches: twice each).
        let lists = || -> std::collections::BTreeSet<String> {
            let calls = calls.lock().unwrap();
            calls.iter().map(|(_, path, _)| path.split('?').next().unwrap().rsplit('/').next().unwrap().into()).collect()
        };
        let plain: MCPServer =
            serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "team"}, "spec": {"image": "i"}})).unwrap();
        configs.named_by(&plain).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(lists().is_empty(), "a server naming nothing watches nothing: {:?}", lists());

        let naming: MCPServer = serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "team"}, "spec": {"image": "i",
            "toolConfigRef": {"name": "tools"}, "authServerRef": {"kind": "MCPExternalAuthConfig", "name": "login"}}}))
        .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), configs.named_by(&naming)).await.expect("both kinds list");
        assert_eq!(lists(), ["mcpexternalauthconfigs", "mcptoolconfigs"].map(String::from).into(), "only the kinds it names");
        assert!(calls.lock().unwrap().iter().all(|(_, path, _)| path.starts_with("/apis/toolhive.stacklok.dev/v1beta1/namespaces/team/")));
    }

    #[test]
    fn a_cached_pod_keeps_only_what_says_a_container_cannot_start() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "a", "labels": {"toolhive-name": "s"}, "annotations": {"x": "y"},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "mcp", "image": "i"}]},
            "status": {"phase": "Pending", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [{"name": "mcp", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                                              "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                                              "lastState": {"terminated": {"exitCode": 1}}}]}
        }))
        .unwrap();
        slim_pod(&mut pod);
        assert!(pod.spec.is_none() && pod.metadata.annotations.as_ref().unwrap().is_empty() && pod.metadata.managed_fields.is_none());
        let status = pod.status.unwrap();
        assert!(status.phase.is_none() && status.conditions.is_none() && status.pod_ip.is_none());
        let c = &status.container_statuses.unwrap()[0];
        assert_eq!(c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(c.last_state.is_none());
        let failure = crate::kinds::mcpserver::status::container_failure(&[Pod {
            status: Some(PodStatus { container_statuses: Some(vec![c.clone()]), ..Default::default() }),
            metadata: pod.metadata,
            spec: None,
        }]);
        assert_eq!(failure.as_deref(), Some("pod p container mcp: CrashLoopBackOff: back-off"));
    }
}
