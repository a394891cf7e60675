//! How many MCPServers each namespace holds, for the `maxMCPServers` quota: kept
//! from metadata watches, so an admission never calls the API server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use parking_lot::RwLock;

use crate::api::MCPServer;
use crate::config::Scope;
use crate::metrics::Metrics;

/// MCPServer names per namespace as one watch sees them. A relist rebuilds only this
/// watch's view (one view per watched namespace in namespace mode, never shared, so
/// one namespace's relist cannot wipe another's).
#[derive(Debug, Default)]
pub struct NamespaceCounts {
    live: HashMap<String, HashSet<String>>,
    relisting: Option<HashMap<String, HashSet<String>>>,
    synced: bool,
}

impl NamespaceCounts {
    /// Folds one watch event in.
    pub fn apply(&mut self, event: watcher::Event<PartialObjectMeta<MCPServer>>) {
        let key = |o: &PartialObjectMeta<MCPServer>| {
            (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
        };
        match event {
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(&o);
                self.relisting.get_or_insert_with(HashMap::new).entry(ns).or_default().insert(name);
            }
            watcher::Event::InitDone => {
                self.live = self.relisting.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply(o) => {
                let (ns, name) = key(&o);
                self.live.entry(ns).or_default().insert(name);
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(&o);
                if let Some(names) = self.live.get_mut(&ns) {
                    names.remove(&name);
                    if names.is_empty() {
                        self.live.remove(&ns);
                    }
                }
            }
        }
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.live.get(namespace).map_or(0, HashSet::len)
    }

    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// How many MCPServers each namespace holds, from metadata watches (one per scope
/// namespace), answered in O(1) without an API call.
pub struct ServerCache {
    views: Vec<Arc<RwLock<NamespaceCounts>>>,
}

impl ServerCache {
    /// Starts the watches; they run for the life of the process.
    pub fn start(client: &Client, scope: &Scope, metrics: &Metrics) -> Arc<Self> {
        let apis: Vec<Api<PartialObjectMeta<MCPServer>>> = match scope {
            Scope::Cluster => vec![Api::all(client.clone())],
            Scope::Namespaces(list) => list.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        };
        let views = apis
            .into_iter()
            .map(|api| {
                let view = Arc::new(RwLock::new(NamespaceCounts::default()));
                let writer = view.clone();
                let restarts = metrics.watch_restarts.with_label_values(&["mcpservers-webhook"]);
                tokio::spawn(async move {
                    watcher(api, watcher::Config::default())
                        .default_backoff()
                        .for_each(|event| {
                            match event {
                                Ok(e) => writer.write().apply(e),
                                Err(_) => restarts.inc(),
                            }
                            futures::future::ready(())
                        })
                        .await
                });
                view
            })
            .collect();
        Arc::new(Self { views })
    }

    pub async fn wait_synced(&self) {
        while !self.views.iter().all(|v| v.read().synced()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.views.iter().map(|v| v.read().count(namespace)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(ns: &str, name: &str) -> PartialObjectMeta<MCPServer> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap()
    }

    #[test]
    fn counts_follow_the_watch_and_a_relist_replaces_the_view() {
        let mut c = NamespaceCounts::default();
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(server("a", "one")));
        assert!(!c.synced(), "not synced before the list is complete");
        c.apply(watcher::Event::InitDone);
        assert!(c.synced());
        c.apply(watcher::Event::Apply(server("a", "two")));
        c.apply(watcher::Event::Apply(server("a", "two")));
        c.apply(watcher::Event::Apply(server("b", "one")));
        assert_eq!((c.count("a"), c.count("b"), c.count("c")), (2, 1, 0), "an update is not a second server");
        c.apply(watcher::Event::Delete(server("a", "one")));
        assert_eq!(c.count("a"), 1);
        // A relist after a dropped watch: the old view serves until the new one is complete.
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(server("b", "one")));
        assert_eq!(c.count("a"), 1, "still the old view mid-relist");
        c.apply(watcher::Event::InitDone);
        assert_eq!((c.count("a"), c.count("b")), (0, 1), "what vanished while disconnected is gone");
    }
}
