//! How many MCPServers each namespace holds, for the `maxMCPServers` quota: kept
//! from metadata watches, so an admission never calls the API server, plus the
//! creates this replica admitted and its watch has not shown yet, so parallel creates
//! cannot all take the same free place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use parking_lot::{Mutex, RwLock};

use crate::api::MCPServer;
use crate::config::Scope;
use crate::metrics::Metrics;

/// The `maxMCPServers` quota as the rules see it.
pub trait Quota: Send + Sync {
    /// How many MCPServers `namespace` holds, admitted ones not yet seen included.
    fn held(&self, namespace: &str) -> usize;
    /// Whether `namespace` has a free place under `max`; otherwise how many it holds.
    fn check(&self, namespace: &str, max: usize) -> Result<(), usize> {
        under(self.held(namespace), max)
    }
    /// Takes a place for `name` in `namespace` if it has one (see [`Quota::check`]).
    fn reserve(&self, namespace: &str, _name: &str, max: usize) -> Result<(), usize> {
        self.check(namespace, max)
    }
}

fn under(held: usize, max: usize) -> Result<(), usize> {
    if held >= max { Err(held) } else { Ok(()) }
}

/// A fixed count per namespace (tests, benchmarks).
impl<F: Fn(&str) -> usize + Send + Sync> Quota for F {
    fn held(&self, namespace: &str) -> usize {
        self(namespace)
    }
}

/// How long an admitted create is counted before the watch must have shown it (a
/// create refused later in the API server's chain frees its place after this).
const RESERVATION_TTL: Duration = Duration::from_secs(30);

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

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.live.get(namespace).is_some_and(|names| names.contains(name))
    }

    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// How many MCPServers each namespace holds, from metadata watches (one per scope
/// namespace), answered in O(1) without an API call.
pub struct ServerCache {
    views: Vec<Arc<RwLock<NamespaceCounts>>>,
    /// (namespace, name) of creates admitted and not yet seen, with when.
    pending: Mutex<HashMap<(String, String), Instant>>,
}

impl ServerCache {
    /// Starts the watches; they run for the life of the process.
    pub fn start(client: &Client, scope: &Scope, metrics: &Metrics) -> Arc<Self> {
        let apis: Vec<Api<PartialObjectMeta<MCPServer>>> = match scope {
            Scope::Cluster => vec![Api::all(client.clone())],
            Scope::Namespaces(list) => list.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        };
        let views = apis.iter().map(|_| Arc::new(RwLock::new(NamespaceCounts::default()))).collect();
        let cache = Arc::new(Self { views, pending: Mutex::default() });
        for (index, api) in apis.into_iter().enumerate() {
            let cache = cache.clone();
            let restarts = metrics.watch_restarts.with_label_values(&["mcpservers-webhook"]);
            tokio::spawn(async move {
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .for_each(|event| {
                        match event {
                            Ok(e) => cache.observe(index, e),
                            Err(_) => restarts.inc(),
                        }
                        futures::future::ready(())
                    })
                    .await
            });
        }
        cache
    }

    /// Folds a watch event into view `index`. A server the watch shows is counted from
    /// then on by the view, so its reservation ends here — not at the next admission,
    /// by which time a short-lived server may be gone and its place would stay taken.
    fn observe(&self, index: usize, event: watcher::Event<PartialObjectMeta<MCPServer>>) {
        if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = &event {
            let key = (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default());
            self.pending.lock().remove(&key);
        }
        self.views[index].write().apply(event);
    }

    pub async fn wait_synced(&self) {
        while !self.views.iter().all(|v| v.read().synced()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.views.iter().map(|v| v.read().count(namespace)).sum()
    }

    fn seen(&self, namespace: &str, name: &str) -> bool {
        self.views.iter().any(|v| v.read().contains(namespace, name))
    }

    /// Servers `namespace` holds, counting the pending creates (`pending` is the locked
    /// map), after dropping those seen or expired.
    fn held_with(&self, pending: &mut HashMap<(String, String), Instant>, namespace: &str) -> usize {
        let now = Instant::now();
        pending.retain(|(ns, name), at| now.duration_since(*at) < RESERVATION_TTL && !self.seen(ns, name));
        self.count(namespace) + pending.keys().filter(|(ns, _)| ns == namespace).count()
    }
}

impl Quota for ServerCache {
    fn held(&self, namespace: &str) -> usize {
        self.held_with(&mut self.pending.lock(), namespace)
    }

    fn reserve(&self, namespace: &str, name: &str, max: usize) -> Result<(), usize> {
        // One lock around the check and the reservation: parallel admissions take turns.
        let mut pending = self.pending.lock();
        under(self.held_with(&mut pending, namespace), max)?;
        pending.insert((namespace.to_string(), name.to_string()), Instant::now());
        Ok(())
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
    fn parallel_creates_cannot_take_the_same_free_place() {
        let view = Arc::new(RwLock::new(NamespaceCounts::default()));
        view.write().apply(watcher::Event::Init);
        view.write().apply(watcher::Event::InitApply(server("a", "old")));
        view.write().apply(watcher::Event::InitDone);
        let cache = Arc::new(ServerCache { views: vec![view.clone()], pending: Mutex::default() });
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    s.spawn({
                        let cache = cache.clone();
                        move || cache.reserve("a", &format!("s{i}"), 5).is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
        });
        assert_eq!(admitted, 4, "one existing server and four new ones make five");
        assert_eq!(cache.held("a"), 5);
        assert_eq!(cache.held("b"), 0, "other namespaces are untouched");
        // Once the watch shows an admitted server it is counted once, not twice.
        let first_admitted = cache.pending.lock().keys().next().unwrap().1.clone();
        view.write().apply(watcher::Event::Apply(server("a", &first_admitted)));
        assert_eq!(cache.held("a"), 5);
        // A server created and deleted before the next admission gives its place back.
        let short_lived = cache.pending.lock().keys().find(|(_, n)| *n != first_admitted).unwrap().1.clone();
        cache.observe(0, watcher::Event::Apply(server("a", &short_lived)));
        cache.observe(0, watcher::Event::Delete(server("a", &short_lived)));
        assert_eq!(cache.held("a"), 4);
        // A place taken by a create that never arrived is given back after a while.
        cache.pending.lock().values_mut().for_each(|at| *at = at.checked_sub(RESERVATION_TTL).unwrap_or(*at));
        assert_eq!(cache.held("a"), 2);
        assert!(cache.reserve("a", "next", 5).is_ok());
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
