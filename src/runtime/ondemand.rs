//! Watches of one kind started only in the namespaces where some work needs them,
//! and stopped when none does: what they cost is bounded by that work, not by the
//! namespaces the operator may serve. (ConfigMaps that servers name for their
//! proxies: most namespaces name none, and ConfigMaps are many.)

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::Stream;
use kube::{
    Api, Client, Resource,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tracing::info;

use super::cache::{changes_from, watch_into};
use super::metrics::Metrics;

/// One namespace's watch: its store, the task feeding it, and whether it has listed.
type Watched<K> = (Store<K>, tokio::task::AbortHandle, tokio::sync::watch::Receiver<bool>);

/// One kind, watched per namespace on demand.
pub struct OnDemand<K: Resource<DynamicType = ()> + Clone + 'static> {
    client: Client,
    config: watcher::Config,
    slim: fn(&mut K),
    metrics: Metrics,
    /// The namespaces watched now: each one's store, the task feeding it, and
    /// whether it has listed.
    watches: Mutex<HashMap<String, Watched<K>>>,
    /// What every namespace's watch touches.
    changes: broadcast::Sender<Arc<K>>,
}

impl<K> OnDemand<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub fn new(client: Client, config: watcher::Config, slim: fn(&mut K), metrics: &Metrics) -> Self {
        let (changes, _) = broadcast::channel(super::cache::RARE);
        Self { client, config, slim, metrics: metrics.clone(), watches: Mutex::default(), changes }
    }

    /// `ns`'s store, its watch started if it was not; resolves once it has listed.
    pub async fn ensure(&self, ns: &str) -> Store<K> {
        let (store, mut has_listed) = {
            let mut watches = self.watches.lock();
            let (store, _, has_listed) = watches.entry(ns.to_string()).or_insert_with(|| {
                info!(kind = %K::plural(&()), namespace = %ns, "watching: a server here names one");
                let api: Api<K> = Api::namespaced(self.client.clone(), ns);
                let (store, task, has_listed) =
                    watch_into(api, self.config.clone(), self.slim, &K::plural(&()), &self.metrics, self.changes.clone());
                (store, task.abort_handle(), has_listed)
            });
            (store.clone(), has_listed.clone())
        };
        // An error: the watch was stopped meanwhile (its store stays empty).
        let _ = has_listed.wait_for(|listed| *listed).await;
        store
    }

    /// Stops watching `ns` (nothing there needs it any more).
    pub fn stop(&self, ns: &str) {
        if let Some((_, task, _)) = self.watches.lock().remove(ns) {
            task.abort();
            info!(kind = %K::plural(&()), namespace = %ns, "no longer watching: no server here names one");
        }
    }

    pub fn watched(&self, ns: &str) -> bool {
        self.watches.lock().contains_key(ns)
    }

    /// The object, if `ns` is watched and holds it.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let store = self.watches.lock().get(ns)?.0.clone();
        store.get(&ObjectRef::new(name).within(ns))
    }

    /// Every object any of the watches touches from now on.
    pub fn changes(self: &Arc<Self>) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let me = Arc::downgrade(self);
        changes_from(self.changes.subscribe(), move || {
            let Some(me) = me.upgrade() else { return Vec::new() };
            let stores: Vec<Store<K>> = me.watches.lock().values().map(|(s, _, _)| s.clone()).collect();
            stores.iter().flat_map(Store::state).collect()
        })
    }
}
