//! Watches of one kind started only in the namespaces where some work needs them,
//! and stopped when none does: what they cost is bounded by that work, not by the
//! namespaces the operator may serve. (ConfigMaps that servers name for their
//! proxies: most namespaces name none, and ConfigMaps are many.)

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::Stream;
use kube::{
    Resource,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tracing::info;

use super::cache::{Cache, Scopes, changes_from};
use super::metrics::Metrics;

/// One kind, watched per namespace on demand.
pub struct OnDemand<K: Resource<DynamicType = ()> + Clone + 'static> {
    scopes: Arc<Scopes>,
    config: watcher::Config,
    slim: fn(&mut K),
    metrics: Metrics,
    /// The namespaces watched now, each its own cache (dropping it ends its watch).
    watches: Mutex<HashMap<String, Cache<K>>>,
    /// What every namespace's watch touches.
    changes: broadcast::Sender<Arc<K>>,
}

impl<K> OnDemand<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watched where `scopes` serve, through their connections.
    pub fn new(scopes: Arc<Scopes>, config: watcher::Config, slim: fn(&mut K), metrics: &Metrics) -> Self {
        let (changes, _) = broadcast::channel(super::cache::RARE);
        Self { scopes, config, slim, metrics: metrics.clone(), watches: Mutex::default(), changes }
    }

    /// `ns`'s store, its watch started if it was not; resolves once it has listed. A
    /// namespace the install does not serve holds nothing.
    pub async fn ensure(&self, ns: &str) -> Store<K> {
        let cache = self
            .watches
            .lock()
            .entry(ns.to_string())
            .or_insert_with(|| {
                info!(kind = %K::plural(&()), namespace = %ns, "watching: a server here names one");
                Cache::announcing_on(
                    self.changes.clone(),
                    &self.scopes.only(ns),
                    self.config.clone(),
                    self.slim,
                    &K::plural(&()),
                    &self.metrics,
                )
            })
            .clone();
        cache.watched_in(ns).await.clone()
    }

    /// Stops watching `ns` (nothing there needs it any more).
    pub fn stop(&self, ns: &str) {
        if self.watches.lock().remove(ns).is_some() {
            info!(kind = %K::plural(&()), namespace = %ns, "no longer watching: no server here names one");
        }
    }

    pub fn watched(&self, ns: &str) -> bool {
        self.watches.lock().contains_key(ns)
    }

    /// The object, if `ns` is watched and holds it.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let store = self.watches.lock().get(ns)?.store().clone();
        store.get(&ObjectRef::new(name).within(ns))
    }

    /// Every object any of the watches touches from now on.
    pub fn changes(self: &Arc<Self>) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let me = Arc::downgrade(self);
        changes_from(self.changes.subscribe(), move || {
            let Some(me) = me.upgrade() else { return Vec::new() };
            let stores: Vec<Store<K>> = me.watches.lock().values().map(|c| c.store().clone()).collect();
            stores.iter().flat_map(Store::state).collect()
        })
    }
}
