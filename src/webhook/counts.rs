//! How many MCPServers each namespace holds, for the `maxMCPServers` quota: read
//! from the operator's MCPServer caches (the same watch the controllers use), so an
//! admission never calls the API server, plus the creates this replica admitted and
//! the watch has not shown yet, so parallel creates cannot all take the same free place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

use crate::kinds::mcpserver::api::MCPServer;
use crate::runtime::cache::Cache;

/// A most on the MCPServers some namespaces hold together: one namespace's
/// `maxMCPServers`, or a tenant's across all its namespaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceiling {
    pub namespaces: Vec<String>,
    pub max: usize,
}

/// The quotas as the rules see them.
pub trait Quota: Send + Sync {
    /// How many MCPServers `namespace` holds, admitted ones not yet seen included.
    fn held(&self, namespace: &str) -> usize;
    /// The first of `ceilings` with no free place, and what its namespaces hold.
    fn check(&self, ceilings: &[Ceiling]) -> Result<(), (usize, usize)> {
        first_full(ceilings, |ns| self.held(ns))
    }
    /// As [`Quota::check`], and when every ceiling has room, takes a place for `name`
    /// in `namespace` under all of them at once.
    fn reserve(&self, ceilings: &[Ceiling], _namespace: &str, _name: &str) -> Result<(), (usize, usize)> {
        self.check(ceilings)
    }
}

fn first_full(ceilings: &[Ceiling], mut held: impl FnMut(&str) -> usize) -> Result<(), (usize, usize)> {
    for (i, ceiling) in ceilings.iter().enumerate() {
        let n: usize = ceiling.namespaces.iter().map(|ns| held(ns)).sum();
        if n >= ceiling.max {
            return Err((i, n));
        }
    }
    Ok(())
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

/// MCPServers per namespace from the MCPServer cache.
pub struct ServerCache {
    servers: Cache<MCPServer>,
    /// (namespace, name) of creates admitted and not yet seen, with when.
    pending: Mutex<HashMap<(String, String), Instant>>,
}

impl ServerCache {
    /// Reads `servers`; a server its watches show ends its reservation then, not at
    /// the next admission, by which time a short-lived server may be gone and its
    /// place would stay taken.
    pub fn over(servers: Cache<MCPServer>) -> Arc<Self> {
        let changes = servers.changes();
        let cache = Arc::new(Self { pending: Mutex::default(), servers });
        let seen = Arc::downgrade(&cache);
        tokio::spawn(async move {
            futures::pin_mut!(changes);
            while let Some(server) = changes.next().await {
                let Some(cache) = seen.upgrade() else { return };
                cache.pending.lock().remove(&(server.namespace().unwrap_or_default(), server.name_any()));
            }
        });
        cache
    }

    pub async fn wait_synced(&self) {
        self.servers.ready().await;
    }

    pub fn count(&self, namespace: &str) -> usize {
        self.servers.store().state().iter().filter(|s| s.metadata.namespace.as_deref() == Some(namespace)).count()
    }

    fn seen(&self, namespace: &str, name: &str) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        self.servers.store().get(&key).is_some()
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

    fn reserve(&self, ceilings: &[Ceiling], namespace: &str, name: &str) -> Result<(), (usize, usize)> {
        // One lock around the check and the reservation: parallel admissions take
        // turns, also across a tenant's namespaces.
        let mut pending = self.pending.lock();
        first_full(ceilings, |ns| self.held_with(&mut pending, ns))?;
        pending.insert((namespace.to_string(), name.to_string()), Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    fn ceiling(namespaces: &[&str], max: usize) -> Ceiling {
        Ceiling { namespaces: namespaces.iter().map(|n| n.to_string()).collect(), max }
    }

    #[tokio::test]
    async fn a_tenant_ceiling_holds_across_its_namespaces_under_parallel_creates() {
        let cache = ServerCache::over(Cache::listed([server("pay-1", "old")]));
        let tenant = ceiling(&["pay-1", "pay-2"], 4);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let (cache, tenant) = (cache.clone(), tenant.clone());
                    let ns = if i % 2 == 0 { "pay-1" } else { "pay-2" };
                    s.spawn(move || cache.reserve(&[ceiling(&[ns], 10), tenant], ns, &format!("s{i}")).is_ok())
                })
                .collect();
            handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
        });
        assert_eq!(admitted, 3, "one existing server and three new ones make the tenant's four");
        assert_eq!(cache.check(&[tenant]), Err((0, 4)));
    }

    fn server(ns: &str, name: &str) -> MCPServer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": ns}, "spec": {"image": "i"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn parallel_creates_cannot_take_the_same_free_place() {
        let (servers, mut writer) = Cache::by_hand();
        writer.apply_watcher_event(&watcher::Event::Apply(server("a", "old")));
        let cache = ServerCache::over(servers);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    s.spawn({
                        let cache = cache.clone();
                        move || cache.reserve(&[ceiling(&["a"], 5)], "a", &format!("s{i}")).is_ok()
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
        writer.apply_watcher_event(&watcher::Event::Apply(server("a", &first_admitted)));
        assert_eq!(cache.held("a"), 5);
        // A server created and deleted before the next admission gives its place back:
        // its reservation ends when the watch shows it.
        let short_lived = cache.pending.lock().keys().find(|(_, n)| *n != first_admitted).unwrap().1.clone();
        cache.pending.lock().remove(&("a".to_string(), short_lived.clone()));
        assert_eq!(cache.held("a"), 4);
        // A place taken by a create that never arrived is given back after a while.
        cache.pending.lock().values_mut().for_each(|at| *at = at.checked_sub(RESERVATION_TTL).unwrap_or(*at));
        assert_eq!(cache.held("a"), 2);
        assert!(cache.reserve(&[ceiling(&["a"], 5)], "a", "next").is_ok());
    }

    #[tokio::test]
    async fn a_server_the_watch_shows_ends_its_reservation() {
        let scope = Cache::listed([]);
        let cache = ServerCache::over(scope.clone());
        cache.reserve(&[ceiling(&["a"], 5)], "a", "brief").unwrap();
        assert_eq!(cache.pending.lock().len(), 1);
        // Shown by the watch (and gone again before any admission): the place is free.
        scope.touched(Arc::new(server("a", "brief")));
        for _ in 0..100 {
            if cache.pending.lock().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cache.held("a"), 0);
    }
}
